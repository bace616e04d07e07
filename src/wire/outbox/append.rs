//! Posts appended to the run at the outbox's tail (see `run.rs`), and the
//! buffers runs are written in let go.

use super::run::RunBufs;
use super::{Outbox, Outgoing, State};

impl Outbox {
    /// Whether a message of `len` bytes goes in under the bound. One
    /// message is always accepted into an empty queue, however large (its
    /// size was checked against the message limit already).
    #[inline]
    pub(super) fn has_room(&self, state: &State, len: usize) -> bool {
        state.queue.is_empty()
            || (state.messages < self.max_messages && state.bytes + len <= self.max_bytes)
    }

    /// Queues `msg`, a post without descriptors of at most
    /// `BATCH_MESSAGE_MAX` bytes, in the run of posts at the queue's tail,
    /// or in a new one there (see `run.rs`), the whole batch within
    /// `limit` bytes. False when refused (the queue ended or at its bound,
    /// or `limit` too small for a batch of it): the caller queues it as a
    /// message of its own, which says why or goes alone.
    pub(crate) fn append_post(&self, msg: &[u8], limit: usize) -> bool {
        let mut state = self.lock();
        if state.ended || !self.has_room(&state, msg.len()) {
            return false;
        }
        let was_empty = state.queue.is_empty();
        let state = &mut *state;
        let appended = match state.queue.back_mut() {
            Some(Outgoing::Posts(run)) => run.append(msg, limit),
            _ => false,
        };
        if !appended {
            let Some(run) = state.runs.start(msg, limit) else { return false };
            state.queue.push_back(Outgoing::Posts(run));
        }
        state.messages += 1;
        state.bytes += msg.len();
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Lets go of the buffers runs are written in (a writer with no work).
    pub(crate) fn release_runs(&self) {
        self.lock().runs = RunBufs::default();
    }

    #[cfg(test)]
    pub(crate) fn holds_run_buffers(&self) -> bool {
        self.lock().runs.holding()
    }
}
