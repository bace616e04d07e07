//! The life of one worker process, seen from the parent: handshake, the
//! reading loop that turns frames into events, and the wait for the exit.
//!
//! One task per child process owns all of it, so the events of one process
//! reach the recipient in the order they happened, and its exit event comes
//! last, exactly once. The writer runs as a second task beside it, draining
//! the worker's outbox; it is stopped when the connection ends.

use std::rc::Rc;
use std::sync::Arc;

use actix::{Recipient, WeakAddr};

use super::events::{Event, Received, WorkerEvent};
use super::spawn::ChildHandle;
use super::worker::{ChildExited, Worker};
use crate::error::{ErrorReport, ExitStatus, WireError, WorkerError};
use crate::protocol::Protocol;
use crate::request::{resolve_frame, Handlers, Pending};
use crate::wire::codec;
use crate::wire::frame::{self, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::socket::{self, Inbound, Reader};

/// Everything the task needs about its child.
pub(crate) struct Link<P: Protocol> {
    pub name: Arc<str>,
    pub handle: Arc<ChildHandle>,
    pub outbox: Arc<Outbox>,
    pub pending: Arc<Pending>,
    pub handlers: Rc<Handlers>,
    pub events: Option<Recipient<WorkerEvent<P>>>,
    pub worker: WeakAddr<Worker<P>>,
    pub max_message_size: usize,
    pub fingerprint: u64,
    pub generation: u64,
}

impl<P: Protocol> Link<P> {
    fn emit(&self, kind: Event<P>) {
        if let Some(events) = &self.events {
            events.do_send(WorkerEvent { name: self.name.clone(), pid: self.handle.pid(), kind });
        }
    }

    /// Runs the connection to the end, then reports the exit.
    pub(crate) async fn run(self, sock: std::os::unix::net::UnixStream) {
        let mut writer_task = None;
        let reader = match self.handshake(sock).await {
            Ok((reader, writer)) => {
                self.emit(Event::Online);
                let outbox = self.outbox.clone();
                writer_task = Some(actix_rt::spawn(async move {
                    if let Err(e) = writer.run(outbox).await {
                        tracing::debug!(error = %e, "worker connection writer stopped");
                    }
                }));
                Some(reader)
            }
            Err(Some(e)) => {
                self.emit(Event::WireError(e));
                self.handle.signal_group(libc::SIGKILL);
                None
            }
            Err(None) => None, // the child went away before saying hello
        };

        let wait = self.handle.wait();
        tokio::pin!(wait);
        let mut status: Option<ExitStatus> = None;
        if let Some(mut reader) = reader {
            'read: loop {
                tokio::select! {
                    item = reader.next() => {
                        // Everything already read goes in one go.
                        let mut next = Some(item);
                        while let Some(item) = next {
                            if !self.handle_item(item) {
                                break 'read;
                            }
                            next = reader.next_ready();
                        }
                    }
                    // The child is gone and its group killed: keep reading
                    // until the socket drains to its end.
                    s = &mut wait, if status.is_none() => status = Some(s),
                }
            }
            let count = reader.unclaimed_fds();
            if count > 0 {
                // They are closed with the reader; the event says so.
                self.emit(Event::WireError(WireError::UnclaimedFds { count }));
            }
        }
        if let Some(task) = writer_task {
            task.abort();
        }
        let status = match status {
            Some(s) => s,
            None => wait.await,
        };
        // In-flight requests fail now (at most once): those still queued
        // must not reach a later child either.
        self.pending.fail_all(&WorkerError::Exited(status));
        self.outbox.drop_requests();
        self.emit(Event::Exit(status));
        if let Some(worker) = self.worker.upgrade() {
            worker.do_send(ChildExited { generation: self.generation, status });
        }
    }

    /// Hello each way; `Err(None)` when the child closed the socket first.
    async fn handshake(
        &self,
        sock: std::os::unix::net::UnixStream,
    ) -> Result<(Reader, socket::Writer), Option<WireError>> {
        let mut conn = socket::open(sock, self.max_message_size).await.map_err(Some)?;
        // A send error means the child is gone already; its EOF says so below.
        let _ = conn.send(frame::hello(self.fingerprint)).await;
        conn.recv_hello(self.fingerprint).await?;
        Ok(conn.split())
    }

    /// Handles what the reader gave; false at the end of the connection.
    fn handle_item(&self, item: Option<Result<Inbound, WireError>>) -> bool {
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

    fn dispatch(&self, inbound: Inbound) {
        match inbound.header.kind {
            Kind::Post => match codec::decode::<P::FromWorker>(inbound.payload()) {
                Ok(data) => self.emit(Event::Message(Received::new(data, inbound.fds))),
                Err(e) => self.emit(Event::WireError(e)),
            },
            Kind::Error => match codec::decode::<ErrorReport>(inbound.payload()) {
                Ok(report) => self.emit(Event::Error(report)),
                Err(e) => self.emit(Event::WireError(e)),
            },
            Kind::Closing => {
                if let Some(worker) = self.worker.upgrade() {
                    worker.do_send(super::worker::ChildClosing { generation: self.generation });
                }
            }
            Kind::Hello => self.emit(Event::WireError(WireError::Unexpected("second hello"))),
            Kind::Terminate => self.emit(Event::WireError(WireError::Unexpected("terminate"))),
            // The reader opens batches; this one came some other way.
            Kind::Batch => self.emit(Event::WireError(WireError::Unexpected("batch"))),
            Kind::Request => self.handlers.dispatch(&inbound, &self.outbox, self.max_message_size),
            Kind::Answer | Kind::Failed => resolve_frame(&self.pending, inbound),
        }
    }
}
