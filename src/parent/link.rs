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

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::task::JoinHandle;

use super::events::{Event, WorkerEvent};
use super::launcher::Cut;
use super::options::Heartbeat;
use super::process::{ChildHandle, Exit};
#[cfg(feature = "tcp")]
use super::remote;
use super::side::ParentSide;
use super::sink::{EventSink, Events};
use super::spawn::Channel;
use crate::error::{ExitStatus, Lost, WireError, WorkerError};
use crate::protocol::Protocol;
use crate::session::requests::Pending;
use crate::session::{self, Common, Finish, Finished, Opened, Session, Then, Turn, Why};
use crate::wire::envelope::{self, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::writer::WriterEnd;
use crate::wire::ws::Socket;

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
    /// The worker's data message, sent after the hellos (see
    /// `session/data.rs`).
    pub data: Option<bytes::Bytes>,
    pub handshake_timeout: Duration,
    pub heartbeat: Option<super::options::Heartbeat>,
    /// Where refusals after the worker is in go (a TCP worker's port).
    #[cfg_attr(not(feature = "tcp"), allow(dead_code))]
    pub later: super::sink::EventSink<P>,
    /// Counted among the starts under way until the link is opened (see
    /// `spawner.rs`).
    pub starting: Option<super::spawner::Starting>,
}

impl<P: Protocol> Link<P> {
    /// Runs the connection to the end and reports the exit (the `Exit`
    /// event, last of the process's); returns how the process ended.
    pub(crate) async fn run(mut self, channel: Channel) -> LinkExit {
        let launched = channel.launched();
        let mut exit = Exit::of(&self.handle);
        let (opening, kept) = self.open_checked(channel, &mut exit).await;
        // Opened or not, this start is done: the next may begin.
        drop(self.starting.take());
        let Link { mut side, handle, common, handshake_timeout, heartbeat, .. } = self;
        let (outbox, pending) = (common.sender.outbox.clone(), common.sender.pending.clone());
        // Taken for lost by its heartbeat (its status is then the kill's),
        // or its connection ended without its close.
        let mut lost = None;
        let (side, in_doubt, certain) = match opening {
            Ok(opened) => {
                // A launched worker's connection is cut if its launcher
                // exits while it is up (`launcher.rs`).
                let sock = kept.farewell.as_ref().filter(|_| launched);
                let sock = sock.and_then(|s| s.try_clone().ok());
                let cut = sock.map(|s| Cut::arm(&mut exit, s, handle.farewell().limits().0));
                if let Some(sock) = kept.farewell {
                    super::process::connected(&handle, sock, opened.reader.queues());
                }
                side.emit(Event::Online);
                let session = Session::start(opened.reader, opened.writer, common, side);
                let (side, n, closed) =
                    serve(session, &handle, &mut exit, (heartbeat, launched), &mut lost).await;
                // Through a launcher, the status to come is the launcher's:
                // the worker's own is known only if it closed (and then the
                // launcher passes it on), not if its connection just ended.
                // A launcher that failed while the connection was up was
                // not passing on a close: the worker's close came after,
                // when its connection was cut.
                let was_cut = cut.is_some_and(|cut| cut.end());
                let failed_first = was_cut && exit.status.is_some_and(|s| !s.success());
                if launched && lost.is_none() && (!closed || failed_first) {
                    lost = Some(Lost::Disconnected);
                }
                (side, n, None)
            }
            Err(unopened) => {
                drop(kept.farewell);
                let certain = unopened.close(&mut side, &handle, handshake_timeout, launched);
                (side, 0, certain)
            }
        };
        let status = ExitStatus { lost, ..exit.status_of(&handle, launched).await };
        finish(side, handle, status, in_doubt, kept.refuser, (&outbox, &pending, certain.as_ref()));
        LinkExit { status, certain }
    }

    /// Connects (a TCP worker: once it has presented its token), then
    /// exchanges the hellos, within the handshake's time; a process that
    /// exits before is told by its exit. Checks that the peer is the
    /// worker. Tells the connections refused on the way.
    async fn open_checked(
        &mut self,
        channel: Channel,
        exit: &mut Exit,
    ) -> (Result<Opened, Unopened>, Kept) {
        let local = matches!(channel, Channel::Local(_));
        let (mut refusals, mut kept) = (Vec::new(), Kept { farewell: None, refuser: None });
        let encoding = self.common.sender.encoding;
        let (max, hello) = (encoding.max_message_size, Turn::First(encoding.codec));
        // The worker is the process started, or one it started in turn
        // (`args` may wrap it: a debugger, `sh -c`). A remote worker's pid
        // is another host's: its token said who it is. Checked before the
        // worker's data goes out.
        let handle = self.handle.clone();
        let peer = move |hello: &envelope::Hello| match local {
            true if !handle.is_self_or_descendant(hello.pid) => {
                Err(WireError::WrongPeer { ours: handle.pid(), theirs: hello.pid })
            }
            _ => Ok(()),
        };
        let then = Then { data: self.data.clone(), peer: &peer };
        let opening = async {
            let sock = self.connect(channel, exit, &mut refusals, &mut kept.refuser).await?;
            // Kept to ask the worker to close, should the System stop
            // under it.
            kept.farewell = sock.fd.try_clone().ok();
            session::open(sock, max, self.fingerprint, hello, then).await
        };
        let opened = tokio::time::timeout(self.handshake_timeout, opening).await;
        for refused in refusals {
            self.side.emit(Event::WireError(refused));
        }
        let opening = match opened {
            Err(_) => Err(Unopened::TimedOut),
            Ok(Err(e)) => Err(Unopened::Failed(e)),
            Ok(Ok(opened)) => Ok(opened),
        };
        (opening, kept)
    }

    /// The worker's socket: its end of the socketpair, or a TCP worker's
    /// first connection that presents its token (`Err(None)` if the
    /// launcher exits first: its exit is noted in `exit`).
    #[cfg_attr(not(feature = "tcp"), allow(unused_variables, clippy::ptr_arg))]
    async fn connect(
        &self,
        channel: Channel,
        exit: &mut Exit,
        refusals: &mut Vec<WireError>,
        refuser: &mut Option<JoinHandle<()>>,
    ) -> Result<Socket, Option<WireError>> {
        match channel {
            Channel::Local(sock) => Ok(OwnedFd::from(sock).into()),
            #[cfg(feature = "tcp")]
            Channel::Tcp(listening) => self.accept(listening, exit, refusals, refuser).await,
        }
    }

    /// A TCP worker's first connection that presents its token, as
    /// [`connect`](Self::connect) says.
    #[cfg(feature = "tcp")]
    async fn accept(
        &self,
        listening: remote::Listening,
        exit: &mut Exit,
        refusals: &mut Vec<WireError>,
        refuser: &mut Option<JoinHandle<()>>,
    ) -> Result<Socket, Option<WireError>> {
        let transport = |e: std::io::Error| Some(WireError::Transport(e.to_string()));
        // A stranger who says nothing is let go well before the worker's
        // own time is up.
        let accepting = listening.accept(self.handshake_timeout / 4, |e| refusals.push(e));
        // Until the worker is connected, its launcher's exit is the only
        // sign that it never will be; from then on the connection tells,
        // as a socketpair does.
        tokio::select! {
            biased;
            accepted = accepting => {
                let (accepted, listener) = accepted.map_err(transport)?;
                // Whoever comes to the port after the worker is refused,
                // and told of.
                let (sink, name, pid) = (self.later.clone(), self.side.name.clone(), self.handle.pid());
                let tell = move |e| {
                    let kind = Event::WireError(e);
                    sink.send(WorkerEvent::new(name.clone(), pid, kind));
                };
                *refuser = Some(actix_rt::spawn(remote::refuse_all(listener, tell)));
                accepted.into_socket().map_err(transport)
            }
            exited = exit.wait.as_mut() => {
                exit.status = Some(exited);
                Err(None)
            }
        }
    }
}

/// Why a handshake did not open the connection.
enum Unopened {
    /// Failed: why (`None`: the process exited first, and its exit tells).
    Failed(Option<WireError>),
    /// Not within the handshake's time.
    TimedOut,
}

impl Unopened {
    /// Tells why a handshake failed and closes the process: a worker that
    /// refused waits for that to exit (with code 64), any other is killed.
    /// A launcher (`launched`) is asked first, with SIGTERM, and gets the
    /// farewell's ladder after (`Exit::status_of`): a SIGKILL would leave
    /// what it started behind (`srun`'s job, queued or running, stays when
    /// `srun` cannot cancel it). The error, when another start would meet
    /// it again.
    fn close<P: Protocol>(
        self,
        side: &mut ParentSide<P>,
        handle: &ChildHandle,
        handshake_timeout: Duration,
        launched: bool,
    ) -> Option<WireError> {
        let stop = if launched { crate::os::SIGTERM } else { crate::os::SIGKILL };
        let e = match self {
            Unopened::Failed(e) => e,
            Unopened::TimedOut => {
                side.emit(Event::WireError(WireError::HandshakeTimeout(handshake_timeout)));
                handle.signal_group(stop);
                return None;
            }
        };
        let refused =
            matches!(e, Some(WireError::UnknownEntry { .. } | WireError::Unanswered { .. }));
        let mut certain = None;
        if let Some(e) = e {
            certain = e.is_certain().then(|| e.clone());
            side.emit(Event::WireError(e));
        }
        if !refused {
            handle.signal_group(stop);
        }
        certain
    }
}

/// What the handshake leaves beside the connection.
struct Kept {
    /// A duplicate of the parent's socket (see `process::connected`).
    farewell: Option<OwnedFd>,
    /// A TCP worker's port, refusing whoever comes after the worker.
    refuser: Option<JoinHandle<()>>,
}

/// The end of a process's link: what was in flight fails with its status
/// (or the error certain to stop it), the posts that may have sat unread
/// are told, its port closes, and its exit is told, last of its events.
fn finish<P: Protocol>(
    mut side: ParentSide<P>,
    handle: Arc<ChildHandle>,
    status: ExitStatus,
    in_doubt: usize,
    refuser: Option<JoinHandle<()>>,
    (outbox, pending, certain): (&Outbox, &Pending, Option<&WireError>),
) {
    // In-flight requests fail now (at most once): those still queued
    // must not reach a later child either. Purged first, then failed:
    // a `Port` on another thread pushes its requests for one
    // connection only (`Outbox::try_push_on`), after taking its slot.
    // With the cause that stops the worker for good, when there is one
    // (a refused entry, undeclared answers, another build): its exit
    // status alone would not say.
    let ended = outbox.end_connection();
    let failure = certain.map_or(WorkerError::Exited(status), |e| WorkerError::Wire(e.clone()));
    pending.fail_through(ended, &failure);
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
    let window = super::options::Limits::default().window();
    let mut events = std::mem::replace(&mut side.events, Events::new(EventSink::Log, window));
    let (name, pid) = (side.name.clone(), handle.pid());
    drop(side);
    drop(handle);
    // Queued now, after every other event of the process and before
    // anything the actor says about a restart.
    events.emit(WorkerEvent::new(name, pid, Event::Exit(status)));
    events.keep_marks();
}

/// Runs an opened connection to its end; returns the side, how many posts
/// may have sat unread in the socket, and whether the worker closed it.
async fn serve<P: Protocol>(
    mut session: Session<ParentSide<P>>,
    handle: &ChildHandle,
    exit: &mut Exit,
    (heartbeat, launched): (Option<Heartbeat>, bool),
    lost: &mut Option<Lost>,
) -> (ParentSide<P>, usize, bool) {
    let (wait, status) = (&mut exit.wait, &mut exit.status);
    if read(&mut session, wait, status, heartbeat, lost).await == Why::Broken {
        // Nothing after this can be trusted to be in step. A launcher is
        // asked first, and gets the farewell's ladder after (see
        // `Unopened::close`): `srun` killed would leave its job running.
        let stop = if launched { crate::os::SIGTERM } else { crate::os::SIGKILL };
        handle.signal_group(stop);
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
    // How many times the writer had taken the outbox's queue when the
    // last Ping was queued: unchanged, that Ping still waits. (Not the
    // room epoch: a reply forgiven, the worker cancelling what it asked,
    // moves that too.)
    let mut ping_queued_at = None;
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
                // One Ping waiting at a time: past the outbox's bound, a
                // worker that talks but never reads would have one queued
                // for each of its silences, without end.
                let outbox = &session.side().outbox;
                let taken = outbox.taken();
                if ping_queued_at != Some(taken) {
                    ping_queued_at = Some(taken);
                    let _ = outbox.push_unbounded(envelope::bare(Kind::Ping), Vec::new());
                }
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
