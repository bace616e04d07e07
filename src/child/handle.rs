//! The worker's handle on its parent: `postMessage` and `close()` from the
//! worker's side.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::WorkerError;
use crate::protocol::Codec;
use crate::protocol::{tag_of, Protocol, Request};
use crate::session::requests::{answer, Pending};
use crate::wire::encode::{descriptors, encode_sharing};
use crate::wire::envelope::Header;
use crate::wire::outbox::Outbox;

/// The parent, as seen from inside a worker: post messages to it and close
/// the worker. Cheap to clone; give it to whatever in the worker needs it.
pub struct Parent<P: Protocol> {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) max_message_size: usize,
    /// How the connection's payloads are written.
    pub(crate) codec: Codec,
    /// Whether the connection carries descriptors (not to a remote parent).
    pub(crate) fds_ok: bool,
    pub(crate) close: Arc<Notify>,
    pub(crate) pending: Arc<Pending>,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Clone for Parent<P> {
    fn clone(&self) -> Self {
        Parent {
            outbox: self.outbox.clone(),
            max_message_size: self.max_message_size,
            codec: self.codec,
            fds_ok: self.fds_ok,
            close: self.close.clone(),
            pending: self.pending.clone(),
            _protocol: PhantomData,
        }
    }
}

impl<P: Protocol> Parent<P> {
    pub(crate) fn new(
        outbox: Arc<Outbox>,
        (codec, max_message_size, fds_ok): (Codec, usize, bool),
        close: Arc<Notify>,
        pending: Arc<Pending>,
    ) -> Self {
        Parent { outbox, max_message_size, codec, fds_ok, close, pending, _protocol: PhantomData }
    }

    /// Asks the parent a typed [`Request`]: the actor the parent named with
    /// [`WorkerBuilder::serve`](crate::WorkerBuilder::serve) answers it.
    /// Fails with [`WorkerError::Disconnected`] when the parent goes away
    /// first, [`WorkerError::Unhandled`] when it serves no such request.
    pub fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.ask_within(request, None)
    }

    /// [`ask`](Self::ask), giving up after `limit` with
    /// [`WorkerError::Timeout`].
    pub fn ask_timeout<R: Request>(
        &self,
        request: R,
        limit: Duration,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.ask_within(request, Some(limit))
    }

    fn ask_within<R: Request>(
        &self,
        request: R,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        let id = self.pending.next_id();
        let answer = answer::<R::Answer>(&self.pending, id, limit);
        let header = Header::request(id, tag_of::<R>());
        let fds = self.fds_ok.then(Vec::new);
        let sent = encode_sharing(self.codec, header, &request, fds, self.max_message_size)
            .and_then(|(bytes, fds)| self.outbox.push(bytes, fds));
        if sent.is_err() {
            self.pending.cancel(id);
        }
        async move {
            sent?;
            answer.await
        }
    }

    /// Posts a message to the parent: its `onmessage` (an
    /// [`Event::Message`](crate::Event::Message)) sees it.
    pub fn post(&self, data: P::FromWorker) -> Result<(), WorkerError> {
        self.post_with_fds(data, Vec::new())
    }

    /// Posts a message with descriptors; the parent receives them with
    /// exactly this message.
    pub fn post_with_fds(&self, data: P::FromWorker, fds: Vec<OwnedFd>) -> Result<(), WorkerError> {
        let header = Header::post(fds.len())?;
        let fds = descriptors(self.fds_ok, fds)?;
        let (bytes, fds) = encode_sharing(self.codec, header, &data, fds, self.max_message_size)?;
        self.outbox.push(bytes, fds)
    }

    /// Closes the worker from inside (the `close()` of a Web Worker): its
    /// `on_close` runs, what it posted is flushed, and it exits with code 0.
    /// The parent sees a clean exit, which is never restarted.
    pub fn close(&self) {
        self.close.notify_one();
    }
}
