//! The worker runtime: connect to the parent, shake hands, run the actor,
//! and shut down cleanly on every path.
//!
//! Paths to the end, and what runs on each:
//! - terminate from the parent, `close()` from the worker, SIGTERM (the
//!   parent's escalation, or PR_SET_PDEATHSIG), SIGXCPU (the soft CPU
//!   limit), the parent's socket closing: `on_close` runs, what it posts is
//!   flushed, exit 0 (152 after SIGXCPU);
//! - the actor stops itself: exit 0;
//! - a panic the actor cannot recover from: the report goes out, exit 101.
//!
//! When the parent is gone, the worker takes its own process group down
//! with it (what it started would otherwise outlive everyone): at the end
//! of the runtime when it got there, or through the watchdog of
//! `bootstrap.rs` when the actor is stuck.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, Notify};

use super::actor::{Requests, WorkerActor};
use super::bootstrap::{self, ORPHAN_GRACE};
use super::handle::Parent;
use super::inbox::{Command, InboxLoop, Posted};
use super::panic::{self as worker_panic, CatchPanics};
use super::refusal;
use crate::error::{ErrorReport, ShapeError, WireError, WorkerError};
use crate::handoff::exit_code;
use crate::handoff::ENV_MAX_MESSAGE;
use crate::held::Holds;
use crate::protocol::Protocol;
use crate::session::declared::table;
use crate::session::sender::{Encoding, Sender};
use crate::session::{self, Common, Finish, Flow, Session, Side, Then, Turn, Why};
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::envelope::{self, Header, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::ws::{self, Socket};

/// Runs the worker to its end and returns the exit code.
pub(crate) fn run<W, F>(make: F) -> i32
where
    W: WorkerActor,
    F: FnOnce(Parent<W::Protocol>) -> W,
{
    let max_message_size = std::env::var(ENV_MAX_MESSAGE)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(crate::handoff::DEFAULT_MAX_MESSAGE)
        .min(codec::DECODE_LIMIT);
    let entry = std::env::var(crate::handoff::ENV_ENTRY).unwrap_or_default();
    let handoff = match bootstrap::take() {
        Ok(handoff) => handoff,
        Err(e) => {
            refusal::not_a_worker(&e);
            return exit_code::NOT_A_WORKER;
        }
    };
    // Every request the protocol declares is answered, or the worker
    // refuses to start, naming those it misses: before anything runs.
    let (ctl_tx, ctl_rx) = unbounded_channel::<Command<W>>();
    let mut requests = Requests::new(ctl_tx.clone());
    W::requests(&mut requests);
    let declared = table::<W::Protocol>().ok();
    let answers = |tag| requests.handlers.answers(tag);
    let unanswered = declared.map(|t| t.unanswered(false, answers)).unwrap_or_default();
    if !unanswered.is_empty() {
        return refusal::unanswered(handoff, entry, unanswered);
    }
    if let Some(parent) = &handoff.parent {
        if let Err(e) = bootstrap::start_watchdog(parent.clone(), &handoff.sock) {
            tracing::warn!(error = %e, "no watchdog for the parent's death");
        }
    }
    let (panic_tx, panic_rx) = unbounded_channel();
    worker_panic::install(panic_tx);
    let system = actix_rt::System::new();
    // A remote parent (TCP) takes no descriptors; its socket is not ours
    // to keep watching either.
    let fds_ok = handoff.parent.is_some();
    let sock = Socket { fd: handoff.sock, tls: handoff.tls.map(Into::into) };
    let span = crate::session::trace::runtime(&entry);
    let inbox = Inbox { ctl: (ctl_tx, ctl_rx), requests, span };
    // Boxed: the runtime's `block_on` is compiled once, not per worker.
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
        Box::pin(serve::<W, F>(sock, fds_ok, max_message_size, make, panic_rx, inbox));
    let (code, end) = system.block_on(serving);
    // Orphaned: nobody will take our process group down, so we do, with
    // whatever this worker started (ourselves last). When the parent's
    // socket closed, the parent may still be on its way out: its pidfd says
    // when it has gone.
    let wait = match end {
        End::ParentGone | End::Signalled => ORPHAN_GRACE,
        _ => Duration::ZERO,
    };
    // (A remote parent is not ours to watch: its connection ended, and so
    // does the worker.)
    let orphaned = handoff.parent.is_some_and(|parent| parent.gone_within(wait));
    if orphaned {
        crate::os::kill_own_group();
    }
    // A SIGTERM that did not come with the parent's death is somebody
    // ending this worker from outside (`scancel`, preemption, `kill`): not
    // a worker that finished, and its parent must not take it for one.
    if end == End::Signalled && !orphaned {
        return exit_code::SIGTERM;
    }
    code
}

/// How long an ending worker waits for its channels' ends to close.
const CHANNELS_GRACE: Duration = Duration::from_secs(2);

/// Why the main loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Terminate from the parent, or broken framing from it.
    Terminated,
    /// `close()` from inside the worker.
    Closed,
    /// The parent may be gone: its socket closed.
    ParentGone,
    /// SIGTERM: the parent's death signal, or someone else's (a cluster
    /// cancelling the job, an operator): its pidfd tells which, at the end.
    Signalled,
    /// SIGXCPU: the soft CPU limit was reached.
    CpuLimit,
    /// The actor stopped by itself.
    ActorStopped,
    /// The actor cannot recover from a panic.
    Fatal,
}

/// The actor's inbox, made (and its requests registered) before the
/// worker connects.
struct Inbox<W: WorkerActor> {
    ctl: (UnboundedSender<Command<W>>, UnboundedReceiver<Command<W>>),
    requests: Requests<W>,
    /// The runtime's span: the parent of the spans of the requests it
    /// answers.
    span: tracing::Span,
}

async fn serve<W, F>(
    sock: Socket,
    fds_ok: bool,
    max_message_size: usize,
    make: F,
    mut panics: UnboundedReceiver<ErrorReport>,
    Inbox { ctl: (ctl_tx, ctl_rx), requests, span }: Inbox<W>,
) -> (i32, End)
where
    W: WorkerActor,
    F: FnOnce(Parent<W::Protocol>) -> W,
{
    let fingerprint = crate::session::shape::fingerprint::<W::Protocol>();
    let opened = match connect(sock, max_message_size, fingerprint).await {
        Ok(opened) => opened,
        Err(ended) => return ended,
    };
    // The worker's outbox is unbounded: its parent reads it.
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let encoding = Encoding { codec: opened.codec, max_message_size, descriptors: fds_ok };
    let sender = Sender::new(outbox, encoding);
    let close = Arc::new(Notify::new());
    let parent = Parent::<W::Protocol>::new(sender.clone(), close.clone(), opened.data);

    let mut ctx = Context::<W>::new();
    // Posts (do_send) and requests (send) must reach the actor in the order
    // they came: with a bounded mailbox, a request could wait for room while
    // later posts overtake it.
    ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
    ctx.spawn(InboxLoop::new(ctl_rx));
    let common = Common {
        sender: sender.clone(),
        handlers: Rc::new(requests.handlers),
        // The worker trusts its parent's buffers.
        max_shared_bytes: usize::MAX,
        span,
    };
    let side = ChildSide { ctl: ctl_tx.clone(), posts: Vec::new(), sender: sender.clone() };
    // The writer keeps no books: there is no next connection to give its
    // messages to.
    let writer = opened.writer.without_books();
    let mut session = Session::start(opened.reader, writer, common, side);
    let guarded = CatchPanics::new(ctx.into_future(make(parent)));
    let ended = Ended { done: guarded.done.clone(), fatal: guarded.fatal.clone(), close };
    crate::session::spawn_boxed(guarded);

    let end = run_until_end(&mut session, &mut panics, &ctl_tx, &ended).await;
    let code = close_actor(end, &ctl_tx, &sender.outbox).await;
    // Its channels' ends, after what `on_close` posted on them: the other
    // ends are told it closed, what it posted goes out first.
    if end != End::Fatal {
        crate::channel::close_all(CHANNELS_GRACE).await;
    }
    sender.pending.fail_all(&WorkerError::Disconnected);
    // Reports of panics that happened on the way out go straight out.
    while let Ok(report) = panics.try_recv() {
        post_report(&sender, &report);
    }
    session.finish(Finish::Drain).await;
    (code, end)
}

/// Opens the connection to the parent and answers its hello with the
/// protocol's `fingerprint`; or the exit code and end when that fails.
/// Not generic: compiled once, whatever the worker.
async fn connect(
    sock: Socket,
    max_message_size: usize,
    fingerprint: Result<u64, ShapeError>,
) -> Result<session::Opened, (i32, End)> {
    let fp = fingerprint.map_err(|e| {
        tracing::error!(error = %e, "the protocol's types cannot be described");
        (exit_code::MISMATCH, End::Terminated)
    })?;
    let conn = ws::open(sock, max_message_size).await.map_err(|e| {
        tracing::error!(error = %e, "could not open the connection to the parent");
        (exit_code::IO, End::Terminated)
    })?;
    session::hello(conn, fp, Turn::AfterPeer, Then::nothing()).await.map_err(|e| match e {
        Some(e) => {
            tracing::error!(error = %e, "handshake with the parent failed");
            (exit_code::MISMATCH, End::Terminated)
        }
        // The parent went away before we were up.
        None => (0, End::ParentGone),
    })
}

/// How the worker learns it is to end, besides its session: the actor's
/// future finished (`fatal`: by a panic it cannot recover from), or the
/// actor called `close()`.
struct Ended {
    done: Arc<Notify>,
    fatal: Arc<std::sync::atomic::AtomicBool>,
    close: Arc<Notify>,
}

/// Serves the parent until something ends the worker; panics are offered
/// to the actor's `on_error` on the way.
async fn run_until_end<W: WorkerActor>(
    session: &mut Session<ChildSide<W>>,
    panics: &mut UnboundedReceiver<ErrorReport>,
    ctl: &UnboundedSender<Command<W>>,
    ended: &Ended,
) -> End {
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sigxcpu = signal(SignalKind::from_raw(libc::SIGXCPU)).ok();
    loop {
        tokio::select! {
            flow = session.step() => match flow {
                Flow::Go => {}
                // The parent closed its end: it is gone.
                Flow::End(Why::PeerClosed) => return End::ParentGone,
                // Terminate, or broken framing (reported to the parent).
                Flow::End(Why::Terminated | Why::Broken) => return End::Terminated,
            },
            Some(report) = panics.recv() => {
                let sender = session.sender().clone();
                offer_error(ctl, sender, report);
            }
            _ = ended.close.notified() => return End::Closed,
            _ = ended.done.notified() => {
                let fatal = ended.fatal.load(Ordering::SeqCst);
                return if fatal { End::Fatal } else { End::ActorStopped };
            }
            // PR_SET_PDEATHSIG also sends SIGTERM: whether the parent is
            // gone is told at the end, by its pidfd.
            _ = recv_signal(&mut sigterm) => return End::Signalled,
            _ = recv_signal(&mut sigxcpu) => return End::CpuLimit,
        }
    }
}

/// Runs the actor's `on_close` where the end calls for it (after a
/// `Closing` to the parent when the worker closed itself); the exit code.
async fn close_actor<W: WorkerActor>(
    end: End,
    ctl: &UnboundedSender<Command<W>>,
    outbox: &Outbox,
) -> i32 {
    match end {
        End::Terminated | End::Closed | End::ParentGone | End::Signalled | End::CpuLimit => {
            if end == End::Closed {
                let _ = outbox.push(envelope::bare(Kind::Closing), Vec::new());
            }
            let (tx, rx) = oneshot::channel();
            let sent = ctl.send(Command::call(move |act: &mut W, ctx: &mut Context<W>| {
                act.on_close(ctx);
                let _ = tx.send(());
            }));
            if sent.is_ok() {
                // Err: the actor is gone (it panicked in on_close, or stopped).
                let _ = rx.await;
            }
            if end == End::CpuLimit {
                exit_code::CPU_LIMIT
            } else {
                0
            }
        }
        End::ActorStopped => 0,
        End::Fatal => exit_code::PANIC,
    }
}

async fn recv_signal(sig: &mut Option<Signal>) {
    match sig {
        Some(sig) => {
            sig.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What the worker does with what its parent sends: posts go to the
/// actor, gathered so that those read together go in one command.
struct ChildSide<W: WorkerActor> {
    ctl: UnboundedSender<Command<W>>,
    /// Posts read but not yet handed to the actor.
    posts: Vec<Posted<W>>,
    /// Where its error reports go.
    sender: Sender,
}

impl<W: WorkerActor> Side for ChildSide<W> {
    type Incoming = <W::Protocol as Protocol>::ToWorker;
    const ONLY_HERE: &'static [Kind] = &[Kind::Terminate, Kind::Ping];

    fn post(&mut self, msg: Posted<W>, _: Holds) {
        self.posts.push(msg);
    }

    fn wire_error(&mut self, e: WireError) {
        post_report(&self.sender, &ErrorReport::new(format!("worker: {e}")));
    }

    fn flush(&mut self) {
        if !self.posts.is_empty() {
            let _ = self.ctl.send(Command::Posts(std::mem::take(&mut self.posts)));
        }
    }

    fn terminate(&mut self) -> Flow {
        Flow::End(Why::Terminated)
    }
}

/// Offers a panic report to the actor's `on_error`; sends it to the parent
/// unless handled (or the actor is gone).
fn offer_error<W: WorkerActor>(
    ctl: &UnboundedSender<Command<W>>,
    sender: Sender,
    report: ErrorReport,
) {
    let (tx, rx) = oneshot::channel::<bool>();
    let for_actor = report.clone();
    let cmd = Command::call(move |act: &mut W, ctx: &mut Context<W>| {
        let handled = act.on_error(&for_actor, ctx);
        let _ = tx.send(handled);
    });
    if ctl.send(cmd).is_err() {
        post_report(&sender, &report);
        return;
    }
    crate::session::spawn_boxed(async move {
        // Err: the actor went away, or panicked inside on_error itself.
        if !rx.await.unwrap_or(false) {
            post_report(&sender, &report);
        }
    });
}

/// Sends an error report to the parent (its `onerror`).
fn post_report(sender: &Sender, report: &ErrorReport) {
    let Encoding { codec, max_message_size, .. } = sender.encoding;
    match encode(codec, Header::bare(Kind::Error), report, max_message_size) {
        Ok(bytes) => {
            if sender.outbox.push(bytes, Vec::new()).is_err() {
                tracing::warn!(error = %report, "error report could not be sent to the parent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "error report could not be encoded"),
    }
}
