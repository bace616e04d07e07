//! The pool's actor: what it keeps (its members, its queue, the callers
//! held back at the queue's bound, what its answers share with it), how it
//! starts, and its life as an actor. What it does with each message is in
//! the rooms around it (see `mod.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Recipient, Running, WeakAddr};

use super::events::PoolEvent;
use super::hosts::Host;
use super::member::{Load, Member};
use super::queue::{Place, Pump, Queue, Sweep};
use crate::error::{ExitStatus, SpawnError, WireError, WorkerError};
use crate::parent::options::{Options, WhenFull};
use crate::parent::stats::Recorder;
use crate::parent::worker::every;
use crate::protocol::Protocol;
use crate::supervise::{History, RestartPolicy};

/// How often a pool with requests waiting looks for callers that went.
pub(crate) const SWEEP: Duration = Duration::from_millis(100);

/// Many worker processes behind one address, for CPU-bound work and work
/// to keep apart from the parent. Start one with [`WorkerPool::builder`]:
/// every option of a single worker, and the pool's own (size, queue,
/// scaling, recycling).
///
/// The pool is an actor that takes what a single
/// [`Worker`](crate::Worker) takes ([`Post`](crate::Post),
/// [`Ask`](crate::Ask), [`Terminate`](crate::Terminate),
/// [`Join`](crate::Join)), plus [`Broadcast`](crate::Broadcast) and
/// [`Stats`](crate::Stats); [`WorkerAddrExt`](crate::WorkerAddrExt) works on
/// its address too. An ask goes to the member with the fewest requests in
/// flight among those with room, or waits in the pool's queue until one
/// has room; a post goes to one member in turn. A member that crashes is
/// restarted by its own policy, and what it had in flight fails with
/// [`WorkerError::Exited`](crate::WorkerError::Exited) (never sent again);
/// one that gives up is replaced. The pool grows while requests wait,
/// shrinks when idle, and recycles members after a number of requests or
/// past a memory size.
///
/// ```no_run
/// use actix::prelude::*;
/// use actix_webworker::{Protocol, WorkerAddrExt, WorkerError, WorkerPool};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct CountPrimes(u64);
///
/// struct Primes;
/// impl Protocol for Primes {
///     type ToWorker = ();
///     type FromWorker = ();
/// }
///
/// async fn count(bounds: Vec<u64>) -> Result<Vec<u64>, WorkerError> {
///     // Four processes running the entry "primes" (see `run_if_worker`),
///     // each taking one job at a time.
///     let pool = WorkerPool::<Primes>::builder()
///         .entry("primes")
///         .size(4)
///         .max_in_flight_per_worker(1)
///         .start()
///         .expect("the pool starts");
///     let jobs = bounds.into_iter().map(|bound| pool.ask(CountPrimes(bound)));
///     futures_util::future::join_all(jobs).await.into_iter().collect()
/// }
/// ```
pub struct WorkerPool<P: Protocol> {
    pub(super) name: Arc<str>,
    pub(super) options: Options,
    pub(super) settings: Settings,
    pub(super) members: Vec<Member<P>>,
    pub(super) next_index: usize,
    /// Where a member goes next among equals.
    pub(super) turn: usize,
    /// Requests waiting for a member with room, oldest first, with their
    /// deadlines (`queue.rs`).
    pub(super) queue: Rc<RefCell<Queue<WorkerPool<P>>>>,
    /// Callers held back at the queue's bound, oldest first: each waits,
    /// its request in its own future, for a place (`waiting.rs`).
    pub(super) tickets: VecDeque<tokio::sync::oneshot::Sender<Place>>,
    /// Places given to callers held back, whose requests are on their way.
    pub(super) places: usize,
    /// What the members' answers tell the pool.
    pub(super) common: Arc<Common<P>>,
    pub(super) events: Option<Recipient<PoolEvent<P>>>,
    pub(super) replacements: History,
    pub(super) exits: Vec<ExitStatus>,
    pub(super) state: State,
    pub(super) joiners: Vec<tokio::sync::oneshot::Sender<ExitStatus>>,
    /// Recent round trips.
    pub(super) rtts: Arc<Recorder>,
    /// What members no longer in the pool completed and failed.
    pub(super) completed_before: u64,
    pub(super) failed_before: u64,
    /// Members stopped more often than the pool's intensity allows.
    pub(super) gave_up: bool,
    /// Why the pool gave up at once: a member met a failure certain to
    /// meet every other (no such entry, other message types, another
    /// codec). What the pool refuses from then on says so.
    pub(super) cause: Option<WireError>,
    /// Where members run (`hosts.rs`); empty: here, as the options say.
    pub(super) hosts: Vec<Placed>,
}

/// A host of the pool, and whether it is taken for down.
pub(crate) struct Placed {
    pub host: Host,
    pub down_until: Option<Instant>,
}

/// Where the pool is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    /// Terminate, or giving up: members are closing, nothing is taken.
    Closing,
    /// Every member has exited for good.
    Stopped(ExitStatus),
}

/// The pool's own options (`builder.rs` has their defaults).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub min: usize,
    pub max: usize,
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub when_full: WhenFull,
    pub idle_timeout: Duration,
    pub max_requests: Option<u64>,
    pub max_rss: Option<u64>,
    pub replacements: RestartPolicy,
    /// Of members as loaded, one on this machine first.
    pub prefer_local: bool,
}

/// What the pool has in common with the answers, which run outside the
/// actor and tell it what they see.
pub(crate) struct Common<P: Protocol> {
    /// How many requests wait in the queue, and callers held back: an
    /// answer that frees a place while some wait wakes the pool.
    pub queued: AtomicUsize,
    /// A `Pump` is on its way to the pool: the answers that come before
    /// it is handled need not send another (one read of a member's link
    /// finishes many requests; the pool fills all the places they free on
    /// one turn).
    pub pumping: AtomicBool,
    pub pool: WeakAddr<WorkerPool<P>>,
    pub rtts: Arc<Recorder>,
}

impl<P: Protocol> Common<P> {
    /// A request of a member finished (`exited`: with its process's exit).
    pub(crate) fn finished(&self, load: &Load, ok: bool, exited: bool, started: Instant) {
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
        if self.queued.load(Ordering::Acquire) > 0 && !self.pumping.swap(true, Ordering::AcqRel) {
            if let Some(pool) = self.pool.upgrade() {
                pool.do_send(Pump);
            }
        }
    }
}

impl<P: Protocol> WorkerPool<P> {
    pub(crate) fn start_with(
        options: Options,
        settings: Settings,
        events: Option<Recipient<PoolEvent<P>>>,
        hosts: Vec<Host>,
    ) -> Result<Addr<Self>, SpawnError> {
        let hosts = hosts.into_iter().map(|host| Placed { host, down_until: None }).collect();
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
                common: Arc::new(Common {
                    queued: AtomicUsize::new(0),
                    pumping: AtomicBool::new(false),
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
                cause: None,
                hosts,
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

    /// What a request or post is refused with once the pool no longer
    /// runs: the cause it gave up for, if certain, or its state.
    pub(super) fn refusal(&self) -> WorkerError {
        match (&self.cause, self.state) {
            (Some(cause), _) => WorkerError::Wire(cause.clone()),
            (None, State::Stopped(status)) => WorkerError::Exited(status),
            (None, _) => WorkerError::Terminating,
        }
    }

    pub(crate) fn emit(&self, event: PoolEvent<P>) {
        if let Some(recipient) = &self.events {
            recipient.do_send(event);
        }
    }

    pub(crate) fn member(&mut self, index: usize) -> Option<&mut Member<P>> {
        self.members.iter_mut().find(|m| m.index == index)
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
        let (pool, common) = (ctx.address().downgrade(), Arc::downgrade(&self.common));
        every(SWEEP, move || {
            let Some(common) = common.upgrade() else { return false };
            if common.queued.load(Ordering::Acquire) > 0 {
                if let Some(pool) = pool.upgrade() {
                    pool.do_send(Sweep);
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
