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
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::events::{Event, WorkerEvent};
use super::process::ChildHandle;
use super::sink::{EventSink, Events};
use crate::error::{ErrorReport, ExitStatus, WireError, WorkerError};
use crate::protocol::Protocol;
use crate::protocol::Received;
use crate::session::requests::{resolve_frame, Handlers, Pending};
use crate::wire::codec;
use crate::wire::frame::{self, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::socket::{self, Inbound, Reader};
use crate::wire::writer::{Writer, WriterEnd};

/// Messages handled per wake-up before the link lets other tasks run.
const BUDGET: usize = 1024;

/// How a worker process ended, as its link saw it.
pub(crate) struct LinkExit {
    pub status: ExitStatus,
    /// An error another start would meet again (see
    /// [`WireError::is_certain`]).
    pub certain: Option<WireError>,
}

/// Everything the task needs about its child.
pub(crate) struct Link<P: Protocol> {
    pub name: Arc<str>,
    pub handle: Arc<ChildHandle>,
    pub outbox: Arc<Outbox>,
    pub pending: Arc<Pending>,
    pub handlers: Rc<Handlers>,
    pub events: Events<P>,
    /// Called when the worker says it closes itself (`close()`).
    pub on_closing: Box<dyn Fn()>,
    pub max_message_size: usize,
    pub fingerprint: u64,
    pub handshake_timeout: Duration,
    /// A request was dispatched since the replies' bound was last looked at.
    pub asked: bool,
}

impl<P: Protocol> Link<P> {
    fn emit(&mut self, kind: Event<P>) {
        let pid = self.handle.pid();
        self.events.emit(WorkerEvent { name: self.name.clone(), pid, kind });
    }

    /// Runs the connection to the end and reports the exit (the `Exit`
    /// event, last of the process's); returns how the process ended.
    pub(crate) async fn run(mut self, sock: std::os::unix::net::UnixStream) -> LinkExit {
        let handle = self.handle.clone();
        let mut wait: Pin<Box<dyn Future<Output = ExitStatus>>> = Box::pin({
            let handle = handle.clone();
            async move { handle.wait().await }
        });
        let mut status: Option<ExitStatus> = None;
        let mut certain = None;

        // Kept to ask the worker to close, should the System stop under it.
        let mut farewell = sock.try_clone().ok().map(std::os::fd::OwnedFd::from);
        let handshake = tokio::time::timeout(self.handshake_timeout, self.handshake(sock));
        let handshake = handshake.await;
        if !matches!(handshake, Ok(Ok(_))) {
            // Closed now: a worker that refused waits for that to exit.
            farewell = None;
        }
        let (reader, writer) = match handshake {
            Ok(Ok(halves)) => {
                if let Some(sock) = farewell {
                    super::process::connected(&handle, sock, halves.0.queues());
                }
                self.emit(Event::Online);
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let task = actix_rt::spawn(halves.1.run(self.outbox.clone(), stopped));
                (Some(halves.0), Some((stop, task)))
            }
            Ok(Err(e)) => {
                // A worker that refused exits by itself once we close: its
                // exit code (64) says so. Any other is killed.
                let refused = matches!(e, Some(WireError::UnknownEntry { .. }));
                if let Some(e) = e {
                    certain = e.is_certain().then(|| e.clone());
                    self.emit(Event::WireError(e));
                }
                if !refused {
                    handle.signal_group(libc::SIGKILL);
                }
                (None, None)
            }
            Err(_) => {
                self.emit(Event::WireError(WireError::HandshakeTimeout(self.handshake_timeout)));
                handle.signal_group(libc::SIGKILL);
                (None, None)
            }
        };

        if let Some(mut reader) = reader {
            self.read(&mut reader, &mut wait, &mut status).await;
            let count = reader.unclaimed_fds();
            if count > 0 {
                // They are closed with the reader; the event says so.
                self.emit(Event::WireError(WireError::UnclaimedFds { count }));
            }
        }
        // What the writer never handed to the kernel goes to the next
        // process, first; what may have sat unread in the socket is told.
        let mut in_doubt = 0;
        if let Some((stop, task)) = writer {
            let _ = stop.send(());
            if let Ok(WriterEnd { result, unsent, in_doubt: n }) = task.await {
                if let Err(e) = result {
                    tracing::debug!(worker = %self.name, error = %e, "writer stopped");
                }
                self.outbox.put_back(unsent);
                in_doubt = n;
            }
        }
        let status = match status {
            Some(s) => s,
            None => wait.as_mut().await,
        };
        drop(wait);
        // In-flight requests fail now (at most once): those still queued
        // must not reach a later child either.
        self.pending.fail_all(&WorkerError::Exited(status));
        self.outbox.end_connection();
        if in_doubt > 0 {
            self.emit(Event::MaybeLost(in_doubt));
        }
        // Nothing of the process is held any more (its pidfd closes with
        // the last handle, the socket closed with the reader and writer)
        // by the time its exit is told.
        let events = std::mem::replace(&mut self.events, Events::new(EventSink::Log, 4));
        let (name, pid) = (self.name.clone(), handle.pid());
        drop(self);
        drop(handle);
        // Queued now, after every other event of the process and before
        // anything the actor says about a restart.
        let mut events = events;
        events.emit(WorkerEvent { name, pid, kind: Event::Exit(status) });
        events.keep_marks();
        LinkExit { status, certain }
    }

    /// Reads until the connection ends (noting the exit when it comes
    /// first: the socket is then read to its end).
    pub(crate) async fn read(
        &mut self,
        reader: &mut Reader,
        wait: &mut Pin<Box<dyn Future<Output = ExitStatus>>>,
        status: &mut Option<ExitStatus>,
    ) {
        loop {
            // Hold back while the recipient or the replies are behind.
            while let Some(behind) = self.behind(status.is_none()) {
                tokio::select! {
                    _ = behind => {}
                    s = wait.as_mut(), if status.is_none() => *status = Some(s),
                }
            }
            tokio::select! {
                item = reader.next() => {
                    // What is already read goes without another round of
                    // the select, within the budget and the windows.
                    let mut next = Some(item);
                    let mut handled = 0;
                    while let Some(item) = next {
                        if !self.handle_item(item) {
                            return;
                        }
                        handled += 1;
                        if handled == BUDGET {
                            tokio::task::yield_now().await;
                            break;
                        }
                        // Only a request adds to the replies owed.
                        let asked = std::mem::take(&mut self.asked);
                        if self.events.behind()
                            || (asked && status.is_none() && self.outbox.replies_over())
                        {
                            break;
                        }
                        next = reader.next_ready();
                    }
                }
                // The child is gone and its group killed: keep reading
                // until the socket drains to its end.
                s = wait.as_mut(), if status.is_none() => *status = Some(s),
            }
        }
    }

    /// A future that resolves once the reading may go on, when it may not.
    /// Replies hold the reading back only while the process lives: once it
    /// has exited, none can be written, and the socket is read to its end.
    fn behind(&mut self, alive: bool) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        if let Some(oldest) = self.events.oldest_behind() {
            return Some(oldest);
        }
        if alive && self.outbox.replies_over() {
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

    /// Hello each way; `Err(None)` when the child closed the socket first.
    async fn handshake(
        &self,
        sock: std::os::unix::net::UnixStream,
    ) -> Result<(Reader, Writer), Option<WireError>> {
        let mut conn = socket::open(sock, self.max_message_size).await.map_err(Some)?;
        // A send error means the child is gone already; its EOF says so below.
        let _ = conn.send(frame::hello(self.fingerprint)).await;
        let hello = conn.recv_hello(self.fingerprint).await?;
        // The worker is the process started, or one it started in turn
        // (`args` may wrap it: a debugger, `sh -c`).
        if !self.handle.is_self_or_descendant(hello.pid) {
            return Err(Some(WireError::WrongPeer { ours: self.handle.pid(), theirs: hello.pid }));
        }
        let (reader, sink) = conn.split();
        Ok((reader, Writer::new(sink)))
    }

    /// Handles what the reader gave; false at the end of the connection.
    fn handle_item(&mut self, item: Option<Result<Inbound, WireError>>) -> bool {
        match item {
            None => false,
            Some(Ok(inbound)) => {
                self.dispatch(inbound);
                true
            }
            Some(Err(e)) => {
                // Framing is broken: nothing after this can be trusted to be
                // in step.
                self.emit(Event::WireError(e));
                self.handle.signal_group(libc::SIGKILL);
                false
            }
        }
    }

    fn dispatch(&mut self, inbound: Inbound) {
        match inbound.header.kind {
            Kind::Post => match codec::decode::<P::FromWorker>(inbound.payload()) {
                Ok(data) => self.emit(Event::Message(Received::new(data, inbound.fds))),
                Err(e) => self.emit(Event::WireError(e)),
            },
            Kind::Error => match codec::decode::<ErrorReport>(inbound.payload()) {
                Ok(report) => self.emit(Event::Error(report)),
                Err(e) => self.emit(Event::WireError(e)),
            },
            Kind::Closing => (self.on_closing)(),
            Kind::Hello => self.emit(Event::WireError(WireError::Unexpected("second hello"))),
            Kind::Terminate => self.emit(Event::WireError(WireError::Unexpected("terminate"))),
            // The reader opens batches; this one came some other way.
            Kind::Batch => self.emit(Event::WireError(WireError::Unexpected("batch"))),
            Kind::Refused => self.emit(Event::WireError(WireError::Unexpected("refusal"))),
            Kind::Request => {
                self.asked = true;
                self.handlers.dispatch(&inbound, &self.outbox, self.max_message_size);
            }
            Kind::Answer | Kind::Failed => resolve_frame(&self.pending, inbound),
        }
    }
}
