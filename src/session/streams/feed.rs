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

pub(super) struct FeedState<P> {
    pub pieces: VecDeque<P>,
    /// The reader's, while it waits: taken by the piece that ends the wait.
    pub waker: Option<Waker>,
    /// The reader went: nothing more is kept.
    pub closed: bool,
}

impl<P> Feed<P> {
    pub(super) fn new() -> Arc<Self> {
        let state = FeedState { pieces: VecDeque::new(), waker: None, closed: false };
        Arc::new(Feed { state: Mutex::new(state) })
    }

    pub(super) fn state(&self) -> MutexGuard<'_, FeedState<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `pieces` and then `last`, if any, for the reader, unless it
    /// went; the reader's waker, if it waits for them.
    pub(super) fn push(&self, pieces: &mut Vec<P>, last: Option<P>) -> Option<Waker> {
        let mut state = self.state();
        if state.closed {
            pieces.clear();
            return None;
        }
        state.pieces.extend(pieces.drain(..).chain(last));
        state.waker.take()
    }
}
