//! The queue of messages on their way out, shared by whoever posts (the
//! `Worker` actor in the parent, the worker's context in the child) and the
//! writer task that drains it.
//!
//! It is the "queued until the child is ready" of the original: nothing
//! drains it until the handshake is done, and it outlives any one
//! connection, so what was not yet written when a child died goes to the
//! next one. The writer takes everything queued in one swap, feeds it to the
//! WebSocket and flushes once: one syscall for a batch, not one per message.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use bytes::Bytes;

use crate::error::WorkerError;

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue is at its bound.
    Full,
    /// The queue takes no more messages.
    Ended,
}

/// One item for the writer.
pub(crate) enum Outgoing {
    /// A complete message (header and payload) and its descriptors.
    Frame { bytes: Bytes, fds: Vec<OwnedFd> },
    /// Close the connection after everything queued before this.
    End,
}

struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    /// Pushes are refused.
    ended: bool,
    /// The `End` item has been queued.
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of [`Outgoing`] items.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Something was queued (for the writer).
    ready: Notify,
    /// The queue was emptied (for senders waiting for room).
    room: Notify,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                ended: false,
                closed: false,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            max_messages,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; fails when the queue is full or has been ended.
    pub(crate) fn push(&self, bytes: Bytes, fds: Vec<OwnedFd>) -> Result<(), WorkerError> {
        self.try_push(bytes, fds).map_err(|(refusal, _, _)| self.error(refusal))
    }

    /// The error a refusal means to the sender.
    pub(crate) fn error(&self, refusal: Refusal) -> WorkerError {
        match refusal {
            Refusal::Full => WorkerError::QueueFull { limit: self.max_messages },
            Refusal::Ended => WorkerError::Terminating,
        }
    }

    /// Queues a message, or gives it back with the reason it was refused.
    pub(crate) fn try_push(
        &self,
        bytes: Bytes,
        fds: Vec<OwnedFd>,
    ) -> Result<(), (Refusal, Bytes, Vec<OwnedFd>)> {
        let state = self.lock();
        if state.ended {
            return Err((Refusal::Ended, bytes, fds));
        }
        // One message is always accepted into an empty queue, however large
        // (its size was checked against the message limit already).
        if !state.queue.is_empty()
            && (state.queue.len() >= self.max_messages
                || state.bytes + bytes.len() > self.max_bytes)
        {
            return Err((Refusal::Full, bytes, fds));
        }
        self.enqueue(state, bytes, fds);
        Ok(())
    }

    /// Queues a message, waiting for room while the queue is full.
    pub(crate) async fn push_waiting(
        &self,
        mut bytes: Bytes,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), WorkerError> {
        loop {
            // Registered before the check, so a batch taken in between
            // still wakes us.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(bytes, fds) {
                Ok(()) => return Ok(()),
                Err((Refusal::Full, b, f)) => {
                    (bytes, fds) = (b, f);
                    room.await;
                }
                Err((refusal, _, _)) => return Err(self.error(refusal)),
            }
        }
    }

    fn enqueue(&self, mut state: MutexGuard<'_, State>, bytes: Bytes, fds: Vec<OwnedFd>) {
        let was_empty = state.queue.is_empty();
        state.bytes += bytes.len();
        state.queue.push_back(Outgoing::Frame { bytes, fds });
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Queues a last message (whatever the limits) and refuses later pushes.
    pub(crate) fn push_last(&self, bytes: Bytes) -> Result<(), WorkerError> {
        let mut state = self.lock();
        if state.ended {
            return Err(WorkerError::Terminating);
        }
        state.ended = true;
        let was_empty = state.queue.is_empty();
        state.bytes += bytes.len();
        state.queue.push_back(Outgoing::Frame { bytes, fds: Vec::new() });
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues the answer to a request: accepted while the connection is
    /// open, even after pushes were ended (the other side may wait for it
    /// in its `on_close`).
    pub(crate) fn push_reply(&self, bytes: Bytes) {
        let state = self.lock();
        if !state.closed {
            self.enqueue(state, bytes, Vec::new());
        }
    }

    /// Removes the queued requests (their callers have been told they
    /// failed; they must not reach a later connection).
    pub(crate) fn drop_requests(&self) {
        let request = crate::wire::frame::Kind::Request as u8;
        let mut state = self.lock();
        state.queue.retain(|item| !matches!(item, Outgoing::Frame { bytes, .. } if bytes.first() == Some(&request)));
        state.bytes = state
            .queue
            .iter()
            .map(|i| match i {
                Outgoing::Frame { bytes, .. } => bytes.len(),
                Outgoing::End => 0,
            })
            .sum();
    }

    /// Refuses later pushes; what is queued still goes out.
    pub(crate) fn end_pushes(&self) {
        self.lock().ended = true;
    }

    /// Queues the end of the connection; later pushes fail. Returns false
    /// when it had been ended already.
    pub(crate) fn end(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.closed = true;
        state.ended = true;
        state.queue.push_back(Outgoing::End);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Waits until something is queued, then moves all of it into `batch`,
    /// which must be empty.
    pub(crate) async fn take_batch(&self, batch: &mut VecDeque<Outgoing>) {
        while !self.try_take_batch(batch) {
            self.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `batch` (which must be empty) without
    /// waiting; false when nothing was.
    pub(crate) fn try_take_batch(&self, batch: &mut VecDeque<Outgoing>) -> bool {
        let mut state = self.lock();
        if state.queue.is_empty() {
            return false;
        }
        std::mem::swap(&mut state.queue, batch);
        state.bytes = 0;
        drop(state);
        self.room.notify_waiters();
        true
    }

    /// Drops everything queued (closing any descriptors) and ends the queue.
    pub(crate) fn discard(&self) -> usize {
        let mut state = self.lock();
        state.ended = true;
        state.bytes = 0;
        let n = state.queue.len();
        state.queue.clear();
        drop(state);
        self.room.notify_waiters();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ended() {
        let outbox = Outbox::new(2, usize::MAX);
        outbox.push(vec![1].into(), vec![]).unwrap();
        outbox.push(vec![2].into(), vec![]).unwrap();
        assert!(matches!(
            outbox.push(vec![3].into(), vec![]),
            Err(WorkerError::QueueFull { limit: 2 })
        ));
        assert!(outbox.end());
        assert!(!outbox.end());
        assert!(matches!(outbox.push(vec![4].into(), vec![]), Err(WorkerError::Terminating)));
    }

    #[test]
    fn waiting_push_gets_room_when_a_batch_is_taken() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let outbox = std::sync::Arc::new(Outbox::new(1, usize::MAX));
            outbox.push(vec![1].into(), vec![]).unwrap();
            let waiting = {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.push_waiting(vec![2].into(), vec![]).await })
            };
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            let mut batch = VecDeque::new();
            outbox.take_batch(&mut batch).await;
            waiting.await.unwrap().unwrap();
            batch.clear(); // the writer always drains a batch before the next
            outbox.take_batch(&mut batch).await;
            assert_eq!(batch.len(), 1);
            // A discarded queue ends the wait with an error.
            outbox.push(vec![3].into(), vec![]).unwrap();
            let waiting = {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.push_waiting(vec![4].into(), vec![]).await })
            };
            tokio::task::yield_now().await;
            outbox.discard();
            assert!(matches!(waiting.await.unwrap(), Err(WorkerError::Terminating)));
        });
    }

    #[test]
    fn byte_bound() {
        let outbox = Outbox::new(100, 10);
        outbox.push(vec![0; 20].into(), vec![]).unwrap(); // first always fits
        assert!(outbox.push(vec![0; 1].into(), vec![]).is_err());
    }
}
