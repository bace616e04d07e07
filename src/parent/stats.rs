//! How a worker or a pool is doing: the [`Stats`] message, what it
//! answers, and the recorder of recent round trips behind its percentiles.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::Message;

use crate::session::requests::Tally;

/// Asks a pool, or a single worker, how it is doing; resolves to
/// [`PoolStats`] (a single worker reports itself as a pool of one member).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats;

impl Message for Stats {
    type Result = PoolStats;
}

/// A pool's figures, from [`Stats`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Requests waiting for a member with room: at most the pool's
    /// [`queue`](crate::PoolBuilder::queue) bound, but for plain
    /// `send(Ask)`s under [`WhenFull::Wait`](crate::WhenFull::Wait).
    pub queued: usize,
    /// Callers held back at that bound under `WhenFull::Wait`: each waits
    /// for a place with its request in its own future
    /// ([`WorkerAddrExt::ask`](crate::WorkerAddrExt::ask)); the pool keeps
    /// a ticket of a few dozen bytes for it.
    pub waiting: usize,
    /// Each member: index, pid (0 before it is up), whether it is online,
    /// requests in flight.
    pub members: Vec<MemberStats>,
    /// Members with requests in flight.
    pub busy: usize,
    /// Online members with none.
    pub idle: usize,
    /// Requests answered, over the pool's life.
    pub completed: u64,
    /// Requests that failed in a member (its exit, a panic, a timeout).
    pub failed: u64,
    /// The median of the recent round trips (the last 1,024), from the
    /// pool or the worker taking a request to its answer.
    pub rtt_p50: Duration,
    /// Their 99th percentile.
    pub rtt_p99: Duration,
    /// Of the requests waiting, those asked with a timeout: each has an
    /// entry in the pool's deadline index until it leaves the queue (0 for
    /// a single worker, whose requests time out where they are).
    pub deadlines: usize,
    /// Timers the pool has armed for those deadlines: at most 1, however
    /// many wait (for the earliest).
    pub timers: usize,
}

/// One member's figures.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MemberStats {
    /// Its index (see [`PoolEvent::Member`](crate::PoolEvent::Member)).
    pub index: usize,
    /// Its process (0 before it is up).
    pub pid: u32,
    /// Whether it is online.
    pub online: bool,
    /// Requests it has in flight.
    pub in_flight: usize,
    /// Requests it answered.
    pub completed: u64,
    /// Requests that failed in it.
    pub failed: u64,
    /// The host it runs on ([`Host::name`](crate::Host::name)): `local`
    /// in a pool without hosts, and for one worker `local`, or `launched`
    /// when it was started through a launcher.
    pub host: std::sync::Arc<str>,
}

impl PoolStats {
    /// From the members' figures: busy and idle are counted from them.
    pub(crate) fn new(
        queued: usize,
        members: Vec<MemberStats>,
        (completed, failed): (u64, u64),
        (rtt_p50, rtt_p99): (Duration, Duration),
    ) -> Self {
        PoolStats {
            queued,
            busy: members.iter().filter(|m| m.in_flight > 0).count(),
            idle: members.iter().filter(|m| m.online && m.in_flight == 0).count(),
            members,
            completed,
            failed,
            rtt_p50,
            rtt_p99,
            waiting: 0,
            deadlines: 0,
            timers: 0,
        }
    }
}

impl MemberStats {
    /// Member `index`, process `pid`, on `host`, with its counts
    /// (`in_flight`, `completed`, `failed`).
    pub(crate) fn new(
        (index, pid, online): (usize, u32, bool),
        host: std::sync::Arc<str>,
        (in_flight, completed, failed): (usize, u64, u64),
    ) -> Self {
        MemberStats { index, pid, online, in_flight, completed, failed, host }
    }
}

/// One request in this many is timed for the percentiles.
const SAMPLE: u64 = 8;

/// How many round trips the percentiles look back on.
const WINDOW: usize = 1024;

/// When a request that starts now is timed for the percentiles: one in
/// [`SAMPLE`] of those asked on this thread (the percentiles need no more,
/// and the clock costs on every request). A count of the thread's, not
/// the asker's: no atomic on every request, and a port cloned for each
/// request (as one kept in shared state is) is timed one request in eight
/// too, not every time.
pub(crate) fn sampled() -> Option<Instant> {
    thread_local! {
        static ASKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = ASKED.get();
    ASKED.set(n.wrapping_add(1));
    n.is_multiple_of(SAMPLE).then(Instant::now)
}

/// Requests answered and failed, and the recent round trips.
#[derive(Default)]
pub(crate) struct Recorder {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// In microseconds, oldest first.
    rtts: Mutex<VecDeque<u32>>,
}

impl Recorder {
    /// A request started at `started` (if timed) finished.
    pub(crate) fn finish(&self, ok: bool, started: Option<Instant>) {
        if ok {
            self.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(started) = started {
            self.round_trip(started);
        }
    }

    /// Only the round trip (the counts are kept elsewhere).
    pub(crate) fn round_trip(&self, started: Instant) {
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut rtts) = self.rtts.lock() {
            if rtts.len() == WINDOW {
                rtts.pop_front();
            }
            rtts.push_back(micros);
        }
    }

    /// The median and 99th percentile of the round trips recorded.
    pub(crate) fn percentiles(&self) -> (Duration, Duration) {
        let mut sorted: Vec<u32> = match self.rtts.lock() {
            Ok(rtts) => rtts.iter().copied().collect(),
            Err(_) => return (Duration::ZERO, Duration::ZERO),
        };
        if sorted.is_empty() {
            return (Duration::ZERO, Duration::ZERO);
        }
        sorted.sort_unstable();
        let at = |q: usize| Duration::from_micros(u64::from(sorted[(sorted.len() - 1) * q / 100]));
        (at(50), at(99))
    }
}

/// A worker's requests whose slots count (see `Counted`) are counted here.
impl Tally for Recorder {
    fn finish(&self, ok: bool, started: Option<Instant>) {
        Recorder::finish(self, ok, started);
    }
}
