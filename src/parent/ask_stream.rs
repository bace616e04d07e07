//! [`AskStream`]: a request to a worker whose answer is a stream of items,
//! read as they come ([`AnswerStream`]), and how the `Worker` actor queues
//! it (as it queues an [`Ask`](crate::Ask): in order, waiting for room
//! when the limits say so, made for one process); and the other way, the
//! builder's `serve_stream`, how the parent answers a worker's.

use std::sync::Arc;

use actix::{Context, Handler, Message, MessageResult};

use super::builder::WorkerBuilder;
use super::worker::Worker;
use crate::error::WorkerError;
use crate::protocol::Protocol;
use crate::session::declared::describe;
use crate::session::streams::{AfterStream, AnswerStream, Asking, DEFAULT_STREAM_WINDOW};
use crate::session::trace::Caller;
use crate::streamed::{StreamRequest, Streamed};

/// Asks the worker a [`StreamRequest`] and gives the stream of its items.
///
/// ```no_run
/// # use actix::prelude::*;
/// # use actix_webworker::{AskStream, Protocol, Streamed, Worker, WorkerError};
/// # use serde::{Deserialize, Serialize};
/// use futures_util::StreamExt;
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "Streamed<u64>")]
/// struct Squares(u64);
/// # struct Calc;
/// # impl Protocol for Calc { type ToWorker = (); type FromWorker = (); }
///
/// async fn sum(worker: &Addr<Worker<Calc>>) -> Result<u64, WorkerError> {
///     let mut squares = worker.send(AskStream::new(Squares(10))).await
///         .map_err(|_| WorkerError::Disconnected)?;
///     let mut sum = 0;
///     while let Some(square) = squares.next().await {
///         sum += square?;
///     }
///     Ok(sum)
/// }
/// ```
///
/// The worker's producer runs ahead of the reader by at most the
/// [`window`](AskStream::window) (default
/// [`DEFAULT_STREAM_WINDOW`], 256 KiB of items); a reader that stops
/// reading stops it. Dropping the stream cancels the request: the worker
/// drops its producer. When the worker exits mid-stream, the last item is
/// [`WorkerError::Exited`]; a refused request (the worker terminating,
/// its queue full) is a stream whose only item is the refusal.
pub struct AskStream<R> {
    request: R,
    window: usize,
    /// Where it was made (the span current there), for its asking span.
    caller: Caller,
}

impl<R> AskStream<R> {
    /// A streamed request with the default window.
    pub fn new(request: R) -> Self {
        AskStream { request, window: DEFAULT_STREAM_WINDOW, caller: Caller::here() }
    }

    /// The bytes of items (whole messages: 10 bytes of header and the
    /// item's payload) the worker may send ahead of the reader: at least
    /// 1 (one item at a time), at most 1 GiB. What the parent holds of
    /// the stream unread is at most this and one item.
    pub fn window(mut self, bytes: usize) -> Self {
        self.window = bytes;
        self
    }

    /// The request, its window and its caller (a pool forwards them).
    pub(crate) fn into_parts(self) -> (R, usize, Caller) {
        (self.request, self.window, self.caller)
    }
}

impl<R: StreamRequest> Message for AskStream<R> {
    type Result = AnswerStream<R::Item>;
}

impl<P: Protocol, R: StreamRequest> Handler<AskStream<R>> for Worker<P> {
    type Result = MessageResult<AskStream<R>>;

    fn handle(&mut self, msg: AskStream<R>, ctx: &mut Context<Self>) -> Self::Result {
        let started = super::stats::sampled();
        let recorder = self.recorder.clone();
        let after =
            Box::new(move |end: Result<(), &WorkerError>| recorder.finish(end.is_ok(), started));
        let asked = (msg.request, msg.caller);
        MessageResult(self.ask_stream(asked, msg.window, Some(after), ctx))
    }
}

/// An [`AskStream`] from a pool: `after` is told how the stream ended, so
/// that the member counts it in flight until then; told the worker is gone
/// if the message is dropped unhandled.
pub(crate) struct ForwardStream<R> {
    pub request: Option<R>,
    pub window: usize,
    pub after: Option<AfterStream>,
    pub caller: Option<Caller>,
}

impl<R> Drop for ForwardStream<R> {
    fn drop(&mut self) {
        if let Some(after) = self.after.take() {
            after(Err(&WorkerError::Disconnected));
        }
    }
}

impl<R: StreamRequest> Message for ForwardStream<R> {
    type Result = AnswerStream<R::Item>;
}

impl<P: Protocol, R: StreamRequest> Handler<ForwardStream<R>> for Worker<P> {
    type Result = MessageResult<ForwardStream<R>>;

    fn handle(&mut self, mut msg: ForwardStream<R>, ctx: &mut Context<Self>) -> Self::Result {
        let (Some(request), Some(caller)) = (msg.request.take(), msg.caller.take()) else {
            return MessageResult(AnswerStream::refused(WorkerError::Disconnected));
        };
        MessageResult(self.ask_stream((request, caller), msg.window, msg.after.take(), ctx))
    }
}

impl<P: Protocol, K> WorkerBuilder<P, K> {
    /// Answers the worker's streamed requests of type `R` (its
    /// [`Parent::ask_stream`](crate::Parent::ask_stream)) with the items
    /// `produce` returns for each, produced on the parent's arbiter as the
    /// worker makes room for them; dropped when the worker stops reading.
    pub fn serve_stream<R: StreamRequest>(
        mut self,
        produce: impl Fn(R) -> Streamed<R::Item> + 'static,
    ) -> Self {
        let tag = crate::session::declared::answered_tag::<P, R>();
        self.handlers.insert_stream::<R>(tag, move |req, reply| {
            crate::session::produce::produce(reply, produce(req));
        });
        self
    }
}

impl<P: Protocol> Worker<P> {
    /// Encodes and queues a streamed request, its slot in the table of
    /// requests first; the stream its caller reads.
    pub(super) fn ask_stream<R: StreamRequest>(
        &mut self,
        (request, caller): (R, Caller),
        window: usize,
        after: Option<AfterStream>,
        ctx: &mut Context<Self>,
    ) -> AnswerStream<R::Item> {
        let pending = self.sender.pending.clone();
        let asking = Asking::new::<R>(&pending, window, (caller, self.as_peer()));
        let encoded = self.check_open().and_then(|()| {
            let arena = Some(&mut self.arena);
            self.sender.encoding.stream_request::<P, R>(arena, &asking, &request)
        });
        let (bytes, fds) = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                pending.forget(asking.id);
                return refused(e, after);
            }
        };
        let (slot, stream) = asking.halves::<R::Item>(&pending, after);
        pending.attach(asking.id, describe::<P, R>, slot);
        if let Err(e) = self.queue(bytes, fds, Some(asking.id), ctx) {
            // Never queued: nothing to cancel; its slot says why.
            forget(&pending, asking.id, e);
        }
        stream
    }
}

/// A stream refused before it was asked; `after` hears it failed.
fn refused<T>(e: WorkerError, after: Option<AfterStream>) -> AnswerStream<T> {
    if let Some(after) = after {
        after(Err(&e));
    }
    AnswerStream::refused(e)
}

/// Fails request `id`, which was never queued, with `e`, through its slot.
fn forget(pending: &Arc<crate::session::requests::Pending>, id: u64, e: WorkerError) {
    pending.resolve(id, Err(e));
}
