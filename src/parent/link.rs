//! The life of one worker process, seen from the parent: handshake, the
//! reading loop that turns frames into events, and the wait for the exit.
//!
//! One task per child process owns all of it, so the events of one process
//! reach the recipient in the order they happened, and its exit event comes
//! last, exactly once. The writer runs as a second task beside it, draining
//! the worker's outbox; when the connection ends it is stopped, and what it
//! never handed to the kernel goes back to the outbox for the next process.
//!
//! What a worker sends is read only as fast as the parent deals with it:
//! at most a window of events may wait in the recipient's mailbox, and the
//! replies the worker asked for count against the outbox's bound. Beyond
//! either, the link stops reading; the worker's writes then wait in its
//! socket, and a worker that floods the parent is held back instead of
//! filling the parent's memory.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::events::{Event, WorkerEvent};
use super::options::Heartbeat;
use super::process::ChildHandle;
use super::remote;
use super::sink::{EventSink, Events};
use super::spawn::Channel;
use crate::error::{ErrorReport, ExitStatus, Lost, WireError, WorkerError};
use crate::held::Holds;
use crate::protocol::{Protocol, Received};
use crate::session::{self, Common, Finish, Finished, Session, Side, Turn, Why};
use crate::wire::envelope::{self, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::writer::WriterEnd;
use crate::wire::ws::Socket;
use std::os::fd::OwnedFd;

/// How a worker process ended, as its link saw it.
pub(crate) struct LinkExit {
    pub status: ExitStatus,
    /// An error another start would meet again (see
    /// [`WireError::is_certain`]).
    pub certain: Option<WireError>,
}

/// Everything the task needs about its child.
pub(crate) struct Link<P: Protocol> {
    pub side: ParentSide<P>,
    pub handle: Arc<ChildHandle>,
    /// The sending half and the handlers (its encoding's codec is the one
    /// our hello names).
    pub common: Common,
    pub fingerprint: u64,
    pub handshake_timeout: Duration,
    pub heartbeat: Option<super::options::Heartbeat>,
    /// Where refusals after the worker is in go (a TCP worker's port).
    pub later: super::sink::EventSink<P>,
}

/// What the parent does with what its worker sends: events, in order.
pub(crate) struct ParentSide<P: Protocol> {
    name: Arc<str>,
    pid: u32,
    events: Events<P>,
    /// Called when the worker says it closes itself (`close()`).
    on_closing: Box<dyn Fn()>,
    outbox: Arc<Outbox>,
    /// Until the process has exited: replies owed hold the reading back
    /// only while they can be written.
    alive: bool,
}

impl<P: Protocol> ParentSide<P> {
    pub(crate) fn new(
        name: Arc<str>,
        pid: u32,
        events: Events<P>,
        on_closing: Box<dyn Fn()>,
        outbox: Arc<Outbox>,
    ) -> Self {
        ParentSide { name, pid, events, on_closing, outbox, alive: true }
    }

    fn emit(&mut self, kind: Event<P>) {
        self.emit_holding(kind, Holds::default());
    }

    fn emit_holding(&mut self, kind: Event<P>, holds: Holds) {
        let event = WorkerEvent { name: self.name.clone(), pid: self.pid, kind };
        self.events.emit_holding(event, holds);
    }

    /// A future that resolves once the reading may go on, when it may not.
    /// Replies hold the reading back only while the process lives: once it
    /// has exited, none can be written, and the socket is read to its end.
    fn behind(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        if let Some(oldest) = self.events.oldest_behind() {
            return Some(oldest);
        }
        if self.alive && self.outbox.replies_over() {
            let epoch = self.outbox.room_epoch();
            // Checked again after the epoch was read: room made in between
            // would not be waited for.
            if self.outbox.replies_over() {
                let outbox = self.outbox.clone();
                return Some(Box::pin(async move { outbox.wait_room(epoch).await }));
            }
        }
        None
    }
}

impl<P: Protocol> Side for ParentSide<P> {
    type Incoming = P::FromWorker;
    const ONLY_HERE: &'static [Kind] = &[Kind::Error, Kind::Closing, Kind::Pong];
    const COUNTS_HELD: bool = true;

    fn post(&mut self, msg: Received<P::FromWorker>, holds: Holds) {
        self.emit_holding(Event::Message(msg), holds);
    }

    fn wire_error(&mut self, e: WireError) {
        self.emit(Event::WireError(e));
    }

    fn held_back(&mut self, asked: bool) -> bool {
        self.events.behind() || (asked && self.alive && self.outbox.replies_over())
    }

    fn report(&mut self, report: ErrorReport) {
        self.emit(Event::Error(report));
    }

    fn closing(&mut self) {
        (self.on_closing)();
    }
}

impl<P: Protocol> Link<P> {
    /// Runs the connection to the end and reports the exit (the `Exit`
    /// event, last of the process's); returns how the process ended.
    pub(crate) async fn run(self, channel: super::spawn::Channel) -> LinkExit {
        let Link { mut side, handle, common, fingerprint, handshake_timeout, heartbeat, later } =
            self;
        let mut wait: Pin<Box<dyn Future<Output = ExitStatus>>> = Box::pin({
            let handle = handle.clone();
            async move { handle.wait().await }
        });
        let mut status: Option<ExitStatus> = None;
        let mut certain = None;
        let (outbox, pending) = (common.sender.outbox.clone(), common.sender.pending.clone());
        let codec = common.sender.encoding.codec;

        let local = matches!(channel, Channel::Local(_));
        let launched = matches!(&channel, Channel::Tcp(listening) if listening.launched);
        let max = common.sender.encoding.max_message_size;
        // Connected (a TCP worker: once it has presented its token), then
        // the hellos, within the handshake's time; a process that exits
        // before is told by its exit.
        let (mut farewell, mut refusals) = (None, Vec::new());
        let mut refuser = None;
        let connect_and_open = async {
            let sock: Socket = match channel {
                Channel::Local(sock) => OwnedFd::from(sock).into(),
                Channel::Tcp(listening) => {
                    let refused = |e| refusals.push(e);
                    // A stranger who says nothing is let go well before
                    // the worker's own time is up.
                    let per_peer = handshake_timeout / 4;
                    let accepting = listening.accept(per_peer, refused);
                    // Until the worker is connected, its launcher's exit
                    // is the only sign that it never will be; from then on
                    // the connection tells, as a socketpair does.
                    tokio::select! {
                        biased;
                        accepted = accepting => {
                            let (accepted, port) = accepted.map_err(|e| Some(WireError::Transport(e.to_string())))?;
                            // Whoever comes to the port after the worker
                            // is refused, and told of.
                            let (sink, name, pid) = (later.clone(), side.name.clone(), handle.pid());
                            let tell = move |e| {
                                let kind = Event::WireError(e);
                                sink.send(WorkerEvent { name: name.clone(), pid, kind });
                            };
                            refuser = Some(actix_rt::spawn(remote::refuse_all(port, tell)));
                            accepted.into_socket().map_err(|e| Some(WireError::Transport(e.to_string())))?
                        }
                        exited = wait.as_mut() => {
                            status = Some(exited);
                            return Err(None);
                        }
                    }
                }
            };
            // Kept to ask the worker to close, should the System stop
            // under it.
            farewell = sock.fd.try_clone().ok();
            session::open(sock, max, fingerprint, Turn::First(codec)).await
        };
        let opened = tokio::time::timeout(handshake_timeout, connect_and_open).await;
        for refused in refusals {
            side.emit(Event::WireError(refused));
        }
        // The worker is the process started, or one it started in turn
        // (`args` may wrap it: a debugger, `sh -c`). A remote worker's pid
        // is another host's: its token said who it is.
        let opened = opened.map(|r| {
            r.and_then(|opened| match !local || handle.is_self_or_descendant(opened.peer.pid) {
                true => Ok(opened),
                false => {
                    let (ours, theirs) = (handle.pid(), opened.peer.pid);
                    Err(Some(WireError::WrongPeer { ours, theirs }))
                }
            })
        });
        let cutting = Rc::new(RefCell::new(Cutting::Connected));
        let mut in_doubt = 0;
        // Taken for lost by its heartbeat (its status is then the kill's),
        // or its connection ended without its close.
        let mut lost = None;
        let mut side = match opened {
            Ok(Ok(opened)) => {
                if launched {
                    if let Some(sock) = farewell.as_ref().and_then(|s| s.try_clone().ok()) {
                        let grace = handle.farewell().limits().0;
                        let inner = std::mem::replace(&mut wait, Box::pin(std::future::pending()));
                        wait = cut_when_launcher_exits(inner, sock, grace, cutting.clone());
                    }
                }
                if let Some(sock) = farewell {
                    super::process::connected(&handle, sock, opened.reader.queues());
                }
                side.emit(Event::Online);
                let session = Session::start(opened.reader, opened.writer, common, side);
                let (side, n, closed) =
                    serve(session, &handle, &mut wait, &mut status, heartbeat, &mut lost).await;
                // The connection has ended: nothing is left to cut.
                let cut = Cutting::set(&cutting, Cutting::Ended);
                if let Some(task) = &cut {
                    task.abort();
                }
                in_doubt = n;
                // Through a launcher, the status to come is the launcher's:
                // the worker's own is known only if it closed (and then the
                // launcher passes it on), not if its connection just ended.
                // A launcher that failed while the connection was up was
                // not passing on a close: the worker's close came after,
                // when its connection was cut.
                let failed_first = cut.is_some() && status.is_some_and(|s| !s.success());
                if launched && lost.is_none() && (!closed || failed_first) {
                    lost = Some(Lost::Disconnected);
                }
                side
            }
            Ok(Err(e)) => {
                // Closed now: a worker that refused waits for that to exit
                // (with code 64). Any other is killed.
                drop(farewell);
                let refused = matches!(e, Some(WireError::UnknownEntry { .. }));
                if let Some(e) = e {
                    certain = e.is_certain().then(|| e.clone());
                    side.emit(Event::WireError(e));
                }
                if !refused {
                    handle.signal_group(crate::os::SIGKILL);
                }
                side
            }
            Err(_) => {
                drop(farewell);
                side.emit(Event::WireError(WireError::HandshakeTimeout(handshake_timeout)));
                handle.signal_group(crate::os::SIGKILL);
                side
            }
        };
        let status = match status {
            Some(s) => s,
            // A launcher whose worker's connection has ended may stay up
            // (a shell that runs something after it, a `kubectl` that
            // waits for its pod): it gets the time to exit a closing
            // worker gets, then SIGTERM, then SIGKILL.
            None if launched => {
                let (timeout, kill_delay) = handle.farewell().limits();
                let mut status = None;
                for (after, signal) in
                    [(timeout, crate::os::SIGTERM), (kill_delay, crate::os::SIGKILL)]
                {
                    match tokio::time::timeout(after, wait.as_mut()).await {
                        Ok(s) => {
                            status = Some(s);
                            break;
                        }
                        Err(_) => handle.signal_group(signal),
                    }
                }
                match status {
                    Some(s) => s,
                    None => wait.as_mut().await,
                }
            }
            None => wait.as_mut().await,
        };
        let status = ExitStatus { lost, ..status };
        drop(wait);
        // In-flight requests fail now (at most once): those still queued
        // must not reach a later child either. Purged first, then failed:
        // a `Port` on another thread pushes its requests for one
        // connection only (`Outbox::try_push_on`), after taking its slot.
        let ended = outbox.end_connection();
        pending.fail_through(ended, &WorkerError::Exited(status));
        if in_doubt > 0 {
            side.emit(Event::MaybeLost(in_doubt));
        }
        // Its port closes with it.
        if let Some(refuser) = refuser {
            refuser.abort();
        }
        // Nothing of the process is held any more (its pidfd closes with
        // the last handle, the socket closed with the reader and writer)
        // by the time its exit is told.
        let mut events = std::mem::replace(
            &mut side.events,
            Events::new(EventSink::Log, super::options::Limits::default().window()),
        );
        let (name, pid) = (side.name.clone(), handle.pid());
        drop(side);
        drop(handle);
        // Queued now, after every other event of the process and before
        // anything the actor says about a restart.
        events.emit(WorkerEvent { name, pid, kind: Event::Exit(status) });
        events.keep_marks();
        LinkExit { status, certain }
    }
}

/// Where a launched worker's connection is, for its launcher's exit.
enum Cutting {
    /// Up: a launcher's exit cuts it.
    Connected,
    /// The launcher has exited: the connection is cut (fully) when this
    /// task's grace is over.
    Cut(actix_rt::task::JoinHandle<()>),
    /// Ended: a launcher's exit now cuts nothing.
    Ended,
}

impl Cutting {
    /// Puts `with` in `cell`; the task that was to cut, if any.
    fn set(cell: &RefCell<Cutting>, with: Cutting) -> Option<actix_rt::task::JoinHandle<()>> {
        match std::mem::replace(&mut *cell.borrow_mut(), with) {
            Cutting::Cut(task) => Some(task),
            _ => None,
        }
    }
}

/// `wait`, for a worker started through a launcher: when the launcher
/// exits while the worker's connection is up (an `ssh` client killed, a
/// `kubectl` that lost its API server), the worker can no longer be
/// signalled, and its status would never be known. Its connection is
/// ended instead: its write side at once, so that the worker reads the
/// end of its input and exits as for a parent gone (no orphan on the
/// other host); then, after `grace` for what it still sends on its way
/// out, the read side too, so that the link ends even when the worker
/// cannot be reached. The exit is then lost (`Lost::Disconnected`, with
/// the launcher's status), and restarted on failure.
fn cut_when_launcher_exits(
    wait: Pin<Box<dyn Future<Output = ExitStatus>>>,
    sock: OwnedFd,
    grace: Duration,
    cutting: Rc<RefCell<Cutting>>,
) -> Pin<Box<dyn Future<Output = ExitStatus>>> {
    use nix::sys::socket::{shutdown, Shutdown};
    use std::os::fd::AsRawFd;
    Box::pin(async move {
        let status = wait.await;
        if matches!(*cutting.borrow(), Cutting::Connected) {
            tracing::debug!(%status, "the launcher exited while its worker was connected");
            let _ = shutdown(sock.as_raw_fd(), Shutdown::Write);
            let cut = actix_rt::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = shutdown(sock.as_raw_fd(), Shutdown::Both);
            });
            Cutting::set(&cutting, Cutting::Cut(cut));
        }
        status
    })
}

/// Runs an opened connection to its end; returns the side, how many posts
/// may have sat unread in the socket, and whether the worker closed it.
async fn serve<P: Protocol>(
    mut session: Session<ParentSide<P>>,
    handle: &ChildHandle,
    wait: &mut Pin<Box<dyn Future<Output = ExitStatus>>>,
    status: &mut Option<ExitStatus>,
    heartbeat: Option<Heartbeat>,
    lost: &mut Option<Lost>,
) -> (ParentSide<P>, usize, bool) {
    if read(&mut session, wait, status, heartbeat, lost).await == Why::Broken {
        // Nothing after this can be trusted to be in step.
        handle.signal_group(crate::os::SIGKILL);
    }
    let closed = session.closed_by_peer();
    session.settle_by_peers_close();
    let outbox = session.side().outbox.clone();
    let Finished { mut side, unclaimed_fds, writer } = session.finish(Finish::Now).await;
    if unclaimed_fds > 0 {
        // Closed with the reader; the event says so.
        side.emit(Event::WireError(WireError::UnclaimedFds { count: unclaimed_fds }));
    }
    // What the writer never handed to the kernel goes to the next process,
    // first; what may have sat unread in the socket is told.
    let Some(WriterEnd { result, unsent, in_doubt }) = writer else { return (side, 0, closed) };
    if let Err(e) = result {
        tracing::debug!(worker = %side.name, error = %e, "writer stopped");
    }
    outbox.put_back(unsent);
    (side, in_doubt, closed)
}

/// Reads until the connection ends (noting the exit when it comes first:
/// the socket is then read to its end), holding back while the recipient
/// or the replies are behind.
pub(crate) async fn read<P: Protocol>(
    session: &mut Session<ParentSide<P>>,
    wait: &mut Pin<Box<dyn Future<Output = ExitStatus>>>,
    status: &mut Option<ExitStatus>,
    heartbeat: Option<Heartbeat>,
    lost: &mut Option<Lost>,
) -> Why {
    // Heartbeats: when the worker was last heard from, and when it was
    // last pinged since.
    let mut heard = tokio::time::Instant::now();
    let mut pinged = false;
    loop {
        let mut held_back = false;
        loop {
            let Some(behind) = session.side().behind() else { break };
            held_back = true;
            let exited = tokio::select! {
                _ = behind => None,
                s = wait.as_mut(), if status.is_none() => Some(s),
            };
            if let Some(s) = exited {
                *status = Some(s);
                session.side().alive = false;
            }
        }
        // While the parent held the worker back it did not read, so it
        // cannot have heard: that time is the parent's, not the worker's
        // silence, and the clock starts again now.
        if held_back {
            (heard, pinged) = (tokio::time::Instant::now(), false);
        }
        let check = match heartbeat {
            Some(h) if pinged => heard + h.lost_after,
            Some(h) => heard + h.every,
            None => tokio::time::Instant::now() + NO_HEARTBEAT,
        };
        // What waits in the socket comes first: a worker whose bytes are
        // there has been heard, whatever the clock says.
        tokio::select! {
            biased;
            flow = session.step() => {
                if let session::Flow::End(why) = flow {
                    return why;
                }
                (heard, pinged) = (tokio::time::Instant::now(), false);
            }
            () = tokio::time::sleep_until(check), if heartbeat.is_some() && status.is_none() => {
                let Some(h) = heartbeat else { continue };
                if pinged {
                    // Nothing for `lost_after`, a ping unanswered: lost.
                    session.side().emit(Event::WireError(WireError::Silent(h.lost_after)));
                    *lost = Some(Lost::Silent);
                    return Why::Broken;
                }
                let _ = session.side().outbox.push_unbounded(envelope::bare(Kind::Ping), Vec::new());
                pinged = true;
            }
            // The child is gone and its group killed: keep reading until
            // the socket drains to its end.
            s = wait.as_mut(), if status.is_none() => {
                *status = Some(s);
                session.side().alive = false;
            }
        }
    }
}

/// Far enough never to come: the timer of a session without heartbeats.
const NO_HEARTBEAT: Duration = Duration::from_secs(86_400);
