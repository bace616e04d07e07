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

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, Notify};

use super::bootstrap::{self, ORPHAN_GRACE};
use super::inbox::{Command, InboxLoop, Posted};
use super::panic::{self as worker_panic, CatchPanics};
use super::{Parent, Requests, WorkerActor};
use crate::error::{ErrorReport, WireError, WorkerError};
use crate::handoff::exit_code;
use crate::handoff::ENV_MAX_MESSAGE;
use crate::protocol::Codec;
use crate::protocol::Protocol;
use crate::session::requests::Pending;
use crate::session::{self, Finish, Flow, Hello, Session, Shared, Side, Why};
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::envelope::{self, Header, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::ws::{self, Socket};
use crate::wire::wsframe;

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
            not_a_worker(&e);
            return exit_code::NOT_A_WORKER;
        }
    };
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
    let (code, end) =
        system.block_on(serve::<W, F>(sock, fds_ok, max_message_size, make, panic_rx));
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

/// Says why this process cannot be a worker. Standard error, not only
/// `tracing`: no parent hears of it, and whoever ran the program by hand
/// (with a stranger's socket, or a stale environment) must.
fn not_a_worker(e: &dyn std::fmt::Display) {
    tracing::error!(error = %e, "not started as a worker");
    eprintln!("actix-webworker: {e}");
}

/// Tells the parent this process has no entry named `entry` (a refusal in
/// place of its hello, which the parent turns into a typed error naming
/// the entries it has), and returns the exit code.
pub(crate) fn refuse(entry: &str, known: Vec<String>) -> i32 {
    // The parent tells it, as `WireError::UnknownEntry`; here it is a trace.
    tracing::error!(entry, ?known, "no worker entry of that name");
    let handoff = match bootstrap::take() {
        Ok(handoff) => handoff,
        Err(e) => {
            not_a_worker(&e);
            return exit_code::NOT_A_WORKER;
        }
    };
    let raw = handoff.sock.as_raw_fd();
    match handoff.tls {
        // Plain reads and writes: the socket is UNIX, or TCP in the clear.
        None => say_no(std::fs::File::from(handoff.sock), raw, entry, known),
        // Over TLS, blocking, as the handshake was.
        Some(tls) => {
            let tcp = std::net::TcpStream::from(handoff.sock);
            say_no(tokio_rustls::rustls::StreamOwned::new(tls, tcp), raw, entry, known)
        }
    }
}

/// Reads the parent's hello from `sock` (whose socket is `raw`), answers
/// with the refusal, and waits for the parent to close; the exit code.
fn say_no(
    mut sock: impl std::io::Read + std::io::Write,
    raw: RawFd,
    entry: &str,
    known: Vec<String>,
) -> i32 {
    // SAFETY: `raw` is the socket `sock` reads and writes, open throughout.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let refusal = envelope::EntryRefusal { entry: entry.to_owned(), known };
    // The parent's hello is read first, so that nothing is left unread
    // when the socket closes (its reads would then fail before ours), and
    // to write the refusal with the codec it names.
    let five = nix::sys::time::TimeVal::new(5, 0);
    let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &five);
    let mut hello = [0u8; 64];
    let got = sock.read(&mut hello).unwrap_or(0);
    let codec = ws::codec_of_hello(&hello[..got]);
    let Ok(msg) = encode(codec, Header::bare(Kind::Refused), &refusal, usize::MAX) else {
        return exit_code::NOT_A_WORKER;
    };
    if sock.write_all(&wsframe::binary_frame(&msg)).and_then(|()| sock.flush()).is_err() {
        return exit_code::NOT_A_WORKER;
    }
    let _ = nix::sys::socket::shutdown(raw, nix::sys::socket::Shutdown::Write);
    // Until the parent has read it and closed its end. A parent that keeps
    // its end open (5 s without a byte) never finished the exchange.
    loop {
        match sock.read(&mut hello) {
            Ok(0) => return exit_code::NOT_A_WORKER,
            // TLS: the end of the TCP stream, without TLS's own close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return exit_code::NOT_A_WORKER
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "the parent did not close the connection");
                return exit_code::IO;
            }
        }
    }
}

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

async fn serve<W, F>(
    sock: Socket,
    fds_ok: bool,
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
            tracing::error!(error = %e, "the protocol's types cannot be described");
            return (exit_code::MISMATCH, End::Terminated);
        }
    };
    let conn = match ws::open(sock, max_message_size).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "could not open the connection to the parent");
            return (exit_code::IO, End::Terminated);
        }
    };
    let mut opened = match session::hello(conn, fp, Hello::AfterPeer).await {
        Ok(opened) => opened,
        Err(Some(e)) => {
            tracing::error!(error = %e, "handshake with the parent failed");
            return (exit_code::MISMATCH, End::Terminated);
        }
        // The parent went away before we were up.
        Err(None) => return (0, End::ParentGone),
    };
    if !fds_ok {
        opened.reader.without_descriptors();
    }
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let close = Arc::new(Notify::new());
    let pending = Arc::new(Pending::default());
    // The parent hears of the requests the worker stops waiting for.
    pending.tell_through(outbox.clone());
    let wire = Wire { codec: opened.codec, max_message_size };
    let parent = Parent::<W::Protocol>::new(
        outbox.clone(),
        (wire.codec, max_message_size, fds_ok),
        close.clone(),
        pending.clone(),
    );

    let (ctl_tx, ctl_rx) = unbounded_channel::<Command<W>>();
    let mut ctx = Context::<W>::new();
    // Posts (do_send) and requests (send) must reach the actor in the order
    // they came: with a bounded mailbox, a request could wait for room while
    // later posts overtake it.
    ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
    ctx.spawn(InboxLoop::new(ctl_rx));
    let mut requests = Requests::new(ctl_tx.clone());
    W::requests(&mut requests);
    let shared = Shared {
        outbox: outbox.clone(),
        pending: pending.clone(),
        handlers: Rc::new(requests.handlers),
        max_message_size,
        // The worker trusts its parent's buffers.
        max_shared_bytes: usize::MAX,
    };
    let side = ChildSide { ctl: ctl_tx.clone(), posts: Vec::new(), outbox: outbox.clone(), wire };
    // The writer keeps no books: there is no next connection to give its
    // messages to.
    let writer = opened.writer.without_books();
    let mut session = Session::start(opened.reader, writer, shared, side);
    let actor = make(parent.clone());
    let guarded = CatchPanics::new(ctx.into_future(actor));
    let (done, fatal) = (guarded.done.clone(), guarded.fatal.clone());
    actix_rt::spawn(guarded);

    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sigxcpu = signal(SignalKind::from_raw(libc::SIGXCPU)).ok();
    let end = loop {
        tokio::select! {
            flow = session.step() => match flow {
                Flow::Go => {}
                // The parent closed its end: it is gone.
                Flow::End(Why::PeerClosed) => break End::ParentGone,
                // Terminate, or broken framing (reported to the parent).
                Flow::End(Why::Terminated | Why::Broken) => break End::Terminated,
            },
            Some(report) = panics.recv() => offer_error(&ctl_tx, &outbox, report, wire),
            _ = close.notified() => break End::Closed,
            _ = done.notified() => {
                break if fatal.load(Ordering::SeqCst) { End::Fatal } else { End::ActorStopped };
            }
            // PR_SET_PDEATHSIG also sends SIGTERM: whether the parent is
            // gone is told at the end, by its pidfd.
            _ = recv_signal(&mut sigterm) => break End::Signalled,
            _ = recv_signal(&mut sigxcpu) => break End::CpuLimit,
        }
    };

    let code = match end {
        End::Terminated | End::Closed | End::ParentGone | End::Signalled | End::CpuLimit => {
            if end == End::Closed {
                let _ = outbox.push(envelope::bare(Kind::Closing), Vec::new());
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
        post_report(&outbox, &report, wire);
    }
    session.finish(Finish::Drain).await;
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

/// What the worker does with what its parent sends: posts go to the
/// actor, gathered so that those read together go in one command.
struct ChildSide<W: WorkerActor> {
    ctl: UnboundedSender<Command<W>>,
    /// Posts read but not yet handed to the actor.
    posts: Vec<Posted<W>>,
    outbox: Arc<Outbox>,
    wire: Wire,
}

/// How this worker's own messages are written: its connection's codec and
/// message size limit.
#[derive(Clone, Copy)]
struct Wire {
    codec: Codec,
    max_message_size: usize,
}

impl<W: WorkerActor> Side for ChildSide<W> {
    type Incoming = <W::Protocol as Protocol>::ToWorker;
    const ONLY_HERE: &'static [Kind] = &[Kind::Terminate, Kind::Ping];

    fn post(&mut self, msg: Posted<W>, _: session::Holds) {
        self.posts.push(msg);
    }

    fn wire_error(&mut self, e: WireError) {
        report_wire_error(&self.outbox, &e, self.wire);
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
    outbox: &Arc<Outbox>,
    report: ErrorReport,
    wire: Wire,
) {
    let outbox = outbox.clone();
    let (tx, rx) = oneshot::channel::<bool>();
    let for_actor = report.clone();
    let cmd = Command::call(move |act: &mut W, ctx: &mut Context<W>| {
        let handled = act.on_error(&for_actor, ctx);
        let _ = tx.send(handled);
    });
    if ctl.send(cmd).is_err() {
        post_report(&outbox, &report, wire);
        return;
    }
    actix_rt::spawn(async move {
        // Err: the actor went away, or panicked inside on_error itself.
        if !rx.await.unwrap_or(false) {
            post_report(&outbox, &report, wire);
        }
    });
}

fn report_wire_error(outbox: &Outbox, e: &WireError, wire: Wire) {
    post_report(outbox, &ErrorReport::new(format!("worker: {e}")), wire);
}

fn post_report(outbox: &Outbox, report: &ErrorReport, wire: Wire) {
    match encode(wire.codec, Header::bare(Kind::Error), report, wire.max_message_size) {
        Ok(bytes) => {
            if outbox.push(bytes, Vec::new()).is_err() {
                tracing::warn!(error = %report, "error report could not be sent to the parent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "error report could not be encoded"),
    }
}
