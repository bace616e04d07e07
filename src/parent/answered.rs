//! Where the answer of a request a pool hands to a member goes: to
//! [`Answered`], which does the pool's accounting and replies to the caller
//! through whatever channel the caller's message came with ([`Reply`]):
//! actix's reply channel of an `Ask`, or of a pool's `Enter`, whose reply
//! also carries a request handed back.

use std::marker::PhantomData;
use std::time::Duration;

use actix::dev::OneshotSender;
use actix::{Context, Handler, Message};
use serde::de::DeserializeOwned;

use super::worker::{Asked, Worker};
use crate::error::WorkerError;
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::{decoded, Counted, Slot};
use crate::session::trace::Caller;
use crate::wire::ws::reader::Inbound;

/// Where a caller waits for the result of its request.
pub(crate) trait Reply<A>: Send + 'static {
    fn send(self, result: Result<A, WorkerError>);

    /// Whether the caller has gone.
    fn is_closed(&self) -> bool;

    /// Resolves once the caller has gone.
    fn closed(&mut self) -> impl std::future::Future<Output = ()>;
}

impl<A: Send + 'static> Reply<A> for OneshotSender<Result<A, WorkerError>> {
    fn send(self, result: Result<A, WorkerError>) {
        let _ = OneshotSender::send(self, result);
    }

    fn is_closed(&self) -> bool {
        OneshotSender::is_closed(self)
    }

    fn closed(&mut self) -> impl std::future::Future<Output = ()> {
        OneshotSender::closed(self)
    }
}

/// An [`Ask`] whose answer goes to `then` instead of a reply channel: how
/// a pool hands a request to one of its members, without a task or a
/// channel of its own per request.
pub(crate) struct Forward<
    R: Request,
    T: Reply<R::Answer> = OneshotSender<Result<<R as Request>::Answer, WorkerError>>,
> {
    pub request: R,
    pub timeout: Option<Duration>,
    pub then: Answered<R::Answer, After<R::Answer>, T>,
    /// Where the ask came from, and which member took it.
    pub caller: Caller,
}

impl<R: Request, T: Reply<R::Answer>> Message for Forward<R, T> {
    type Result = ();
}

impl<P: Protocol, R: Request, T: Reply<R::Answer>> Handler<Forward<R, T>> for Worker<P> {
    type Result = ();

    fn handle(&mut self, msg: Forward<R, T>, ctx: &mut Context<Self>) {
        let then = msg.then;
        match self.ask((msg.request, msg.caller), msg.timeout, ctx) {
            Asked::Ready(result) => then.call(result),
            Asked::Waiting { id, pending } => pending.attach(id, describe::<P, R>, Box::new(then)),
            // A timed request: given up (cancelled in the worker) when its
            // caller goes, as an untimed one is by the sweep.
            Asked::Later(fut) => {
                crate::session::spawn_boxed(async move {
                    let mut then = then;
                    if let Some(result) = unless_gone(fut, then.closed()).await {
                        then.call(result);
                    }
                });
            }
        }
    }
}

/// What is done with the answer to a forwarded request: exactly once, with
/// the answer or the failure, or with [`WorkerError::Disconnected`] when it
/// is dropped first (the worker's actor is gone): `after` sees it, then the
/// caller gets it.
pub(crate) struct Answered<
    A,
    F: FnOnce(&Result<A, WorkerError>) = After<A>,
    T: Reply<A> = OneshotSender<Result<A, WorkerError>>,
> {
    tx: Option<T>,
    after: Option<F>,
    answer: PhantomData<fn(A)>,
}

/// What an [`Answered`] does before the caller gets its result, when its
/// type is not known (a pool names its own, and saves the box).
pub(crate) type After<A> = Box<dyn FnOnce(&Result<A, WorkerError>) + Send>;

impl<A, F: FnOnce(&Result<A, WorkerError>), T: Reply<A>> Answered<A, F, T> {
    pub(crate) fn new(tx: Option<T>, after: F) -> Self {
        Answered { tx, after: Some(after), answer: PhantomData }
    }

    pub(crate) fn call(mut self, result: Result<A, WorkerError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<A, WorkerError>) {
        if let Some(after) = self.after.take() {
            after(&result);
        }
        if let Some(tx) = self.tx.take() {
            tx.send(result);
        }
    }

    /// Whether nobody waits for the result any more.
    pub(crate) fn gone(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    /// Resolves once a caller that waited has gone (never for one that
    /// did not wait: its request runs to its end).
    async fn closed(&mut self) {
        match &mut self.tx {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }
}

/// `fut`'s output, or `None` if `gone` resolves first: `fut` is then
/// dropped (a request's answer future cancels its request).
pub(crate) async fn unless_gone<T>(
    fut: impl std::future::Future<Output = T> + Unpin,
    gone: impl std::future::Future<Output = ()>,
) -> Option<T> {
    let gone = std::pin::pin!(gone);
    match futures_util::future::select(fut, gone).await {
        futures_util::future::Either::Left((output, _)) => Some(output),
        futures_util::future::Either::Right(_) => None,
    }
}

impl<A: DeserializeOwned, F: FnOnce(&Result<A, WorkerError>), T: Reply<A>> Answered<A, F, T> {
    /// The answer as it came (decoded here), or the failure.
    pub(crate) fn deliver_inbound(self, result: Result<Inbound, WorkerError>) {
        self.call(decoded(result));
    }
}

impl<A, F, T> Slot for Answered<A, F, T>
where
    A: DeserializeOwned + Send + 'static,
    F: FnOnce(&Result<A, WorkerError>) + Send + 'static,
    T: Reply<A>,
{
    fn deliver(self: Box<Self>, result: Result<Inbound, WorkerError>) -> Counted {
        self.deliver_inbound(result);
        None
    }

    fn gone(&self) -> bool {
        Answered::gone(self)
    }
}

impl<A, F: FnOnce(&Result<A, WorkerError>), T: Reply<A>> Drop for Answered<A, F, T> {
    fn drop(&mut self) {
        if self.after.is_some() {
            self.finish(Err(WorkerError::Disconnected));
        }
    }
}
