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
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let limit = limit(floor);
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    while all.len() >= limit {
        let mut counts = std::collections::HashMap::<u64, usize>::new();
        for (_, each, _) in all.iter() {
            *counts.entry(*each).or_default() += 1;
        }
        let most = counts.into_iter().max_by_key(|&(_, n)| n).map(|(each, _)| each);
        let at = all.iter().position(|(_, each, _)| Some(*each) == most).unwrap_or(0);
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
