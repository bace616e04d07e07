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
use crate::session::data::{Data, DataError};
use crate::session::sender::Sender;
use crate::session::streams::{AnswerStream, DEFAULT_STREAM_WINDOW};
use crate::streamed::StreamRequest;

/// The parent, as seen from inside a worker: post messages to it and close
/// the worker. Cheap to clone; give it to whatever in the worker needs it.
pub struct Parent<P: Protocol> {
    sender: Sender,
    close: Arc<Notify>,
    /// What the parent gave this worker to start with, if anything.
    data: Option<Arc<Data>>,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Clone for Parent<P> {
    fn clone(&self) -> Self {
        let (sender, close, data) = (self.sender.clone(), self.close.clone(), self.data.clone());
        Parent { sender, close, data, _protocol: PhantomData }
    }
}

impl<P: Protocol> Parent<P> {
    pub(crate) fn new(sender: Sender, close: Arc<Notify>, data: Option<Data>) -> Self {
        Parent { sender, close, data: data.map(Arc::new), _protocol: PhantomData }
    }

    /// The data the parent gave this worker
    /// ([`WorkerBuilder::data`](crate::WorkerBuilder::data), the
    /// `workerData` of Node), as a `T`: typically read as the actor is
    /// made. Fails with [`DataError::Missing`] when the parent gave none,
    /// [`DataError::OtherType`] (naming `T`) when it gave a value of
    /// another serde shape. Each call decodes it afresh.
    ///
    /// ```no_run
    /// # use actix::prelude::*;
    /// # use actix_webworker::{DataError, Entry, Parent, Protocol, Received, WorkerActor};
    /// # struct Calc;
    /// # impl Protocol for Calc { type ToWorker = (); type FromWorker = (); }
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Config { scale: u32, model: String }
    ///
    /// struct Scaler { parent: Parent<Calc>, config: Config }
    /// # impl Actor for Scaler { type Context = Context<Self>; }
    /// # impl WorkerActor for Scaler { type Protocol = Calc; }
    /// # impl Handler<Received<()>> for Scaler {
    /// #     type Result = ();
    /// #     fn handle(&mut self, _: Received<()>, _: &mut Context<Self>) {}
    /// # }
    ///
    /// let entry = Entry::new("scale", |parent: Parent<Calc>| {
    ///     let config: Config = parent.data().expect("the parent gives a Config");
    ///     Scaler { parent, config }
    /// });
    /// ```
    pub fn data<T>(&self) -> Result<T, DataError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.data.as_ref().ok_or(DataError::Missing)?.read()
    }

    /// Asks the parent a typed [`Request`]: the actor the parent named with
    /// [`WorkerBuilder::serve`](crate::WorkerBuilder::serve) answers it.
    /// Fails with [`WorkerError::Disconnected`] when the parent goes away
    /// first, [`WorkerError::Unhandled`] when it serves no such request.
    pub fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.sender.ask::<P, R>(&request, None)
    }

    /// [`ask`](Self::ask), giving up after `limit` with
    /// [`WorkerError::Timeout`].
    pub fn ask_timeout<R: Request>(
        &self,
        request: R,
        limit: Duration,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> {
        self.sender.ask::<P, R>(&request, Some(limit))
    }

    /// Asks the parent a [`StreamRequest`] and reads its items as the
    /// parent produces them ([`WorkerBuilder::serve_stream`](crate::WorkerBuilder::serve_stream)
    /// answers it), with a window of
    /// [`DEFAULT_STREAM_WINDOW`](crate::DEFAULT_STREAM_WINDOW) bytes:
    /// the parent's producer waits while this worker has that much unread.
    /// Dropping the stream cancels the request in the parent.
    pub fn ask_stream<R: StreamRequest>(&self, request: R) -> AnswerStream<R::Item> {
        self.ask_stream_window(request, DEFAULT_STREAM_WINDOW)
    }

    /// [`ask_stream`](Self::ask_stream) with a window of `bytes` (at least
    /// 1, at most 1 GiB).
    pub fn ask_stream_window<R: StreamRequest>(
        &self,
        request: R,
        bytes: usize,
    ) -> AnswerStream<R::Item> {
        self.sender.ask_stream::<P, R>(&request, bytes)
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
