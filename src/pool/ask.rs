//! An ask to a pool, and where it goes: to the member with room and the
//! fewest in flight (`routing.rs`), behind those that wait in the queue,
//! or refused. The answer goes straight from the member to the caller: no
//! task and no channel of the pool's per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Addr, Context, Handler};

use super::events::Recycle;
use super::member::Load;
use super::queue::{self, Queue, Queued};
use super::routing;
use super::worker_pool::{Common, State, WorkerPool};
use crate::error::WorkerError;
use crate::parent::answered::Reply;
use crate::parent::direct::Direct;
use crate::parent::messages::{After, Answered, Ask, Forward};
use crate::parent::options::WhenFull;
use crate::parent::worker::Worker;
use crate::protocol::{Protocol, Request};
use crate::session::trace::Caller;

/// A request handed to a member, but for the caller's reply channel, which
/// comes once the handler has returned.
pub(crate) struct Prepared<P: Protocol> {
    /// The member's index (see `Member::index`).
    pub(super) member: usize,
    pub(super) to: To<P>,
    pub(super) load: Arc<Load>,
    pub(super) common: Arc<Common<P>>,
    pub(super) started: Instant,
}

/// Where a member takes a request.
pub(crate) enum To<P: Protocol> {
    /// Past its mailbox, once its line is open (`direct.rs`); its
    /// process's pid.
    Line(Direct<P>, u32),
    /// Its mailbox, until then.
    Mailbox(Addr<Worker<P>>),
}

impl<P: Protocol> To<P> {
    /// The member's address.
    pub(super) fn addr(&self) -> &Addr<Worker<P>> {
        match self {
            To::Line(direct, _) => direct.addr(),
            To::Mailbox(addr) => addr,
        }
    }
}

impl<P: Protocol> Prepared<P> {
    pub(super) fn send<R: Request, T: Reply<R::Answer>>(
        self,
        (request, caller): (R, Caller),
        timeout: Option<Duration>,
        tx: Option<T>,
    ) {
        let Prepared { member, to, load, common, started } = self;
        let caller = caller.with_member(member);
        let after = move |result: &Result<R::Answer, WorkerError>| {
            let exited = matches!(result, Err(WorkerError::Exited(_)));
            common.finished(&load, result.is_ok(), exited, started);
        };
        // Straight into the member's outbox; through its mailbox what only
        // its actor can do (a timer, waiting for room).
        match to {
            To::Line(direct, pid) if timeout.is_none() => {
                let then = Answered::new(tx, after);
                if let Some(held) = direct.forward((request, caller), pid, then) {
                    direct.addr().do_send(held);
                }
            }
            to => {
                let then = Answered::new(tx, Box::new(after) as After<R::Answer>);
                to.addr().do_send(Forward { request, timeout, then, caller });
            }
        }
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Counts a request on the member at position `at`; the rest is done
    /// by [`Prepared::send`].
    pub(super) fn prepare(&mut self, at: usize) -> Prepared<P> {
        let member = &mut self.members[at];
        if member.load.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            member.busy_at = Instant::now();
        }
        member.given += 1;
        let prepared = Prepared {
            member: member.index,
            to: match &member.direct {
                Some(direct) => To::Line(direct.clone(), member.pid),
                None => To::Mailbox(member.addr.clone()),
            },
            load: member.load.clone(),
            common: self.common.clone(),
            started: Instant::now(),
        };
        if let Some(max) = self.settings.max_requests {
            if member.given >= max && !member.leaving {
                let (index, given) = (member.index, member.given);
                self.recycle(index, Recycle::Requests(given));
            }
        }
        prepared
    }
}

struct QueuedAsk<R: Request, T> {
    request: R,
    caller: Caller,
    timeout: Option<Duration>,
    since: Instant,
    /// The caller's; `None` once answered.
    reply: Option<T>,
}

impl<P: Protocol, R: Request, T: Reply<R::Answer>> Queued<WorkerPool<P>> for QueuedAsk<R, T> {
    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn dispatch(self: Box<Self>, pool: &mut WorkerPool<P>, at: usize) {
        let Some(tx) = self.reply else { return };
        // Its timeout runs from when the pool took it.
        let timeout = self.timeout.map(|t| t.saturating_sub(self.since.elapsed()));
        if timeout.is_some_and(|t| t.is_zero()) {
            tx.send(Err(WorkerError::Timeout(self.timeout.unwrap_or_default())));
            return;
        }
        pool.prepare(at).send((self.request, self.caller), timeout, Some(tx));
    }

    fn refuse(self: Box<Self>, e: WorkerError) {
        if let Some(tx) = self.reply {
            tx.send(Err(e));
        }
    }

    fn expire(self: Box<Self>) {
        let limit = self.timeout.unwrap_or_default();
        Queued::<WorkerPool<P>>::refuse(self, WorkerError::Timeout(limit));
    }
}

impl<P: Protocol, R: Request> Handler<Ask<R>> for WorkerPool<P> {
    type Result = PoolAsk<P, R>;

    fn handle(&mut self, msg: Ask<R>, ctx: &mut Context<Self>) -> PoolAsk<P, R> {
        let (request, timeout, caller) = msg.into_parts();
        let route = self.route(ctx);
        PoolAsk { request: (request, caller), timeout, route }
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Where a request taken now goes: to the member with room, or behind
    /// those that wait, or refused.
    pub(super) fn route(&mut self, ctx: &mut Context<Self>) -> Route<P> {
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
                        self.common.queued.fetch_add(1, Ordering::AcqRel);
                        // Requests wait: a member more, if the pool may grow.
                        self.grow(ctx);
                        Route::Queue(self.queue.clone())
                    }
                }
            }
            State::Closing | State::Stopped(_) => Route::Refused(self.refusal()),
        }
    }

    /// The member a request goes to now (`routing::pick`); the turn moves
    /// past it.
    pub(super) fn pick(&mut self) -> Option<usize> {
        let (n, max) = (self.members.len(), self.settings.max_in_flight);
        let prefer_local = self.settings.prefer_local;
        let at = routing::pick(n, self.turn, max, prefer_local, |at| self.members[at].snapshot())?;
        self.turn = (at + 1) % n;
        Some(at)
    }

    /// Whether a member could take a request now.
    pub(super) fn has_room(&self) -> bool {
        let max = self.settings.max_in_flight;
        self.members.iter().any(|m| m.ready() && m.in_flight() < max)
    }
}

/// How an [`Ask`] to a pool resolves. You never need to name this type.
pub struct PoolAsk<P: Protocol, R: Request> {
    /// With its span.
    pub(super) request: (R, Caller),
    pub(super) timeout: Option<Duration>,
    pub(super) route: Route<P>,
}

/// Where a request taken now goes.
pub(crate) enum Route<P: Protocol> {
    To(Prepared<P>),
    Queue(Rc<RefCell<Queue<WorkerPool<P>>>>),
    Refused(WorkerError),
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

impl<P: Protocol, R: Request> PoolAsk<P, R> {
    pub(super) fn respond<T: Reply<R::Answer>>(
        self,
        ctx: &mut Context<WorkerPool<P>>,
        tx: Option<T>,
    ) {
        let request = self.request;
        match self.route {
            Route::To(prepared) => prepared.send(request, self.timeout, tx),
            Route::Refused(e) => {
                if let Some(tx) = tx {
                    tx.send(Err(e));
                }
            }
            Route::Queue(queue) => {
                let since = Instant::now();
                // Fails where it waits if nobody takes it first: one timer
                // for the whole queue (`queue.rs`).
                let deadline = self.timeout.and_then(|limit| since.checked_add(limit));
                let (request, caller) = request;
                let item = QueuedAsk { request, caller, timeout: self.timeout, since, reply: tx };
                queue.borrow_mut().push(Box::new(item), deadline);
                if deadline.is_some() {
                    queue::arm(&queue, ctx);
                }
            }
        }
    }
}
