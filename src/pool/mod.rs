//! Pools: many worker processes behind one address, for CPU-bound work and
//! work to keep apart from the parent (parsers, plugins).
//!
//! A [`WorkerPool`] is an actor that takes the messages a single worker
//! takes ([`Post`](crate::Post), [`Ask`](crate::Ask),
//! [`Terminate`](crate::Terminate), [`Join`](crate::Join)), plus
//! [`Broadcast`] and [`Stats`]. Each member is an ordinary
//! [`Worker`](crate::Worker), built from the same options, with its own
//! restart policy. How work is spread:
//!
//! - An ask goes to the member with the fewest requests in flight (ties in
//!   turn), among those that are online and have fewer than
//!   [`max_in_flight_per_worker`](PoolBuilder::max_in_flight_per_worker).
//!   When none has room, it waits in the pool's queue, and goes to the
//!   first member that finishes one. Beyond the queue's bound the caller
//!   is refused, or (under `WhenFull::Wait`) held back with its request in
//!   its own future until it is given a place (`messages::Enter`). The
//!   answer goes straight from the member to the caller (`messages.rs`):
//!   no task and no channel of the pool's per request.
//! - A post goes to one member, in turn; [`Broadcast`] goes to every one.
//! - A member that crashes is restarted by its own policy; what it had in
//!   flight fails with [`WorkerError::Exited`](crate::WorkerError::Exited)
//!   and is never sent again, and the queue flows to the others meanwhile.
//!   A member that gives up is replaced, within the pool's own intensity.
//! - The pool grows while requests wait (up to `max`), shrinks back to
//!   `min` when members are idle, and recycles a member after
//!   `max_requests` or past `max_rss` (`scale.rs`).

pub(crate) mod builder;
pub(crate) mod events;
pub(crate) mod messages;
mod queue;
mod scale;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Recipient, Running, WeakAddr};
pub use builder::{PoolBuilder, Pooled};
pub use events::{PoolEvent, Recycle};
use messages::Place;
pub use messages::{Broadcast, PoolAsk};

use self::builder::Settings;
use self::events::Relay;
use self::queue::Queue;
use crate::error::{ExitStatus, SpawnError, WorkerError};
use crate::parent::events::GaveUp;
use crate::parent::options::Options;
use crate::parent::sink::EventSink;
use crate::parent::stats::Recorder;
use crate::parent::worker::{every, Grace, Worker};
use crate::protocol::Protocol;
use crate::supervise::{Decision, History};
use actix::WrapFuture;

/// How often a pool with requests waiting looks for callers that went.
const SWEEP: std::time::Duration = std::time::Duration::from_millis(100);

/// Many worker processes behind one address; see the module docs. Start
/// one with [`WorkerPool::builder`].
pub struct WorkerPool<P: Protocol> {
    name: Arc<str>,
    options: Options,
    settings: Settings,
    members: Vec<Member<P>>,
    next_index: usize,
    /// Where a member goes next among equals.
    turn: usize,
    /// Requests waiting for a member with room, oldest first, with their
    /// deadlines (`queue.rs`).
    queue: Rc<RefCell<Queue<P>>>,
    /// Callers held back at the queue's bound, oldest first: each waits,
    /// its request in its own future, for a place (`messages::Enter`).
    tickets: VecDeque<tokio::sync::oneshot::Sender<Place<P>>>,
    /// Places given to callers held back, whose requests are on their way.
    places: usize,
    /// What the members' answers tell the pool.
    shared: Arc<Shared<P>>,
    events: Option<Recipient<PoolEvent<P>>>,
    replacements: History,
    exits: Vec<ExitStatus>,
    state: State,
    joiners: Vec<tokio::sync::oneshot::Sender<ExitStatus>>,
    /// Recent round trips.
    rtts: Arc<Recorder>,
    /// What members no longer in the pool completed and failed.
    completed_before: u64,
    failed_before: u64,
    /// Members stopped more often than the pool's intensity allows.
    gave_up: bool,
}

/// Where the pool is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Terminate, or giving up: members are closing, nothing is taken.
    Closing,
    /// Every member has exited for good.
    Stopped(ExitStatus),
}

/// One member of the pool.
pub(crate) struct Member<P: Protocol> {
    index: usize,
    addr: Addr<Worker<P>>,
    load: Arc<Load>,
    pid: u32,
    online: bool,
    /// Being recycled or shrunk away: no new work.
    leaving: bool,
    /// Requests given to it.
    given: u64,
    /// When it last had nothing in flight and was given something, or
    /// finished its last.
    busy_at: Instant,
    /// Closed by the pool, or stopped for good: nothing is routed to it.
    gone: Option<ExitStatus>,
    /// Why it gave up, when a restart would fail the same way.
    cause: Option<crate::error::WireError>,
}

/// A member's load, counted by the answers as they come.
#[derive(Default)]
pub(crate) struct Load {
    /// Its process is gone (an answer failed with its exit), until it is
    /// online again: nothing is routed to it. Known before its `Exit`
    /// event reaches the pool.
    pub down: AtomicBool,
    pub in_flight: AtomicUsize,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// What the answers, which run outside the actor, tell it.
pub(crate) struct Shared<P: Protocol> {
    /// How many requests wait in the queue, and callers held back: an
    /// answer that frees a place while some wait wakes the pool.
    pub queued: AtomicUsize,
    pub pool: WeakAddr<WorkerPool<P>>,
    pub rtts: Arc<Recorder>,
}

impl<P: Protocol> Shared<P> {
    /// A request of a member finished (`exited`: with its process's exit).
    fn finished(&self, load: &Load, ok: bool, exited: bool, started: Instant) {
        if exited {
            load.down.store(true, Ordering::Release);
        }
        load.in_flight.fetch_sub(1, Ordering::AcqRel);
        if ok {
            load.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            load.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.rtts.round_trip(started);
        if self.queued.load(Ordering::Acquire) > 0 {
            if let Some(pool) = self.pool.upgrade() {
                pool.do_send(messages::Pump);
            }
        }
    }
}

impl<P: Protocol> WorkerPool<P> {
    pub(crate) fn start_with(
        options: Options,
        settings: Settings,
        events: Option<Recipient<PoolEvent<P>>>,
    ) -> Result<Addr<Self>, SpawnError> {
        if actix::System::try_current().is_none() {
            return Err(SpawnError::NoSystem);
        }
        let rtts = Arc::new(Recorder::default());
        let mut first_error = None;
        let addr = WorkerPool::create(|ctx| {
            ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
            let mut pool = WorkerPool {
                name: options.name.clone(),
                options,
                settings,
                members: Vec::new(),
                next_index: 0,
                turn: 0,
                queue: Rc::default(),
                tickets: VecDeque::new(),
                places: 0,
                shared: Arc::new(Shared {
                    queued: AtomicUsize::new(0),
                    pool: ctx.address().downgrade(),
                    rtts: rtts.clone(),
                }),
                events,
                replacements: History::default(),
                exits: Vec::new(),
                state: State::Running,
                joiners: Vec::new(),
                rtts,
                completed_before: 0,
                failed_before: 0,
                gave_up: false,
            };
            for _ in 0..pool.settings.min {
                if let Err(e) = pool.add_member(ctx) {
                    first_error.get_or_insert(e);
                    break;
                }
            }
            if first_error.is_some() {
                pool.state = State::Stopped(ExitStatus { code: None, signal: None, lost: None });
            }
            pool
        });
        match first_error {
            // The members started are dropped with the pool, which stops.
            Some(e) => Err(e),
            None => Ok(addr),
        }
    }

    fn emit(&self, event: PoolEvent<P>) {
        if let Some(recipient) = &self.events {
            recipient.do_send(event);
        }
    }

    /// Starts a member at a fresh index.
    fn add_member(&mut self, ctx: &mut Context<Self>) -> Result<usize, SpawnError> {
        let index = self.next_index;
        self.next_index += 1;
        let relay = Relay { index, pool: ctx.address().downgrade() }.start();
        let mut options = self.options.clone();
        options.name = format!("{}#{index}", self.name).into();
        let addr = Worker::start_with(options, EventSink::Recipient(relay.recipient()))?;
        // When it has stopped for good, whatever the reason.
        let join = addr.send(crate::parent::messages::Join);
        ctx.spawn(join.into_actor(self).map(move |status, pool, ctx| {
            pool.member_gone(index, status.ok(), ctx);
        }));
        self.members.push(Member {
            index,
            addr,
            load: Arc::default(),
            pid: 0,
            online: false,
            leaving: false,
            given: 0,
            busy_at: Instant::now(),
            gone: None,
            cause: None,
        });
        self.emit(PoolEvent::Started { index });
        Ok(index)
    }

    fn member(&mut self, index: usize) -> Option<&mut Member<P>> {
        self.members.iter_mut().find(|m| m.index == index)
    }

    /// The member a request goes to now: the online member with room and
    /// the fewest in flight, ties in turn; `None` when none has room.
    fn pick(&mut self) -> Option<usize> {
        let max = self.settings.max_in_flight;
        let n = self.members.len();
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let at = (self.turn + k) % n;
            let m = &self.members[at];
            if !m.online || m.leaving || m.gone.is_some() || m.load.down.load(Ordering::Acquire) {
                continue;
            }
            let load = m.load.in_flight.load(Ordering::Acquire);
            if load < max && best.is_none_or(|(_, least)| load < least) {
                best = Some((at, load));
                if load == 0 {
                    break;
                }
            }
        }
        let (at, _) = best?;
        self.turn = (at + 1) % n;
        Some(at)
    }

    /// Hands waiting requests to members with room, oldest first; grows
    /// the pool when some are left.
    pub(crate) fn pump(&mut self, ctx: &mut Context<Self>) {
        let before = self.queue.borrow().len();
        loop {
            let Some(front_cancelled) = self.queue.borrow().front_cancelled() else { break };
            if front_cancelled {
                self.queue.borrow_mut().pop_front();
                continue;
            }
            let Some(at) = self.pick() else { break };
            let Some(item) = self.queue.borrow_mut().pop_front() else { break };
            item.dispatch(self, at);
        }
        let waiting = self.queue.borrow().len();
        if waiting != before {
            queue::arm(&self.queue, ctx);
        }
        // Also when a place came back, or a caller given one went straight
        // to a member.
        self.admit();
        if waiting + self.tickets.len() > 0 {
            self.grow(ctx);
        }
    }

    /// Whether a member could take a request now.
    pub(crate) fn has_room(&self) -> bool {
        let max = self.settings.max_in_flight;
        self.members.iter().any(|m| {
            m.online
                && !m.leaving
                && m.gone.is_none()
                && !m.load.down.load(Ordering::Acquire)
                && m.load.in_flight.load(Ordering::Acquire) < max
        })
    }

    /// What the answers look at to know whether to wake the pool.
    pub(crate) fn count_waiting(&self) {
        let waiting = self.queue.borrow().len() + self.tickets.len();
        self.shared.queued.store(waiting, Ordering::Release);
    }

    /// Drops the requests whose callers have gone, wherever they are in the
    /// queue, and the tickets of callers held back who have gone; their
    /// places go to the next.
    pub(crate) fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.queue.borrow_mut().sweep() > 0 {
            queue::arm(&self.queue, ctx);
        }
        self.tickets.retain(|ticket| !ticket.is_closed());
        self.admit();
    }

    /// The queue's timer fired: the requests past their deadline fail with
    /// their timeout, and it is armed for the next deadline.
    pub(crate) fn expire(&mut self, ctx: &mut Context<Self>) {
        queue::fired(&self.queue);
        let due = self.queue.borrow_mut().take_due(Instant::now());
        for item in due {
            item.expire();
        }
        queue::arm(&self.queue, ctx);
        self.admit();
    }

    /// Everything waiting fails with `e`.
    fn refuse_queued(&mut self, e: &WorkerError, ctx: &mut Context<Self>) {
        let queued = self.queue.borrow_mut().drain();
        // Callers held back send their requests again with no place, and
        // are told why.
        self.tickets.clear();
        self.shared.queued.store(0, Ordering::Release);
        queue::arm(&self.queue, ctx);
        for item in queued {
            item.refuse(e.clone());
        }
    }

    /// A member's event: kept track of, and passed on tagged.
    fn member_event(
        &mut self,
        index: usize,
        event: crate::parent::events::WorkerEvent<P>,
        handled: Option<actix::dev::OneshotSender<()>>,
        ctx: &mut Context<Self>,
    ) {
        use crate::parent::events::Event;
        if let Some(m) = self.member(index) {
            match &event.kind {
                Event::Online => {
                    m.online = true;
                    m.pid = event.pid;
                    m.load.down.store(false, Ordering::Release);
                }
                Event::Exit(_) => m.online = false,
                Event::GaveUp(g) => m.cause = g.cause.clone(),
                _ => {}
            }
        }
        let online = matches!(event.kind, Event::Online);
        let event = PoolEvent::Member { index, event };
        match (handled, &self.events) {
            // A mark of the member's events window: answered once the
            // recipient has handled it (a sender of its own, queued now, in
            // order with the others).
            (Some(handled), Some(recipient)) => {
                let mark = recipient.clone().send(event);
                actix_rt::spawn(async move {
                    let _ = mark.await;
                    let _ = handled.send(());
                });
            }
            (Some(handled), None) => {
                let _ = handled.send(());
            }
            (None, _) => self.emit(event),
        }
        if online {
            self.pump(ctx);
        }
    }

    /// Member `index` has stopped for good. One the pool closed is let go;
    /// any other (it gave up, or exited with no restart) is replaced,
    /// within the pool's own intensity.
    fn member_gone(&mut self, index: usize, status: Option<ExitStatus>, ctx: &mut Context<Self>) {
        let Some(m) = self.member(index) else { return };
        let closed_by_us = m.gone.is_some();
        let cause = m.cause.take();
        self.let_go(index);
        if closed_by_us || self.state != State::Running {
            return;
        }
        let exit = status.unwrap_or(ExitStatus { code: None, signal: None, lost: None });
        self.exits.push(exit);
        let policy = self.settings.replacements;
        match self.replacements.decide(&policy, exit, false, Instant::now()) {
            Decision::Restart { delay, .. } => {
                ctx.run_later(delay, |pool, ctx| {
                    if pool.state == State::Running {
                        if let Err(e) = pool.add_member(ctx) {
                            tracing::error!(pool = %pool.name, error = %e, "could not replace a member");
                        }
                        pool.pump(ctx);
                    }
                });
            }
            Decision::Stop | Decision::GiveUp => {
                let reason = format!(
                    "members stopped more than {} times within {:?}",
                    policy.max_restarts, policy.within
                );
                tracing::error!(pool = %self.name, %reason, "the pool gives up");
                let exits = self.exits.clone();
                self.gave_up = true;
                self.emit(PoolEvent::GaveUp(GaveUp { reason, exits, cause }));
                self.close(Grace::Default, ctx);
            }
        }
    }

    /// Closes every member (their `on_close` runs) and fails what waits.
    pub(crate) fn close(&mut self, grace: Grace, ctx: &mut Context<Self>) {
        if self.state != State::Running {
            return;
        }
        self.state = State::Closing;
        self.refuse_queued(&WorkerError::Terminating, ctx);
        for m in &self.members {
            m.addr.do_send(crate::parent::messages::Terminate(grace));
        }
        self.when_all_gone(ctx);
    }

    /// Once every member has exited for good: the pool's own end.
    fn when_all_gone(&mut self, ctx: &mut Context<Self>) {
        let joins: Vec<_> = self
            .members
            .iter()
            .map(|m| (m.index, m.addr.send(crate::parent::messages::Join)))
            .collect();
        let all = futures_util::future::join_all(
            joins.into_iter().map(|(i, j)| async move { (i, j.await.ok()) }),
        );
        ctx.spawn(actix::fut::wrap_future(all).map(|statuses, pool: &mut Self, _| {
            // The first member that failed; after giving up, the last exit
            // that led there.
            let failed = statuses.iter().filter_map(|(_, s)| *s).find(|s| !s.success());
            let given_up = pool.gave_up.then(|| pool.exits.last().copied()).flatten();
            let ok = ExitStatus { code: Some(0), signal: None, lost: None };
            let status = failed.or(given_up).unwrap_or(ok);
            pool.state = State::Stopped(status);
            for joiner in pool.joiners.drain(..) {
                let _ = joiner.send(status);
            }
            // Nothing of the members is held any more; the pool stays to
            // answer `Join` and refuse what comes.
            pool.retire_all();
        }));
    }
}

impl<P: Protocol> Actor for WorkerPool<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_timer(ctx);
        // Callers that went are looked for while anything waits: their
        // requests (up to the bound, or beyond it for a plain `send`) must
        // not stay until a member frees a place at the front (reliability
        // review, finding 10). A task of its own, as for one worker.
        let (pool, shared) = (ctx.address().downgrade(), Arc::downgrade(&self.shared));
        every(SWEEP, move || {
            let Some(shared) = shared.upgrade() else { return false };
            if shared.queued.load(Ordering::Acquire) > 0 {
                if let Some(pool) = pool.upgrade() {
                    pool.do_send(messages::Sweep);
                }
            }
            true
        });
    }

    /// The last address is gone: the members close the polite way (each
    /// within its shutdown timeout, as a worker whose address is dropped).
    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        self.refuse_queued(&WorkerError::Terminating, ctx);
        Running::Stop
    }
}
