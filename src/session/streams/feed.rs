//! The queue between a streamed answer's slot and its reader.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// The queue between a stream's slot, on the side's reading thread, and
/// its reader, on the caller's: the pieces in order, and the reader's
/// waker while it waits for more.
///
/// The slot stages the items of one read of the connection and hands
/// them on together once the read is handled (`Pending::hand_on_staged`),
/// and the reader takes every piece there is at once: the feed's lock is
/// taken, and a reader that keeps up is woken, once per batch the other
/// side wrote, not once per item.
pub(super) struct Feed<P> {
    state: Mutex<FeedState<P>>,
}

struct FeedState<P> {
    pieces: VecDeque<P>,
    /// The reader's, while it waits: taken by the piece that ends the wait.
    waker: Option<Waker>,
    /// The reader went: nothing more is kept.
    closed: bool,
}

impl<P> Feed<P> {
    pub(super) fn new() -> Arc<Self> {
        let state = FeedState { pieces: VecDeque::new(), waker: None, closed: false };
        Arc::new(Feed { state: Mutex::new(state) })
    }

    fn state(&self) -> MutexGuard<'_, FeedState<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `pieces` and then `last`, if any, for the reader, unless it
    /// went; the reader's waker, if it waits for them.
    pub(super) fn push(&self, pieces: &mut Vec<P>, last: Option<P>) -> Option<Waker> {
        if pieces.is_empty() && last.is_none() {
            return None;
        }
        let mut state = self.state();
        if state.closed {
            pieces.clear();
            return None;
        }
        state.pieces.extend(pieces.drain(..).chain(last));
        state.waker.take()
    }

    /// Every piece queued, all at once (the lock is taken once per batch);
    /// none: the reader waits, and `waker` is woken by the next.
    pub(super) fn take(&self, waker: &Waker) -> VecDeque<P> {
        let mut state = self.state();
        if state.pieces.is_empty() {
            match &state.waker {
                Some(waiting) if waiting.will_wake(waker) => {}
                _ => state.waker = Some(waker.clone()),
            }
        }
        // Taken, not swapped with the reader's: the feed starts afresh,
        // and the room of the batch read before goes, so that a stream
        // holds room for one window's items at most, not for two.
        std::mem::take(&mut state.pieces)
    }

    /// Whether the reader went.
    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// The reader goes: nothing more is queued, and what was is dropped
    /// now (outside the lock).
    pub(super) fn close(&self) {
        let pieces = {
            let mut state = self.state();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.pieces)
        };
        drop(pieces);
    }
}
