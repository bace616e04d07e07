//! The worker's handle on its parent: `postMessage` and `close()` from the
//! worker's side.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::WorkerError;
use crate::protocol::{Protocol, Request};
use crate::session::sender::Sender;

/// The parent, as seen from inside a worker: post messages to it and close
/// the worker. Cheap to clone; give it to whatever in the worker needs it.
pub struct Parent<P: Protocol> {
    sender: Sender,
    close: Arc<Notify>,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Clone for Parent<P> {
    fn clone(&self) -> Self {
        Parent { sender: self.sender.clone(), close: self.close.clone(), _protocol: PhantomData }
    }
}

impl<P: Protocol> Parent<P> {
    pub(crate) fn new(sender: Sender, close: Arc<Notify>) -> Self {
        Parent { sender, close, _protocol: PhantomData }
    }

    /// Asks the parent a typed [`Request`]: the actor the parent named with
    /// [`WorkerBuilder::serve`](crate::WorkerBuilder::serve) answers it.
    /// Fails with [`WorkerError::Disconnected`] when the parent goes away
    /// first, [`WorkerError::Unhandled`] when it serves no such request.
    pub fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.sender.ask(&request, None)
    }

    /// [`ask`](Self::ask), giving up after `limit` with
    /// [`WorkerError::Timeout`].
    pub fn ask_timeout<R: Request>(
        &self,
        request: R,
        limit: Duration,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.sender.ask(&request, Some(limit))
    }

    /// Posts a message to the parent: its `onmessage` (an
    /// [`Event::Message`](crate::Event::Message)) sees it.
    pub fn post(&self, data: P::FromWorker) -> Result<(), WorkerError> {
        self.post_with_fds(data, Vec::new())
    }

    /// Posts a message with descriptors; the parent receives them with
    /// exactly this message.
    pub fn post_with_fds(&self, data: P::FromWorker, fds: Vec<OwnedFd>) -> Result<(), WorkerError> {
        self.sender.post(None, &data, fds)
    }

    /// Closes the worker from inside (the `close()` of a Web Worker): its
    /// `on_close` runs, what it posted is flushed, and it exits with code 0.
    /// The parent sees a clean exit, which is never restarted.
    pub fn close(&self) {
        self.close.notify_one();
    }
}
