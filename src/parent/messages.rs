//! The messages a `Worker` takes, and how each resolves: [`Post`] (the
//! original's `postMessage`), [`Ask`] (a typed request), [`Terminate`] and
//! [`Join`], [`Stats`] (answered as a pool of one); and [`WorkerAddrExt`],
//! their shorthands on an address. What each does is the actor's
//! (`worker.rs`).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Addr, Context, Handler, Message, ResponseFuture};

use super::answered::unless_gone;
pub(crate) use super::answered::{After, Answered, Forward};
use super::process::Grace;
use super::stats::{MemberStats, PoolStats, Recorder, Stats};
use super::worker::{Asked, State, Worker};
use crate::error::{ExitStatus, WorkerError};
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::{decoded, Counted, Pending, Slot};
use crate::session::trace::Caller;
use crate::wire::ws::reader::Inbound;
use serde::de::DeserializeOwned;

/// Posts a typed message to the worker: the original's `postMessage`.
///
/// Resolves to `Ok(())` once the message is queued (it is written when the
/// worker can take it, in order), or to the reason it was refused: too
/// large, queue full, worker terminating or exited. With `do_send`, a
/// refusal is reported to the event recipient as an
/// [`Event::Refused`](crate::Event::Refused), or logged.
pub struct Post<M> {
    data: M,
    fds: Vec<OwnedFd>,
}

impl<M> Post<M> {
    /// A message without descriptors.
    pub fn new(data: M) -> Self {
        Post { data, fds: Vec::new() }
    }

    /// A message with descriptors (at most [`MAX_FDS_PER_MESSAGE`](crate::MAX_FDS_PER_MESSAGE)); the
    /// worker receives them with exactly this message.
    pub fn with_fds(data: M, fds: Vec<OwnedFd>) -> Self {
        Post { data, fds }
    }
}

impl<M: 'static> Message for Post<M> {
    type Result = Result<(), WorkerError>;
}

impl<P: Protocol> Handler<Post<P::ToWorker>> for Worker<P> {
    type Result = PostResponse;

    fn handle(&mut self, msg: Post<P::ToWorker>, ctx: &mut Context<Self>) -> PostResponse {
        PostResponse(match self.post(msg.data, msg.fds, ctx) {
            Ok(None) => None,
            Ok(Some(later)) => Some(Queued::Later(later)),
            Err(e) => Some(Queued::Refused(e)),
        })
    }
}

/// Why a frame is not queued yet.
enum Queued {
    /// It will be, once the outbox has room; the answer comes here.
    Later(tokio::sync::oneshot::Receiver<Result<(), WorkerError>>),
    /// It never will be.
    Refused(WorkerError),
}

/// How a [`Post`] resolves: at once, or once the outbox has room. You never
/// need to name this type: `send(Post)` resolves to `Result<(), WorkerError>`.
pub struct PostResponse(Option<Queued>);

impl<P: Protocol> MessageResponse<Worker<P>, Post<P::ToWorker>> for PostResponse {
    fn handle(
        self,
        _: &mut Context<Worker<P>>,
        tx: Option<OneshotSender<Result<(), WorkerError>>>,
    ) {
        let Some(tx) = tx else { return };
        match self.0 {
            None => {
                let _ = tx.send(Ok(()));
            }
            Some(Queued::Refused(e)) => {
                let _ = tx.send(Err(e));
            }
            Some(Queued::Later(rx)) => {
                crate::session::spawn_boxed(async move {
                    let _ = tx.send(rx.await.unwrap_or(Err(WorkerError::Disconnected)));
                });
            }
        }
    }
}

/// Asks the worker a typed [`Request`] and resolves to its typed answer.
///
/// ```no_run
/// # use actix::prelude::*;
/// # use actix_webworker::{Ask, Protocol, Worker, WorkerError};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Sum(Vec<u64>);
/// # struct Calc;
/// # impl Protocol for Calc { type ToWorker = (); type FromWorker = (); }
///
/// async fn sum(worker: &Addr<Worker<Calc>>) -> Result<u64, WorkerError> {
///     worker.send(Ask::new(Sum(vec![1, 2, 3]))).await.map_err(|_| WorkerError::Disconnected)?
/// }
/// ```
///
/// When the worker exits first, the answer is [`WorkerError::Exited`]; when
/// its handler panics, [`WorkerError::Panicked`] with the report; after the
/// [`timeout`](Ask::timeout), [`WorkerError::Timeout`].
///
/// While a `tracing` subscriber wants it, an ask has a span, a child of
/// the span current where the `Ask` is made (the caller's), and its trace context travels with the request, so that the
/// worker's span of its handling joins it (see docs/tracing.md).
pub struct Ask<R> {
    request: R,
    timeout: Option<Duration>,
    /// Where it was made, for its span (see `session/trace.rs`).
    caller: Caller,
}

impl<R> Ask<R> {
    /// The request, its timeout and its caller (a pool forwards them).
    pub(crate) fn into_parts(self) -> (R, Option<Duration>, Caller) {
        (self.request, self.timeout, self.caller)
    }

    /// A request with no timeout of its own.
    pub fn new(request: R) -> Self {
        Ask { request, timeout: None, caller: Caller::here() }
    }

    /// Gives up after `limit`: the caller gets [`WorkerError::Timeout`] and a
    /// late answer is dropped.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl<R: Request> Message for Ask<R> {
    type Result = Result<R::Answer, WorkerError>;
}

impl<P: Protocol, R: Request> Handler<Ask<R>> for Worker<P> {
    type Result = AskResponse<R>;

    fn handle(&mut self, msg: Ask<R>, ctx: &mut Context<Self>) -> AskResponse<R> {
        let started = super::stats::sampled();
        AskResponse(match self.ask((msg.request, msg.caller), msg.timeout, ctx) {
            Asked::Ready(result) => AskInner::Ready(result),
            Asked::Waiting { id, pending } => AskInner::Waiting { id, pending, started },
            Asked::Later(fut) => AskInner::Later(fut, self.recorder.clone(), started),
        })
    }
}

/// How an [`Ask`] resolves. You never need to name this type:
/// `send(Ask::new(req)).await` gives `Result<Result<Answer, WorkerError>,
/// MailboxError>`, as every actix `send` does (the mailbox error only when
/// the `Worker` actor is gone); [`WorkerAddrExt::ask`] gives
/// `Result<Answer, WorkerError>`.
pub struct AskResponse<R: Request>(AskInner<R>);

enum AskInner<R: Request> {
    Ready(Result<R::Answer, WorkerError>),
    /// Its answer counted by `pending`'s tally (the worker's recorder).
    Waiting {
        id: u64,
        pending: Arc<Pending>,
        started: Option<Instant>,
    },
    Later(
        Pin<Box<dyn Future<Output = Result<R::Answer, WorkerError>>>>,
        Arc<Recorder>,
        Option<Instant>,
    ),
}

impl<P: Protocol, R: Request> MessageResponse<Worker<P>, Ask<R>> for AskResponse<R> {
    fn handle(
        self,
        _: &mut Context<Worker<P>>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        match self.0 {
            AskInner::Ready(result) => {
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            // Straight to the caller when it comes: no task of its own. A
            // caller that goes away is noticed by the sweep.
            AskInner::Waiting { id, pending, started } => {
                let slot = Box::new(ToCaller::<R::Answer> { tx, started });
                pending.attach(id, describe::<P, R>, slot)
            }
            // A timed request: given up (cancelled in the worker) when its
            // caller goes, as an untimed one is by the sweep.
            AskInner::Later(fut, recorder, started) => {
                crate::session::spawn_boxed(async move {
                    let Some(mut tx) = tx else {
                        recorder.finish(fut.await.is_ok(), started);
                        return;
                    };
                    let Some(result) = unless_gone(fut, tx.closed()).await else { return };
                    recorder.finish(result.is_ok(), started);
                    let _ = tx.send(result);
                });
            }
        }
    }
}

/// Where the answer of an [`Ask`] goes: to its caller, who may have gone;
/// its outcome and round trip are recorded.
pub(super) struct ToCaller<A> {
    tx: Option<OneshotSender<Result<A, WorkerError>>>,
    started: Option<Instant>,
}

impl<A> ToCaller<A> {
    pub(super) fn new(tx: OneshotSender<Result<A, WorkerError>>, started: Option<Instant>) -> Self {
        ToCaller { tx: Some(tx), started }
    }
}

impl<A: DeserializeOwned + Send + 'static> Slot for ToCaller<A> {
    /// Counted by the worker's `Recorder` (its `Pending`'s tally).
    fn deliver(self: Box<Self>, result: Result<Inbound, WorkerError>) -> Counted {
        let answer = decoded(result);
        let counted = Some((answer.is_ok(), self.started));
        if let Some(tx) = self.tx {
            let _ = tx.send(answer);
        }
        counted
    }

    fn gone(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }
}

/// Ends the worker: its `on_close` runs after every message queued before
/// this one, and it exits. If it has not exited after the grace period, its
/// process group gets SIGTERM, then SIGKILL. A second terminate, or one after
/// the exit, does nothing.
#[derive(Clone, Copy, Debug, Default, Message)]
#[rtype(result = "()")]
pub struct Terminate(pub Grace);

impl<P: Protocol> Handler<Terminate> for Worker<P> {
    type Result = ();

    fn handle(&mut self, msg: Terminate, _: &mut Context<Self>) {
        self.terminate(msg.0);
    }
}

/// Resolves when the worker process has exited for good, with its status:
/// the `join` of a thread. `worker.send(Join).await`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Join;

impl Message for Join {
    type Result = ExitStatus;
}

impl<P: Protocol> Handler<Join> for Worker<P> {
    type Result = ResponseFuture<ExitStatus>;

    fn handle(&mut self, _: Join, _: &mut Context<Self>) -> Self::Result {
        self.join()
    }
}

/// Shorthands on a worker's (or a pool's) address: `post` and `terminate`
/// as fire and forget, and `ask` with the answer's own result (actix's
/// `send` adds a `MailboxError` around it).
///
/// ```no_run
/// use actix::prelude::*;
/// use actix_webworker::{Protocol, Worker, WorkerAddrExt, WorkerError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Sum(Vec<u64>);
///
/// struct Calc;
/// impl Protocol for Calc {
///     type ToWorker = String;
///     type FromWorker = ();
/// }
///
/// async fn use_it(worker: Addr<Worker<Calc>>) -> Result<u64, WorkerError> {
///     worker.post("warm up".to_owned()); // postMessage, fire and forget
///     let sum = worker.ask(Sum(vec![1, 2, 3])).await?; // Result<u64, WorkerError>
///     worker.terminate(); // on_close runs, then the process exits
///     Ok(sum)
/// }
/// ```
pub trait WorkerAddrExt<P: Protocol> {
    /// `do_send(Post::new(data))`: fire and forget.
    fn post(&self, data: P::ToWorker);
    /// `do_send(Terminate::default())`.
    fn terminate(&self);
    /// `send(Ask::new(request))`, with a closed mailbox as
    /// [`WorkerError::Disconnected`].
    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<Self, P, R>;
}

impl<P: Protocol> WorkerAddrExt<P> for Addr<Worker<P>> {
    fn post(&self, data: P::ToWorker) {
        self.do_send(Post::new(data));
    }

    fn terminate(&self) {
        self.do_send(Terminate::default());
    }

    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<P, R> {
        // Unconstrained: each poll is one look at a oneshot, so it cannot
        // hog the thread; under tokio's cooperative budget, thousands of
        // these gathered in a `FuturesUnordered` spend most of their time
        // yielding to each other (figures in docs/performance.md).
        let sent = tokio::task::unconstrained(self.send(Ask::new(request)));
        async move { sent.await.map_err(|_| WorkerError::Disconnected)? }
    }
}

impl<P: Protocol> Handler<Stats> for Worker<P> {
    type Result = actix::MessageResult<Stats>;

    /// The worker as a pool of one member.
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let running = self.state == State::Running && self.child.strong_count() > 0;
        let in_flight = self.sender.pending.len();
        let (completed, failed) = (
            self.recorder.completed.load(std::sync::atomic::Ordering::Relaxed),
            self.recorder.failed.load(std::sync::atomic::Ordering::Relaxed),
        );
        let (rtt_p50, rtt_p99) = self.recorder.percentiles();
        let here = if self.options.spec.launcher.is_empty() { "local" } else { "launched" };
        let member =
            MemberStats::new((0, self.pid, running), here.into(), (in_flight, completed, failed));
        actix::MessageResult(PoolStats::new(
            self.sender.outbox.len() + self.waiting.len(),
            vec![member],
            (completed, failed),
            (rtt_p50, rtt_p99),
        ))
    }
}
