//! What the messages received from workers hold of this process, all
//! workers together: bytes (payloads and shared buffers) and descriptors.
//!
//! Each worker's events window bounds what that worker makes the parent
//! hold (`parent/sink.rs`); this bounds their sum. A message received
//! carries a [`Held`] for its share, taken when it is read and given back
//! when it is dropped (handled, or kept for as long as the application
//! keeps it): a live count, whoever has the message. A worker with events
//! of its own unhandled is read no further while the total is at its limit
//! (`Limits::events_total_bytes`, `events_total_fds`); one whose events
//! have all been handled always takes one more, so none starves.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::sync::Notify;

/// What one message holds: the bytes of its payload and shared buffers
/// (each file once), and its descriptors (its own and its buffers').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holds {
    pub bytes: usize,
    pub fds: usize,
}

// Sequentially consistent, all of them: a drop that sees no one waiting
// and a waiter that sees the total still at its limit cannot both be
// right, so one of the two always sees the other.
static BYTES: AtomicU64 = AtomicU64::new(0);
static FDS: AtomicU64 = AtomicU64::new(0);
/// How many wait for something to be given back: until one does, a drop
/// need not wake anyone.
static WAITING: AtomicUsize = AtomicUsize::new(0);

fn given_back() -> &'static Notify {
    static GIVEN_BACK: OnceLock<Notify> = OnceLock::new();
    GIVEN_BACK.get_or_init(Notify::new)
}

/// One message's share of the total, given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held(Holds);

impl Held {
    /// Takes `holds` into the total.
    pub(crate) fn take(holds: Holds) -> Held {
        if holds != Holds::default() {
            BYTES.fetch_add(holds.bytes as u64, Ordering::SeqCst);
            FDS.fetch_add(holds.fds as u64, Ordering::SeqCst);
        }
        Held(holds)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0 == Holds::default() {
            return;
        }
        BYTES.fetch_sub(self.0.bytes as u64, Ordering::SeqCst);
        FDS.fetch_sub(self.0.fds as u64, Ordering::SeqCst);
        if WAITING.load(Ordering::SeqCst) > 0 {
            given_back().notify_waiters();
        }
    }
}

/// The total held now.
pub(crate) fn total() -> Holds {
    Holds { bytes: BYTES.load(Ordering::SeqCst) as usize, fds: FDS.load(Ordering::SeqCst) as usize }
}

/// Resolves once something is given back, if `still` holds when the wait
/// starts (checked after the waiter is registered: nothing given back in
/// between is missed).
pub(crate) async fn given_back_while(still: impl Fn() -> bool) {
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            WAITING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    WAITING.fetch_add(1, Ordering::SeqCst);
    let _waiting = Waiting;
    let notified = given_back().notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if still() {
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_held_until_dropped() {
        // Other tests in this process hold messages too: differences only.
        let share = Holds { bytes: 1 << 40, fds: 1 << 30 };
        let before = total();
        let held = Held::take(share);
        let during = total();
        assert!(during.bytes >= before.bytes + (1 << 40) - (1 << 39));
        drop(held);
        assert!(total().bytes < 1 << 39);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // Nothing to wait for: resolves at once.
        rt.block_on(given_back_while(|| false));
    }
}
