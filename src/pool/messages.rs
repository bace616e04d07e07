//! The messages a pool takes, and how each is routed: those of a single
//! worker ([`Post`], [`Ask`], [`Terminate`], [`Join`]), [`Broadcast`] and
//! [`Stats`]; and the shorthands of [`WorkerAddrExt`] on a pool's address.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Addr, Context, Handler, Message, MessageResult, ResponseFuture};

use super::events::MemberEvent;
use super::queue::{Queue, Queued};
use super::{Load, Shared, State, WorkerPool};
use crate::error::{ExitStatus, WorkerError};
use crate::parent::messages::{Answered, Ask, Forward, Join, Post, Terminate, WorkerAddrExt};
use crate::parent::options::WhenFull;
use crate::parent::stats::{MemberStats, PoolStats, Stats};
use crate::parent::worker::Worker;
use crate::protocol::{Protocol, Request};

/// Posts a copy of the message to every member of a pool. Resolves once
/// every member has queued it, or to the first refusal.
pub struct Broadcast<M>(pub M);

impl<M: 'static> Message for Broadcast<M> {
    type Result = Result<(), WorkerError>;
}

/// Wakes the pool: an answer freed a place while requests wait.
pub(crate) struct Pump;

impl Message for Pump {
    type Result = ();
}

impl<P: Protocol> Handler<Pump> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl<P: Protocol> Handler<MemberEvent<P>> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, msg: MemberEvent<P>, ctx: &mut Context<Self>) {
        self.member_event(msg.index, msg.event, msg.handled, ctx);
    }
}

/// A request handed to a member, but for the caller's reply channel, which
/// comes once the handler has returned.
pub(crate) struct Prepared<P: Protocol> {
    addr: Addr<Worker<P>>,
    load: Arc<Load>,
    shared: Arc<Shared<P>>,
    started: Instant,
}

impl<P: Protocol> Prepared<P> {
    fn send<R: Request>(
        self,
        request: R,
        timeout: Option<Duration>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        let Prepared { addr, load, shared, started } = self;
        let then = Answered::new(tx, move |result: &Result<R::Answer, WorkerError>| {
            let exited = matches!(result, Err(WorkerError::Exited(_)));
            shared.finished(&load, result.is_ok(), exited, started);
        });
        addr.do_send(Forward { request, timeout, then });
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Counts a request on the member at position `at`; the rest is done
    /// by [`Prepared::send`].
    pub(crate) fn prepare(&mut self, at: usize) -> Prepared<P> {
        let member = &mut self.members[at];
        if member.load.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            member.busy_at = Instant::now();
        }
        member.given += 1;
        let prepared = Prepared {
            addr: member.addr.clone(),
            load: member.load.clone(),
            shared: self.shared.clone(),
            started: Instant::now(),
        };
        if let Some(max) = self.settings.max_requests {
            if member.given >= max && !member.leaving {
                let (index, given) = (member.index, member.given);
                self.recycle(index, super::Recycle::Requests(given));
            }
        }
        prepared
    }
}

struct QueuedAsk<R: Request> {
    request: R,
    timeout: Option<Duration>,
    since: Instant,
    /// The caller's; `None` once answered.
    reply: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
}

impl<P: Protocol, R: Request> Queued<P> for QueuedAsk<R> {
    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn dispatch(self: Box<Self>, pool: &mut WorkerPool<P>, at: usize) {
        let Some(tx) = self.reply else { return };
        // Its timeout runs from when the pool took it.
        let timeout = self.timeout.map(|t| t.saturating_sub(self.since.elapsed()));
        if timeout.is_some_and(|t| t.is_zero()) {
            let _ = tx.send(Err(WorkerError::Timeout(self.timeout.unwrap_or_default())));
            return;
        }
        pool.prepare(at).send(self.request, timeout, Some(tx));
    }

    fn refuse(self: Box<Self>, e: WorkerError) {
        if let Some(tx) = self.reply {
            let _ = tx.send(Err(e));
        }
    }

    fn expire(self: Box<Self>) {
        let limit = self.timeout.unwrap_or_default();
        Queued::<P>::refuse(self, WorkerError::Timeout(limit));
    }
}

impl<P: Protocol, R: Request> Handler<Ask<R>> for WorkerPool<P> {
    type Result = PoolAsk<P, R>;

    fn handle(&mut self, msg: Ask<R>, ctx: &mut Context<Self>) -> PoolAsk<P, R> {
        let (request, timeout) = msg.into_parts();
        let route = self.route(ctx);
        PoolAsk { request: Some(request), timeout, route }
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Where a request taken now goes: to the member with room, or behind
    /// those that wait, or refused.
    fn route(&mut self, ctx: &mut Context<Self>) -> Route<P> {
        match self.state {
            State::Running => {
                // Behind those that wait, or to the member with room.
                let waiting = !self.queue.borrow().is_empty();
                match (waiting, if waiting { None } else { self.pick() }) {
                    (_, Some(at)) => Route::To(self.prepare(at)),
                    _ if self.settings.when_full == WhenFull::Fail
                        && self.queue.borrow().len() >= self.settings.max_queued =>
                    {
                        Route::Refused(WorkerError::QueueFull { limit: self.settings.max_queued })
                    }
                    _ => {
                        self.shared.queued.fetch_add(1, Ordering::AcqRel);
                        // Requests wait: a member more, if the pool may grow.
                        self.grow(ctx);
                        Route::Queue(self.queue.clone())
                    }
                }
            }
            State::Closing => Route::Refused(WorkerError::Terminating),
            State::Stopped(status) => Route::Refused(WorkerError::Exited(status)),
        }
    }

    /// Whether a request from [`WorkerAddrExt::ask`] is held back at its
    /// caller: the queue is at its bound under [`WhenFull::Wait`] (counting
    /// the places given to callers on their way back), or callers already
    /// wait for a place (they go first). Only if it would be queued: one a
    /// member takes now is never held back.
    fn holds_back(&mut self) -> bool {
        if self.state != State::Running || self.settings.when_full != WhenFull::Wait {
            return false;
        }
        let queued = self.queue.borrow().len();
        let full = !self.tickets.is_empty() || queued + self.places >= self.settings.max_queued;
        // `pick` only when the queue is empty: with requests waiting, a new
        // one goes behind them.
        full && (queued > 0 || !self.has_room())
    }
}

/// How an [`Ask`] to a pool resolves. You never need to name this type.
pub struct PoolAsk<P: Protocol, R: Request> {
    /// `None` once handed back to its caller ([`Route::HeldBack`]).
    request: Option<R>,
    timeout: Option<Duration>,
    route: Route<P>,
}

enum Route<P: Protocol> {
    To(Prepared<P>),
    Queue(Rc<RefCell<Queue<P>>>),
    Refused(WorkerError),
    /// Handed back to its caller, who waits for a place (see [`Enter`]).
    HeldBack,
}

impl<P: Protocol, R: Request> MessageResponse<WorkerPool<P>, Ask<R>> for PoolAsk<P, R> {
    fn handle(
        self,
        ctx: &mut Context<WorkerPool<P>>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        self.respond(ctx, tx);
    }
}

impl<P: Protocol, R: Request> MessageResponse<WorkerPool<P>, Enter<P, R>> for PoolAsk<P, R> {
    fn handle(
        self,
        ctx: &mut Context<WorkerPool<P>>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        self.respond(ctx, tx);
    }
}

impl<P: Protocol, R: Request> PoolAsk<P, R> {
    fn respond(
        self,
        ctx: &mut Context<WorkerPool<P>>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        let Some(request) = self.request else {
            // Held back: the caller's reply channel closes, and it has its
            // request back (see `Enter`).
            return;
        };
        match self.route {
            Route::HeldBack => {}
            Route::To(prepared) => prepared.send(request, self.timeout, tx),
            Route::Refused(e) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(e));
                }
            }
            Route::Queue(queue) => {
                let since = Instant::now();
                // Fails where it waits if nobody takes it first: one timer
                // for the whole queue (`queue.rs`).
                let deadline = self.timeout.and_then(|limit| since.checked_add(limit));
                let item = QueuedAsk { request, timeout: self.timeout, since, reply: tx };
                queue.borrow_mut().push(Box::new(item), deadline);
                if deadline.is_some() {
                    super::queue::arm(&queue, ctx);
                }
            }
        }
    }
}

/// A request from [`WorkerAddrExt::ask`] on a pool's address: an
/// [`Ask`] that the pool may hand back to its caller instead of queueing
/// it, when the queue is at its bound under [`WhenFull::Wait`].
///
/// That is how the bound holds without the pool keeping what waits beyond
/// it: the caller gets its request back with a ticket, and waits (its
/// future pending, the request in it) until the pool gives it a place;
/// then it sends the request again, into that place. The pool keeps only
/// the ticket, a few dozen bytes, dropped when its caller goes. (A plain
/// `send(Ask)` cannot be handed back: it is queued beyond the bound.)
pub(crate) struct Enter<P: Protocol, R: Request> {
    request: R,
    /// The place given, on the way back.
    place: Option<Place<P>>,
    /// Where the request goes back, with its ticket, if held back.
    back: Option<tokio::sync::oneshot::Sender<HeldBack<P, R>>>,
}

/// A request handed back, and where its place will come.
type HeldBack<P, R> = (R, tokio::sync::oneshot::Receiver<Place<P>>);

impl<P: Protocol, R: Request> Message for Enter<P, R> {
    type Result = Result<R::Answer, WorkerError>;
}

impl<P: Protocol, R: Request> Handler<Enter<P, R>> for WorkerPool<P> {
    type Result = PoolAsk<P, R>;

    fn handle(&mut self, msg: Enter<P, R>, ctx: &mut Context<Self>) -> PoolAsk<P, R> {
        let Enter { request, place, back } = msg;
        if let Some(place) = place {
            // Its place is taken now (queued, or sent to a member).
            place.taken();
            self.places = self.places.saturating_sub(1);
        } else if let Some(back) = back.filter(|_| self.holds_back()) {
            let (ticket, placed) = tokio::sync::oneshot::channel();
            self.tickets.push_back(ticket);
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
            self.grow(ctx);
            // A caller gone already drops its request here.
            let _ = back.send((request, placed));
            return PoolAsk { request: None, timeout: None, route: Route::HeldBack };
        }
        let route = self.route(ctx);
        if !matches!(route, Route::Queue(_)) {
            // Not queued (a member took it, or it is refused): if it had a
            // place, the place goes to the next.
            self.admit();
        }
        PoolAsk { request: Some(request), timeout: None, route }
    }
}

/// A place in a pool's queue, given to a caller held back (see [`Enter`]):
/// kept for it until its request comes back. Given back to the pool if its
/// caller goes first, so that no place is lost.
pub(crate) struct Place<P: Protocol> {
    pool: Option<actix::WeakAddr<WorkerPool<P>>>,
}

impl<P: Protocol> Place<P> {
    fn taken(mut self) {
        self.pool = None;
    }
}

impl<P: Protocol> Drop for Place<P> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().and_then(|pool| pool.upgrade()) {
            pool.do_send(Release);
        }
    }
}

/// A place given to a caller who went before taking it.
struct Release;

impl Message for Release {
    type Result = ();
}

impl<P: Protocol> Handler<Release> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Context<Self>) {
        self.places = self.places.saturating_sub(1);
        self.admit();
    }
}

/// Drops from the queue the requests whose callers have gone, and the
/// tickets of callers held back who have gone: sent every
/// [`SWEEP`](super::SWEEP) while anything waits (`WorkerPool::started`).
pub(crate) struct Sweep;

impl Message for Sweep {
    type Result = ();
}

impl<P: Protocol> Handler<Sweep> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) {
        self.sweep(ctx);
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Gives places in the queue to callers held back, oldest first, while
    /// it has room under its bound.
    pub(crate) fn admit(&mut self) {
        let max = self.settings.max_queued;
        while self.queue.borrow().len() + self.places < max {
            let Some(ticket) = self.tickets.pop_front() else { break };
            let place = Place { pool: Some(self.shared.pool.clone()) };
            match ticket.send(place) {
                Ok(()) => self.places += 1,
                // Its caller went: the place goes to the next.
                Err(place) => place.taken(),
            }
        }
        self.count_waiting();
    }
}

impl<P: Protocol> Handler<Post<P::ToWorker>> for WorkerPool<P> {
    type Result = ResponseFuture<Result<(), WorkerError>>;

    fn handle(&mut self, msg: Post<P::ToWorker>, _: &mut Context<Self>) -> Self::Result {
        let to = match self.state {
            State::Running => self.next_for_post(),
            _ => None,
        };
        let Some(addr) = to else {
            let e = match self.state {
                State::Stopped(status) => WorkerError::Exited(status),
                _ => WorkerError::Terminating,
            };
            return Box::pin(std::future::ready(Err(e)));
        };
        let sent = addr.send(msg);
        Box::pin(async move { sent.await.unwrap_or(Err(WorkerError::Disconnected)) })
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// The member a post goes to: the next one in turn that takes work
    /// (online first; one still starting queues it).
    fn next_for_post(&mut self) -> Option<Addr<Worker<P>>> {
        let n = self.members.len();
        let usable = |m: &super::Member<P>| !m.leaving && m.gone.is_none();
        let order = (0..n).map(|k| (self.turn + k) % n);
        let at = order
            .clone()
            .find(|&at| {
                let m = &self.members[at];
                usable(m) && m.online && !m.load.down.load(Ordering::Acquire)
            })
            .or_else(|| order.clone().find(|&at| usable(&self.members[at])))?;
        self.turn = (at + 1) % n;
        Some(self.members[at].addr.clone())
    }
}

impl<P: Protocol> Handler<Broadcast<P::ToWorker>> for WorkerPool<P>
where
    P::ToWorker: Clone,
{
    type Result = ResponseFuture<Result<(), WorkerError>>;

    fn handle(&mut self, msg: Broadcast<P::ToWorker>, _: &mut Context<Self>) -> Self::Result {
        if self.state != State::Running {
            return Box::pin(std::future::ready(Err(WorkerError::Terminating)));
        }
        let sends: Vec<_> = self
            .members
            .iter()
            .filter(|m| !m.leaving && m.gone.is_none())
            .map(|m| m.addr.send(Post::new(msg.0.clone())))
            .collect();
        Box::pin(async move {
            for sent in futures_util::future::join_all(sends).await {
                sent.unwrap_or(Err(WorkerError::Disconnected))?;
            }
            Ok(())
        })
    }
}

impl<P: Protocol> Handler<Terminate> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        self.close(msg.0, ctx);
    }
}

impl<P: Protocol> Handler<Join> for WorkerPool<P> {
    type Result = ResponseFuture<ExitStatus>;

    fn handle(&mut self, _: Join, _: &mut Context<Self>) -> Self::Result {
        if let State::Stopped(status) = self.state {
            return Box::pin(std::future::ready(status));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.joiners.push(tx);
        Box::pin(
            async move { rx.await.unwrap_or(ExitStatus { code: None, signal: None, lost: None }) },
        )
    }
}

impl<P: Protocol> Handler<Stats> for WorkerPool<P> {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> MessageResult<Stats> {
        let members: Vec<MemberStats> = self
            .members
            .iter()
            .filter(|m| m.gone.is_none())
            .map(|m| {
                let load = &m.load;
                MemberStats::new(
                    m.index,
                    m.pid,
                    m.online,
                    load.in_flight.load(Ordering::Acquire),
                    load.completed.load(Ordering::Relaxed),
                    load.failed.load(Ordering::Relaxed),
                )
            })
            .collect();
        let completed = self.completed_before + members.iter().map(|m| m.completed).sum::<u64>();
        let failed = self.failed_before + members.iter().map(|m| m.failed).sum::<u64>();
        // As they are: nothing is swept here, so that what stays in the
        // queue is seen.
        let queue = self.queue.borrow();
        let mut stats =
            PoolStats::new(queue.len(), members, (completed, failed), self.rtts.percentiles());
        stats.waiting = self.tickets.len();
        stats.deadlines = queue.deadlines();
        stats.timers = queue.timers();
        MessageResult(stats)
    }
}

impl<P: Protocol> WorkerAddrExt<P> for Addr<WorkerPool<P>> {
    fn post(&self, data: P::ToWorker) {
        self.do_send(Post::new(data));
    }

    fn terminate(&self) {
        self.do_send(Terminate::default());
    }

    /// Under [`WhenFull::Wait`], with the queue at its bound, the request
    /// waits here, in the caller's future, for a place in the queue.
    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<P, R> {
        let (back, held) = tokio::sync::oneshot::channel();
        let enter = Enter { request, place: None, back: Some(back) };
        // Outside tokio's cooperative budget, as for one worker.
        let sent = tokio::task::unconstrained(self.send(enter));
        let pool = self.clone();
        async move {
            let mut held = held;
            if let Ok(answer) = sent.await {
                return answer;
            }
            // Closed without an answer: held back, or the pool is gone.
            let Ok((request, placed)) = held.try_recv() else {
                return Err(WorkerError::Disconnected);
            };
            // No place (the pool is closing): sent anyway, to be told why.
            let place = placed.await.ok();
            let enter = Enter { request, place, back: None };
            let sent = tokio::task::unconstrained(pool.send(enter));
            sent.await.map_err(|_| WorkerError::Disconnected)?
        }
    }
}
