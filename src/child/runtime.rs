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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, Notify};

use super::bootstrap::{self, ORPHAN_GRACE};
use super::control::{Command, ControlLoop, Posted};
use super::panic::{self as worker_panic, Guarded};
use super::{Parent, Requests, WorkerActor};
use crate::error::{ErrorReport, WireError, WorkerError};
use crate::handoff::exit_code;
use crate::handoff::ENV_MAX_MESSAGE;
use crate::protocol::Protocol;
use crate::protocol::Received;
use crate::session::requests::{resolve_frame, Handlers, Pending};
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::frame::{self, Header, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::socket::{self, Inbound};
use crate::wire::writer::Writer;

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
    let handoff = match bootstrap::take() {
        Ok(handoff) => handoff,
        Err(e) => {
            eprintln!("actix-webworker: {e}");
            return exit_code::NOT_A_WORKER;
        }
    };
    if let Err(e) = bootstrap::start_watchdog(handoff.parent.clone(), &handoff.sock) {
        tracing::warn!(error = %e, "no watchdog for the parent's death");
    }
    let (panic_tx, panic_rx) = unbounded_channel();
    worker_panic::install(panic_tx);
    let system = actix_rt::System::new();
    let (code, end) =
        system.block_on(serve::<W, F>(handoff.sock, max_message_size, make, panic_rx));
    // Orphaned: nobody will take our process group down, so we do, with
    // whatever this worker started (ourselves last). When the parent's
    // socket closed, the parent may still be on its way out: its pidfd says
    // when it has gone.
    let wait = if end == End::ParentGone { ORPHAN_GRACE } else { Duration::ZERO };
    if handoff.parent.gone_within(wait) {
        bootstrap::kill_own_group();
    }
    code
}

/// Tells the parent this process has no entry named `entry` (a refusal in
/// place of its hello, which the parent turns into a typed error naming
/// the entries it has), and returns the exit code.
pub(crate) fn refuse(entry: &str, known: Vec<String>) -> i32 {
    use std::io::{Read, Write};
    eprintln!("actix-webworker: no worker entry named {entry:?}; this program has {known:?}");
    let mut sock = match bootstrap::take() {
        Ok(handoff) => handoff.sock,
        Err(e) => {
            eprintln!("actix-webworker: {e}");
            return exit_code::NOT_A_WORKER;
        }
    };
    let refusal = frame::EntryRefusal { entry: entry.to_owned(), known };
    let Ok(msg) = encode(Header::bare(Kind::Refused), &refusal, usize::MAX) else {
        return exit_code::NOT_A_WORKER;
    };
    // The parent's hello is read first, so that nothing is left unread
    // when the socket closes (its reads would then fail before ours).
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let mut hello = [0u8; 64];
    let _ = sock.read(&mut hello);
    if sock.write_all(&socket::binary_frame(&msg)).is_ok() {
        let _ = sock.shutdown(std::net::Shutdown::Write);
        // Until the parent has read it and closed its end.
        let _ = sock.read(&mut hello);
    }
    exit_code::NOT_A_WORKER
}

/// Why the main loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Terminate from the parent, or broken framing from it.
    Terminated,
    /// `close()` from inside the worker.
    Closed,
    /// The parent may be gone: its socket closed, or SIGTERM (its
    /// escalation, or the death signal).
    ParentGone,
    /// SIGXCPU: the soft CPU limit was reached.
    CpuLimit,
    /// The actor stopped by itself.
    ActorStopped,
    /// The actor cannot recover from a panic.
    Fatal,
}

async fn serve<W, F>(
    sock: std::os::unix::net::UnixStream,
    max_message_size: usize,
    make: F,
    mut panics: UnboundedReceiver<ErrorReport>,
) -> (i32, End)
where
    W: WorkerActor,
    F: FnOnce(Parent<W::Protocol>) -> W,
{
    let fp = match crate::session::shape::fingerprint::<W::Protocol>() {
        Ok(fp) => fp,
        Err(e) => {
            eprintln!("actix-webworker: {e}");
            return (exit_code::MISMATCH, End::Terminated);
        }
    };
    let mut conn = match socket::open(sock, max_message_size).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "could not open the connection to the parent");
            return (exit_code::IO, End::Terminated);
        }
    };
    // The hello each way. Ours is sent whatever we think of theirs, so the
    // parent can say what is wrong.
    let theirs = conn.recv_hello(fp).await;
    let _ = conn.send(frame::hello(fp)).await;
    match theirs {
        Ok(_) => {}
        Err(Some(e)) => {
            tracing::error!(error = %e, "handshake with the parent failed");
            return (exit_code::MISMATCH, End::Terminated);
        }
        // The parent went away before we were up.
        Err(None) => return (0, End::ParentGone),
    }
    let (mut reader, writer) = conn.split();
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    // Stopped only by the outbox's end, or the connection failing.
    let (_keep_writing, no_stop) = oneshot::channel();
    // Nothing to give to a next connection: no books.
    let writer_task =
        actix_rt::spawn(Writer::new(writer).without_books().run(outbox.clone(), no_stop));
    let close = Arc::new(Notify::new());
    let pending = Arc::new(Pending::default());
    let parent = Parent::<W::Protocol>::new(
        outbox.clone(),
        max_message_size,
        close.clone(),
        pending.clone(),
    );

    let (ctl_tx, ctl_rx) = unbounded_channel::<Command<W>>();
    let mut ctx = Context::<W>::new();
    // Posts (do_send) and requests (send) must reach the actor in the order
    // they came: with a bounded mailbox, a request could wait for room while
    // later posts overtake it.
    ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
    ctx.spawn(ControlLoop::new(ctl_rx));
    let mut requests = Requests::new(ctl_tx.clone());
    W::requests(&mut requests);
    let mut link = Link {
        ctl: ctl_tx.clone(),
        posts: Vec::new(),
        outbox: outbox.clone(),
        pending: pending.clone(),
        handlers: requests.handlers,
        max_message_size,
    };
    let actor = make(parent.clone());
    let guarded = Guarded::new(ctx.into_future(actor));
    let (done, fatal) = (guarded.done.clone(), guarded.fatal.clone());
    actix_rt::spawn(guarded);

    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sigxcpu = signal(SignalKind::from_raw(libc::SIGXCPU)).ok();
    let end = 'serve: loop {
        tokio::select! {
            item = reader.next() => {
                // Everything already read goes in one go, without another
                // round of the select.
                let mut next = Some(item);
                while let Some(item) = next {
                    if let Some(end) = link.handle(item) {
                        break 'serve end;
                    }
                    next = reader.next_ready();
                }
                link.flush_posts();
            }
            Some(report) = panics.recv() => offer_error(&ctl_tx, &outbox, report, max_message_size),
            _ = close.notified() => break End::Closed,
            _ = done.notified() => {
                break if fatal.load(Ordering::SeqCst) { End::Fatal } else { End::ActorStopped };
            }
            // PR_SET_PDEATHSIG also sends SIGTERM: whether the parent is
            // gone is told at the end, by its pidfd.
            _ = recv_signal(&mut sigterm) => break End::ParentGone,
            _ = recv_signal(&mut sigxcpu) => break End::CpuLimit,
        }
    };

    let code = match end {
        End::Terminated | End::Closed | End::ParentGone | End::CpuLimit => {
            if end == End::Closed {
                let _ = outbox.push(frame::bare(Kind::Closing), Vec::new());
            }
            let (tx, rx) = oneshot::channel();
            let sent = ctl_tx.send(Command::call(move |act: &mut W, ctx: &mut Context<W>| {
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
    };
    pending.fail_all(&WorkerError::Disconnected);
    // Reports of panics that happened on the way out go straight out.
    while let Ok(report) = panics.try_recv() {
        post_report(&outbox, &report, max_message_size);
    }
    outbox.end();
    let _ = writer_task.await;
    (code, end)
}

async fn recv_signal(sig: &mut Option<Signal>) {
    match sig {
        Some(sig) => {
            sig.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What the main loop needs to hand frames from the parent on.
struct Link<W: WorkerActor> {
    ctl: UnboundedSender<Command<W>>,
    /// Posts read but not yet handed to the actor: they go in one command.
    posts: Vec<Posted<W>>,
    outbox: Arc<Outbox>,
    pending: Arc<Pending>,
    handlers: Handlers,
    max_message_size: usize,
}

impl<W: WorkerActor> Link<W> {
    /// Handles what the reader gave; `Some` ends the loop.
    fn handle(&mut self, item: Option<Result<Inbound, WireError>>) -> Option<End> {
        if !matches!(&item, Some(Ok(inbound)) if inbound.header.kind == Kind::Post) {
            // Whatever else comes is handled after the posts before it.
            self.flush_posts();
        }
        match item {
            // The parent closed its end: it is gone.
            None => Some(End::ParentGone),
            Some(Ok(inbound)) => self.deliver(inbound),
            Some(Err(e)) => {
                // Framing is broken: report it and close.
                report_wire_error(&self.outbox, &e, self.max_message_size);
                Some(End::Terminated)
            }
        }
    }

    /// Hands one frame from the parent on; `Some` ends the loop.
    fn deliver(&mut self, inbound: Inbound) -> Option<End> {
        match inbound.header.kind {
            Kind::Post => {
                match codec::decode::<<W::Protocol as Protocol>::ToWorker>(inbound.payload()) {
                    Ok(data) => self.posts.push(Received::new(data, inbound.fds)),
                    Err(e) => report_wire_error(&self.outbox, &e, self.max_message_size),
                }
            }
            Kind::Request => self.handlers.dispatch(&inbound, &self.outbox, self.max_message_size),
            Kind::Answer | Kind::Failed => resolve_frame(&self.pending, inbound),
            Kind::Terminate => return Some(End::Terminated),
            Kind::Hello | Kind::Error | Kind::Closing | Kind::Batch | Kind::Refused => {
                report_wire_error(
                    &self.outbox,
                    &WireError::Unexpected("message kind from the parent"),
                    self.max_message_size,
                )
            }
        }
        None
    }

    /// Hands the posts read so far to the actor.
    fn flush_posts(&mut self) {
        if !self.posts.is_empty() {
            let _ = self.ctl.send(Command::Posts(std::mem::take(&mut self.posts)));
        }
    }
}

/// Offers a panic report to the actor's `on_error`; sends it to the parent
/// unless handled (or the actor is gone).
fn offer_error<W: WorkerActor>(
    ctl: &UnboundedSender<Command<W>>,
    outbox: &Arc<Outbox>,
    report: ErrorReport,
    max_message_size: usize,
) {
    let outbox = outbox.clone();
    let (tx, rx) = oneshot::channel::<bool>();
    let for_actor = report.clone();
    let cmd = Command::call(move |act: &mut W, ctx: &mut Context<W>| {
        let handled = act.on_error(&for_actor, ctx);
        let _ = tx.send(handled);
    });
    if ctl.send(cmd).is_err() {
        post_report(&outbox, &report, max_message_size);
        return;
    }
    actix_rt::spawn(async move {
        // Err: the actor went away, or panicked inside on_error itself.
        if !rx.await.unwrap_or(false) {
            post_report(&outbox, &report, max_message_size);
        }
    });
}

fn report_wire_error(outbox: &Outbox, e: &WireError, max_message_size: usize) {
    post_report(outbox, &ErrorReport::new(format!("worker: {e}")), max_message_size);
}

fn post_report(outbox: &Outbox, report: &ErrorReport, max_message_size: usize) {
    match encode(Header::bare(Kind::Error), report, max_message_size) {
        Ok(bytes) => {
            if outbox.push(bytes, Vec::new()).is_err() {
                tracing::warn!(error = %report, "error report could not be sent to the parent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "error report could not be encoded"),
    }
}
