//! What all of this process's ports hold for connections whose token is
//! being read (`remote.rs`). Each port checks at most `MAX_CHECKING` at
//! once; all of them together at most a quarter of the soft
//! `RLIMIT_NOFILE` (at least one port's worth): beyond, the oldest of the
//! port that holds the most is closed to make room for a new one, so that
//! a crowd at one port does not close a worker's connection at another.
//! A stranger who can reach many ports
//! (a pool of many remote members) would otherwise hold 64 descriptors at
//! each, up to the parent's limit, and nothing else could open one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::future::AbortHandle;
use nix::sys::resource::{getrlimit, Resource};

/// Every connection being checked, of every port, oldest first: its id,
/// its port's, and how to close it.
static ALL: Mutex<VecDeque<(u64, u64, AbortHandle)>> = Mutex::new(VecDeque::new());

/// The next id, of a connection or a port.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// An id for a new port, unique in the process.
pub(crate) fn port() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How many connections all ports may check at once: a quarter of the
/// soft descriptor limit, at least `floor`.
fn limit(floor: usize) -> usize {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).max(floor)
}

/// Counts a new connection of `port` among those checked, first closing
/// the oldest of the port that holds the most while there are as many as
/// the limit (at least `floor`); its id, unique in the process.
pub(crate) fn admit(abort: AbortHandle, port: u64, floor: usize) -> u64 {
    admit_within(abort, port, limit(floor))
}

/// [`admit`] under `limit`. Of ports that hold as many, the one whose
/// oldest is oldest gives it up: a worker's connection, the only one at
/// its port, is closed only once it is the oldest of all (a tie broken at
/// random closed it among the newest).
fn admit_within(abort: AbortHandle, port: u64, limit: usize) -> u64 {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    while all.len() >= limit {
        let mut counts = std::collections::HashMap::<u64, usize>::new();
        for (_, each, _) in all.iter() {
            *counts.entry(*each).or_default() += 1;
        }
        let most = counts.values().copied().max().unwrap_or(0);
        let at = all.iter().position(|(_, each, _)| counts.get(each) == Some(&most)).unwrap_or(0);
        match all.remove(at) {
            Some((_, _, oldest)) => oldest.abort(),
            None => break,
        }
    }
    all.push_back((id, port, abort));
    id
}

/// Connection `id` is no longer being checked (its check ended, or its
/// port closed).
pub(crate) fn done(id: u64) {
    ALL.lock().unwrap_or_else(|e| e.into_inner()).retain(|(each, _, _)| *each != id);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One connection at each of as many ports as the limit (a pool of
    /// that many remote members, one stranger's connection at each), then
    /// a worker's at a port of its own, then fewer than the limit more of
    /// the stranger's, each at another port: the worker's, newer than all
    /// those there before it, must not be the one closed.
    #[test]
    fn among_ports_that_hold_as_many_the_oldest_connection_is_closed() {
        let limit = 64;
        let mut closed = 0;
        for _ in 0..20 {
            let mut ids = Vec::new();
            let mut stranger = || ids.push(admit_within(AbortHandle::new_pair().0, port(), limit));
            for _ in 0..limit {
                stranger();
            }
            let (worker, _) = AbortHandle::new_pair();
            let id = admit_within(worker.clone(), port(), limit);
            for _ in 0..limit / 2 {
                stranger();
            }
            closed += usize::from(worker.is_aborted());
            for id in ids.into_iter().chain([id]) {
                done(id);
            }
        }
        assert_eq!(closed, 0, "the newest connection closed in {closed} of 20 rounds");
    }
}
