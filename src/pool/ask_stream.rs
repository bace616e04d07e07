//! A streamed request to a pool ([`AskStream`]): routed as an ask is, to
//! the member with room and the fewest in flight, or behind those that
//! wait; counted in flight on that member until its stream ends (complete,
//! failed, or cancelled by its reader), so that a member busy streaming
//! is given less.

use actix::{Context, Handler, ResponseFuture};
use tokio::sync::oneshot;

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
    /// The caller's; closed if it went away.
    reply: oneshot::Sender<AnswerStream<R::Item>>,
}

impl<P: Protocol, R: StreamRequest> Queued<WorkerPool<P>> for QueuedStream<R> {
    fn cancelled(&self) -> bool {
        self.reply.is_closed()
    }

    fn dispatch(self: Box<Self>, pool: &mut WorkerPool<P>, at: usize) {
        let QueuedStream { request, caller, window, reply } = *self;
        let stream = pool.prepare(at).stream((request, caller), window);
        crate::session::spawn_boxed(async move {
            let _ = reply.send(stream.await);
        });
    }

    fn refuse(self: Box<Self>, e: WorkerError) {
        let _ = self.reply.send(AnswerStream::refused(e));
    }

    fn expire(self: Box<Self>) {
        // Streamed requests wait with no deadline: never called.
        Queued::<WorkerPool<P>>::refuse(self, WorkerError::Disconnected);
    }
}

impl<P: Protocol, R: StreamRequest> Handler<AskStream<R>> for WorkerPool<P> {
    type Result = ResponseFuture<AnswerStream<R::Item>>;

    fn handle(&mut self, msg: AskStream<R>, ctx: &mut Context<Self>) -> Self::Result {
        let (request, window, caller) = msg.into_parts();
        match self.route(ctx) {
            Route::To(prepared) => Box::pin(prepared.stream((request, caller), window)),
            Route::Refused(e) => Box::pin(std::future::ready(AnswerStream::refused(e))),
            Route::Queue(queue) => {
                let (reply, rx) = oneshot::channel();
                let queued = QueuedStream { request, caller, window, reply };
                queue.borrow_mut().push(Box::new(queued), None);
                Box::pin(async move {
                    rx.await.unwrap_or_else(|_| AnswerStream::refused(WorkerError::Disconnected))
                })
            }
        }
    }
}
