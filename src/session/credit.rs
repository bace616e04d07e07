//! The window of a streamed answer, as its producer sees it (see
//! `produce.rs`; kept with the answers owed in `answers.rs`).

use std::cell::Cell;
use std::task::Waker;

/// The most credit a producer keeps: a grant beyond it is clipped, so that
/// no asker can make the count overflow (or ask for more than a producer
/// would ever hold queued).
const MAX_CREDIT: i64 = 1 << 40;

/// The bytes a streamed answer may still send (see `produce.rs`): granted by the asker,
/// taken by each item sent.
#[derive(Default)]
pub(crate) struct Credit {
    bytes: Cell<i64>,
    /// The producer, waiting for credit.
    pub(super) waiting: Cell<Option<Waker>>,
}

impl Credit {
    /// The asker has room for `bytes` more.
    pub(crate) fn grant(&self, bytes: u64) {
        let more = i64::try_from(bytes).unwrap_or(MAX_CREDIT);
        self.bytes.set(self.bytes.get().saturating_add(more).min(MAX_CREDIT));
        if self.bytes.get() > 0 {
            if let Some(waker) = self.waiting.take() {
                waker.wake();
            }
        }
    }

    pub(super) fn spend(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(MAX_CREDIT);
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
    }

    pub(super) fn has_room(&self) -> bool {
        self.bytes.get() > 0
    }
}
