//! The options of a pool: those of its members (every option of one
//! worker), and how many members, how much work each takes at once, where
//! the rest waits, and when members are replaced, recycled and scaled.

use std::time::Duration;

use actix::{Addr, Recipient};

use super::events::PoolEvent;
use super::hosts::Host;
use super::worker_pool::{Settings, WorkerPool};
use crate::error::SpawnError;
use crate::parent::builder::WorkerBuilder;
use crate::parent::options::WhenFull;
use crate::protocol::Protocol;
use crate::supervise::{Restart, RestartPolicy};

/// A builder of a pool, from [`WorkerPool::builder`]: every option of one
/// worker (each member is built from them: entry, environment, limits,
/// restart policy, transport), and the pool's own: its size
/// ([`size`](WorkerBuilder::size), or [`min`](WorkerBuilder::min) and
/// [`max`](WorkerBuilder::max)), the work each member takes at once
/// ([`max_in_flight_per_worker`](WorkerBuilder::max_in_flight_per_worker)),
/// its queue ([`queue`](WorkerBuilder::queue)), scaling, recycling,
/// replacements and [`events`](WorkerBuilder::events).
///
/// ```no_run
/// use std::time::Duration;
/// use actix_webworker::{Protocol, WhenFull, WorkerPool};
///
/// struct Jobs;
/// impl Protocol for Jobs {
///     type ToWorker = String;
///     type FromWorker = String;
/// }
///
/// # fn start() -> Result<(), actix_webworker::SpawnError> {
/// let pool = WorkerPool::<Jobs>::builder()
///     .entry("jobs")                          // the members' entry (run_if_worker)
///     .env("RUST_LOG", "info")                // for every member
///     .min(2)                                 // two members always,
///     .max(8)                                 // up to eight while requests wait,
///     .idle_timeout(Duration::from_secs(30))  // back to two when idle
///     .max_in_flight_per_worker(4)
///     .queue(1_000, WhenFull::Fail)           // beyond 1,000 waiting: QueueFull
///     .max_requests(10_000)                   // each member recycled after 10,000
///     .start()?;
/// # drop(pool);
/// # Ok(())
/// # }
/// ```
pub type PoolBuilder<P> = WorkerBuilder<P, Pooled<P>>;

/// What a builder of a pool has beyond the options of its members (its
/// size, queue, scaling, recycling, events). Never named in your code: it
/// is the second parameter of [`PoolBuilder`], which
/// [`WorkerPool::builder`] returns, and selects the pool's methods.
pub struct Pooled<P: Protocol> {
    pub(crate) settings: Settings,
    pub(crate) events: Option<Recipient<PoolEvent<P>>>,
    pub(crate) hosts: Vec<Host>,
}

/// The pool's own options' defaults.
impl<P: Protocol> Default for Pooled<P> {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pooled {
            settings: Settings {
                min: n,
                max: n,
                max_in_flight: 16,
                max_queued: 10_000,
                when_full: WhenFull::Wait,
                idle_timeout: Duration::from_secs(60),
                max_requests: None,
                max_rss: None,
                replacements: RestartPolicy::default()
                    .restart(Restart::Always)
                    .intensity(10, Duration::from_secs(60))
                    .backoff(Duration::from_millis(100), Duration::from_secs(5)),
                prefer_local: true,
            },
            events: None,
            hosts: Vec::new(),
        }
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// Options for a pool of workers speaking protocol `P`: every option of
    /// [`Worker::builder`](crate::Worker::builder) (each member is built
    /// from them), and the pool's own.
    pub fn builder() -> PoolBuilder<P> {
        WorkerBuilder::new()
    }
}

impl<P: Protocol> WorkerBuilder<P, Pooled<P>> {
    /// A pool of exactly `n` members (at least 1). Default: the machine's
    /// available parallelism.
    pub fn size(self, n: usize) -> Self {
        self.min(n).max(n)
    }

    /// At least `n` members, started with the pool; more (up to
    /// [`max`](Self::max)) while requests wait, back to `n` once members
    /// have been idle for the [`idle_timeout`](Self::idle_timeout).
    pub fn min(mut self, n: usize) -> Self {
        let s = &mut self.kind_mut().settings;
        s.min = n.max(1);
        s.max = s.max.max(s.min);
        self
    }

    /// At most `n` members (at least [`min`](Self::min)).
    pub fn max(mut self, n: usize) -> Self {
        let s = &mut self.kind_mut().settings;
        s.max = n.max(1);
        s.min = s.min.min(s.max);
        self
    }

    /// How many requests one member has at once (default 16). A request
    /// goes to the member with the fewest; when every member has this many,
    /// requests wait in the pool's queue and go to whichever member
    /// finishes first. For long jobs of uneven length, 1 or 2 spreads them
    /// best; for tiny ones, more keeps each member's pipe full.
    pub fn max_in_flight_per_worker(mut self, n: usize) -> Self {
        self.kind_mut().settings.max_in_flight = n.max(1);
        self
    }

    /// How many requests may wait in the pool's queue (default 10,000), and
    /// what happens beyond: [`WhenFull::Wait`] (the default) holds the
    /// caller back, [`WhenFull::Fail`] refuses with
    /// [`WorkerError::QueueFull`](crate::WorkerError::QueueFull). A caller
    /// of [`ask`](crate::WorkerAddrExt::ask) held back keeps its request in
    /// its own future until the pool gives it a place (the pool keeps a
    /// small ticket for it: [`PoolStats::waiting`](crate::PoolStats)); a
    /// plain `send(Ask)` is queued beyond the bound. The pool's own mailbox
    /// never pauses: terminate, stats and the members' events go on
    /// meanwhile.
    pub fn queue(mut self, max_queued: usize, when_full: WhenFull) -> Self {
        let s = &mut self.kind_mut().settings;
        s.max_queued = max_queued.max(1);
        s.when_full = when_full;
        self
    }

    /// How long a member above [`min`](Self::min) may stay idle before it
    /// is closed (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.kind_mut().settings.idle_timeout = timeout;
        self
    }

    /// Recycles a member after it has been given `n` requests: a
    /// replacement starts first, the old member finishes what it has, then
    /// closes gracefully (its `on_close` runs).
    pub fn max_requests(mut self, n: u64) -> Self {
        self.kind_mut().settings.max_requests = Some(n.max(1));
        self
    }

    /// Recycles a member whose resident memory passes `bytes` (looked at
    /// once a second), as [`max_requests`](Self::max_requests) does.
    /// Members on this machine only: one started through a launcher
    /// (another host) is not looked at, since the process here is the
    /// launcher's.
    pub fn max_rss(mut self, bytes: u64) -> Self {
        self.kind_mut().settings.max_rss = Some(bytes);
        self
    }

    /// How often members that gave up (see
    /// [`WorkerBuilder::restart`](crate::WorkerBuilder::restart)) are
    /// replaced: at most `max` times within `within` (default 10 in 60 s).
    /// Beyond that the pool gives up: [`PoolEvent::GaveUp`], every member
    /// is closed and requests fail.
    pub fn replacements(mut self, max: u32, within: Duration) -> Self {
        let s = &mut self.kind_mut().settings;
        s.replacements = s.replacements.intensity(max, within);
        self
    }

    /// Where the pool's events go: each member's events, tagged with its
    /// index, and the pool's own.
    pub fn events(mut self, recipient: Recipient<PoolEvent<P>>) -> Self {
        self.kind_mut().events = Some(recipient);
        self
    }

    /// Starts the pool and its first members. Requests sent before they are
    /// up wait in the pool's queue, in order.
    ///
    /// Must be called inside a running actix System.
    pub fn start(self) -> Result<Addr<WorkerPool<P>>, SpawnError> {
        let (options, pooled) = self.into_options()?;
        WorkerPool::start_with(options, pooled.settings, pooled.events, pooled.hosts)
    }

    /// Spreads the members over `hosts` (see [`Host`]): each new member
    /// goes to the host up with room and the fewest members (of equals, the
    /// first given). Default: every member on this machine, started as the
    /// builder says.
    ///
    /// Members on hosts are not restarted in place (their own
    /// [`restart`](Self::restart) policy is set aside): the pool replaces
    /// a member that stops, within [`replacements`](Self::replacements),
    /// on the host placement picks. A host where a member was lost (its
    /// connection silent past the [`heartbeat`](Self::heartbeat), or cut)
    /// or could not be started is passed over for its
    /// [`retry_after`](Host::retry_after). [`PoolStats`](crate::PoolStats)
    /// and [`PoolEvent::Started`] say which host each member is on.
    pub fn hosts(mut self, hosts: impl IntoIterator<Item = Host>) -> Self {
        self.kind_mut().hosts = hosts.into_iter().collect();
        self
    }

    /// Whether, of members with as many requests in flight, one on this
    /// machine gets the request before one on another host (default
    /// `true`); `false`: the first in turn, wherever it runs.
    pub fn prefer_local(mut self, prefer: bool) -> Self {
        self.kind_mut().settings.prefer_local = prefer;
        self
    }
}
