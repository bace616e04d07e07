//! One member of a pool, as the pool keeps it: its worker, its load as the
//! answers count it, and where it is in its life; and whether it takes
//! work, the condition every choice among members starts from.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;

use super::routing::Snapshot;
use crate::error::ExitStatus;
use crate::parent::direct::Direct;
use crate::parent::worker::Worker;
use crate::protocol::Protocol;

/// One member of the pool.
pub(crate) struct Member<P: Protocol> {
    pub index: usize,
    pub addr: Addr<Worker<P>>,
    pub load: Arc<Load>,
    pub pid: u32,
    pub online: bool,
    /// Being recycled or shrunk away: no new work.
    pub leaving: bool,
    /// Requests given to it.
    pub given: u64,
    /// When it last had nothing in flight and was given something, or
    /// finished its last.
    pub busy_at: Instant,
    /// Closed by the pool, or stopped for good: nothing is routed to it.
    pub gone: Option<ExitStatus>,
    /// The pool's host it runs on (`hosts.rs`), if the pool has hosts.
    pub host: Option<usize>,
    /// Runs on another machine, through a launcher.
    pub remote: bool,
    /// Has been online once.
    pub was_online: bool,
    /// Its line past its mailbox, once open (`parent/direct.rs`).
    pub direct: Option<Direct<P>>,
}

impl<P: Protocol> Member<P> {
    /// Member `index`, just started: not online yet, given nothing.
    pub(crate) fn new(
        index: usize,
        addr: Addr<Worker<P>>,
        host: Option<usize>,
        remote: bool,
    ) -> Self {
        Member {
            index,
            addr,
            load: Arc::default(),
            pid: 0,
            online: false,
            leaving: false,
            given: 0,
            busy_at: Instant::now(),
            gone: None,
            host,
            remote,
            was_online: false,
            direct: None,
        }
    }

    /// Whether it takes work: not leaving (recycled, shrunk away), not
    /// closed by the pool or stopped for good.
    pub(crate) fn takes_work(&self) -> bool {
        !self.leaving && self.gone.is_none()
    }

    /// Whether a request can go to it now: it takes work, is online, and
    /// its process is not known to be down.
    pub(crate) fn ready(&self) -> bool {
        self.takes_work() && self.online && !self.load.down.load(Ordering::Acquire)
    }

    /// Requests it has in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.load.in_flight.load(Ordering::Acquire)
    }

    /// What routing looks at (`routing.rs`).
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            takes_work: self.takes_work(),
            ready: self.ready(),
            in_flight: self.in_flight(),
            remote: self.remote,
        }
    }
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
