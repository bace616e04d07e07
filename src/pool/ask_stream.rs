//! A streamed request to a pool ([`AskStream`]): routed as an ask is, to
//! the member with room and the fewest in flight, or behind those that
//! wait; counted in flight on that member until its stream ends (complete,
//! failed, or cancelled by its reader), so that a member busy streaming
//! is given less.

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Context, Handler};

use super::ask::{Prepared, Route};
use super::queue::Queued;
use super::worker_pool::WorkerPool;
use crate::error::WorkerError;
use crate::parent::ask_stream::{AskStream, ForwardStream};
use crate::protocol::Protocol;
use crate::session::streams::AnswerStream;
use crate::session::trace::Caller;
use crate::streamed::StreamRequest;

impl<P: Protocol> Prepared<P> {
    /// Hands streamed `request` to the member; the stream, once it has it.
    fn stream<R: StreamRequest>(
        self,
        (request, caller): (R, Caller),
        window: usize,
    ) -> impl std::future::Future<Output = AnswerStream<R::Item>> + use<P, R> {
        let Prepared { member, to, load, common, started } = self;
        let caller = Some(caller.with_member(member));
        let after = Box::new(move |end: Result<(), &WorkerError>| {
            let exited = matches!(end, Err(WorkerError::Exited(_)));
            common.finished(&load, end.is_ok(), exited, started);
        });
        let forward = ForwardStream { request: Some(request), window, after: Some(after), caller };
        let sent = to.addr().send(forward);
        async move { sent.await.unwrap_or_else(|_| AnswerStream::refused(WorkerError::Disconnected)) }
    }
}

/// A streamed request waiting in the pool's queue for a member with room.
struct QueuedStream<R: StreamRequest> {
    request: R,
    caller: Caller,
    window: usize,
    /// The caller's own reply channel: closed once it went (a channel of
    /// the pool's, awaited by a task, would stay open, and the request
    /// queued, until a member took it).
    reply: Option<OneshotSender<AnswerStream<R::Item>>>,
}

impl<P: Protocol, R: StreamRequest> Queued<WorkerPool<P>> for QueuedStream<R> {
    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn dispatch(self: Box<Self>, pool: &mut WorkerPool<P>, at: usize) {
        let QueuedStream { request, caller, window, reply } = *self;
        hand_on(pool.prepare(at).stream((request, caller), window), reply);
    }

    fn refuse(self: Box<Self>, e: WorkerError) {
        if let Some(tx) = self.reply {
            let _ = tx.send(AnswerStream::refused(e));
        }
    }

    fn expire(self: Box<Self>) {
        // Streamed requests wait with no deadline: never called.
        Queued::<WorkerPool<P>>::refuse(self, WorkerError::Disconnected);
    }
}

/// Gives the caller its stream once the member has it; a caller gone
/// drops it, which cancels it.
fn hand_on<T: Send + 'static>(
    stream: impl std::future::Future<Output = AnswerStream<T>> + 'static,
    reply: Option<OneshotSender<AnswerStream<T>>>,
) {
    crate::session::spawn_boxed(async move {
        let stream = stream.await;
        if let Some(tx) = reply {
            let _ = tx.send(stream);
        }
    });
}

impl<P: Protocol, R: StreamRequest> Handler<AskStream<R>> for WorkerPool<P> {
    type Result = PoolStream<P, R>;

    fn handle(&mut self, msg: AskStream<R>, ctx: &mut Context<Self>) -> PoolStream<P, R> {
        let (request, window, caller) = msg.into_parts();
        PoolStream { request: (request, caller), window, route: self.route(ctx) }
    }
}

/// How an [`AskStream`] to a pool resolves. You never need to name this
/// type.
pub struct PoolStream<P: Protocol, R: StreamRequest> {
    request: (R, Caller),
    window: usize,
    route: Route<P>,
}

impl<P: Protocol, R: StreamRequest> MessageResponse<WorkerPool<P>, AskStream<R>>
    for PoolStream<P, R>
{
    fn handle(
        self,
        _: &mut Context<WorkerPool<P>>,
        tx: Option<OneshotSender<AnswerStream<R::Item>>>,
    ) {
        let PoolStream { request, window, route } = self;
        match route {
            Route::To(prepared) => hand_on(prepared.stream(request, window), tx),
            Route::Refused(e) => {
                if let Some(tx) = tx {
                    let _ = tx.send(AnswerStream::refused(e));
                }
            }
            // Waits with its caller's own reply channel, so that the
            // pool's sweep sees the caller go.
            Route::Queue(queue) => {
                let (request, caller) = request;
                let queued = QueuedStream { request, caller, window, reply: tx };
                queue.borrow_mut().push(Box::new(queued), None);
            }
        }
    }
}
