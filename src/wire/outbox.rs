//! The queue of messages on their way out, shared by whoever posts (the
//! `Worker` actor in the parent, the worker's context in the child) and the
//! writer task that drains it.
//!
//! It is the "queued until the child is ready" of the original: nothing
//! drains it until the handshake is done, and it outlives any one
//! connection. When a connection ends, the writer gives back what it took
//! but never handed to the kernel ([`put_back`](Outbox::put_back)), and
//! [`end_connection`](Outbox::end_connection) keeps only the posts: they go
//! to the next connection, in order. Requests, answers and control messages
//! belonged to the connection that ended.
//!
//! The writer takes everything queued in one swap, feeds it to the
//! WebSocket and flushes once: one syscall for a batch, not one per message.
//!
//! Bounds: posts and requests are refused (or held back by their sender) at the
//! bound, and a stream's items wait for room ([`is_full`](Outbox::is_full)).
//! Answers are always taken, but count against it: the reader stops reading the
//! peer while [`replies_over`](Outbox::replies_over) says so. A peer that asks,
//! never reading, is held back, not fed memory.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::segments::Segments;
use crate::error::WorkerError;

mod append;
mod outgoing;
mod run;

pub(crate) use self::outgoing::{Outgoing, Refusal};
pub(crate) use self::run::Run;
use self::run::RunBufs;

struct State {
    queue: VecDeque<Outgoing>,
    /// The messages in `queue` (a run of posts is several), and their bytes.
    messages: usize,
    bytes: usize,
    /// Answers and failures in `queue`, and their bytes.
    replies: usize,
    reply_bytes: usize,
    /// Requests of the peer being answered, whose reply is not queued yet,
    /// and the bytes those requests hold meanwhile (their payloads and
    /// shared buffers, with whoever answers them).
    owed: usize,
    owed_bytes: usize,
    /// Pushes are refused.
    ended: bool,
    /// The `End` item has been queued.
    closed: bool,
    /// Why pushes are refused for good, if [`Outbox::discard`] said.
    ended_with: Option<WorkerError>,
    /// Where runs of posts are written.
    runs: RunBufs,
    /// How many times the writer has taken what was queued.
    taken: u64,
}

/// A bounded multi-producer, single-consumer queue of [`Outgoing`] items.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Something was queued (for the writer).
    ready: Notify,
    /// Room was made (for senders waiting for it, and a reader holding
    /// back); `room_epoch` counts the times.
    room: Notify,
    room_epoch: AtomicU64,
    /// Which connection replies are for: it changes when one ends.
    connection: AtomicU64,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                messages: 0,
                bytes: 0,
                replies: 0,
                reply_bytes: 0,
                owed: 0,
                owed_bytes: 0,
                ended: false,
                closed: false,
                ended_with: None,
                runs: RunBufs::default(),
                taken: 0,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            room_epoch: AtomicU64::new(0),
            connection: AtomicU64::new(0),
            max_messages,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; fails when the queue is full or has been ended.
    pub(crate) fn push(
        &self,
        bytes: impl Into<Segments>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), WorkerError> {
        self.try_push(bytes.into(), fds).map_err(|(refusal, _, _)| self.error(refusal))
    }

    /// Whether what waits is at the bound, in number or in bytes.
    pub(crate) fn is_full(&self) -> bool {
        let state = self.lock();
        state.messages >= self.max_messages || state.bytes >= self.max_bytes
    }

    /// The error a refusal means to the sender.
    pub(crate) fn error(&self, refusal: Refusal) -> WorkerError {
        match refusal {
            Refusal::Full => WorkerError::QueueFull { limit: self.max_messages },
            Refusal::Ended | Refusal::Moved => {
                self.lock().ended_with.clone().unwrap_or(WorkerError::Terminating)
            }
        }
    }

    /// Queues a message, or gives it back with why it was refused.
    pub(crate) fn try_push(
        &self,
        bytes: Segments,
        fds: Vec<OwnedFd>,
    ) -> Result<(), (Refusal, Segments, Vec<OwnedFd>)> {
        self.push_checked(bytes, fds, None)
    }

    /// [`try_push`](Self::try_push) for a request made while
    /// [`connection`](Self::connection) was `connection`: refused
    /// ([`Refusal::Moved`]) if that one has ended since. A sender on
    /// another thread than the connection's task attaches the request's
    /// answer slot first, then pushes; the connection's end purges the
    /// queue's requests, then fails the slots. Checked here, under the
    /// queue's lock, a request can never be purged unseen after its slot
    /// was failed, nor outlive the slot into the next connection.
    pub(crate) fn try_push_on(
        &self,
        bytes: Segments,
        fds: Vec<OwnedFd>,
        connection: u64,
    ) -> Result<(), (Refusal, Segments, Vec<OwnedFd>)> {
        self.push_checked(bytes, fds, Some(connection))
    }

    /// The connection a request made now is for: changes when one ends.
    pub(crate) fn connection(&self) -> u64 {
        self.connection.load(Ordering::SeqCst)
    }

    fn push_checked(
        &self,
        bytes: Segments,
        fds: Vec<OwnedFd>,
        connection: Option<u64>,
    ) -> Result<(), (Refusal, Segments, Vec<OwnedFd>)> {
        let state = self.lock();
        if state.ended {
            return Err((Refusal::Ended, bytes, fds));
        }
        if connection.is_some_and(|c| c != self.connection.load(Ordering::SeqCst)) {
            return Err((Refusal::Moved, bytes, fds));
        }
        // One message is always accepted into an empty queue, however large
        // (its size was checked against the message limit already).
        if !self.has_room(&state, bytes.len()) {
            return Err((Refusal::Full, bytes, fds));
        }
        self.enqueue(state, [Outgoing::Frame { bytes, fds }]);
        Ok(())
    }

    /// Queues a message whatever the bound (one accepted already, or one
    /// bounded otherwise); fails only once the queue has been ended.
    pub(crate) fn push_unbounded(
        &self,
        bytes: impl Into<Segments>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), WorkerError> {
        self.push_all_unbounded([(bytes.into(), fds)], None)
    }

    /// [`push_unbounded`](Self::push_unbounded), several under one lock;
    /// with a `connection`, only while that one is open (a stream's items:
    /// the next process never asked for them).
    pub(crate) fn push_all_unbounded(
        &self,
        frames: impl IntoIterator<Item = (Segments, Vec<OwnedFd>)>,
        connection: Option<u64>,
    ) -> Result<(), WorkerError> {
        let state = self.lock();
        if state.ended {
            return Err(WorkerError::Terminating);
        }
        if connection.is_some_and(|c| c != self.connection.load(Ordering::SeqCst)) {
            return Err(WorkerError::Disconnected);
        }
        self.enqueue(state, frames.into_iter().map(|(bytes, fds)| Outgoing::Frame { bytes, fds }));
        Ok(())
    }

    fn enqueue(&self, mut state: MutexGuard<'_, State>, items: impl IntoIterator<Item = Outgoing>) {
        let was_empty = state.queue.is_empty();
        for item in items {
            state.messages += item.messages();
            state.bytes += item.len();
            state.queue.push_back(item);
        }
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// How many times room was made so far: read it before a push that may
    /// fail, and [`wait_room`](Self::wait_room) with it.
    pub(crate) fn room_epoch(&self) -> u64 {
        self.room_epoch.load(Ordering::SeqCst)
    }

    /// Waits until room has been made since `epoch`.
    pub(crate) async fn wait_room(&self, epoch: u64) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.room_epoch() != epoch {
                return;
            }
            room.await;
        }
    }

    /// How many times the writer has taken what was queued: unchanged,
    /// what was queued before waits still (room made otherwise, e.g. a
    /// reply forgiven, moves [`room_epoch`](Self::room_epoch) alone).
    pub(crate) fn taken(&self) -> u64 {
        self.lock().taken
    }

    fn made_room(&self) {
        self.room_epoch.fetch_add(1, Ordering::SeqCst);
        self.room.notify_waiters();
    }

    /// Queues a last message (whatever the bound); later pushes are refused.
    pub(crate) fn push_last(&self, bytes: impl Into<Segments>) -> Result<(), WorkerError> {
        let mut state = self.lock();
        if state.ended {
            return Err(WorkerError::Terminating);
        }
        state.ended = true;
        self.enqueue(state, [Outgoing::Frame { bytes: bytes.into(), fds: Vec::new() }]);
        Ok(())
    }

    /// A request of the peer is being answered: it and its `held` bytes count
    /// against the bound until its reply is written; the reply's connection.
    pub(crate) fn owe_reply(&self, held: usize) -> u64 {
        let mut state = self.lock();
        state.owed += 1;
        state.owed_bytes += held;
        self.connection.load(Ordering::SeqCst)
    }

    /// A request owed a reply on `connection` holds `more` bytes than it
    /// was owed with (its shared buffers, once decoded).
    pub(crate) fn owe_more(&self, connection: u64, more: usize) {
        let mut state = self.lock();
        if self.connection.load(Ordering::SeqCst) == connection {
            state.owed_bytes += more;
        }
    }

    /// Queues the answer to a request of `connection` that was owed with
    /// `held` bytes ([`owe_reply`](Self::owe_reply)): taken while that
    /// connection is open, whatever the bound, even after pushes were ended
    /// (the other side may wait for it in its `on_close`).
    pub(crate) fn push_reply(
        &self,
        bytes: Segments,
        fds: Vec<OwnedFd>,
        connection: u64,
        held: usize,
    ) {
        let mut state = self.lock();
        if self.connection.load(Ordering::SeqCst) != connection {
            // The connection it answers has ended (its owed count with it).
            return;
        }
        state.owed = state.owed.saturating_sub(1);
        state.owed_bytes = state.owed_bytes.saturating_sub(held);
        if state.closed {
            return;
        }
        state.replies += 1;
        state.reply_bytes += bytes.len();
        self.enqueue(state, [Outgoing::Frame { bytes, fds }]);
    }

    /// How many messages wait to be written.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages
    }

    /// A reply owed on `connection`, for a request of `held` bytes, will
    /// not be sent (its request was cancelled by the peer).
    pub(crate) fn forgive_reply(&self, connection: u64, held: usize) {
        let mut state = self.lock();
        if self.connection.load(Ordering::SeqCst) != connection {
            return;
        }
        state.owed = state.owed.saturating_sub(1);
        state.owed_bytes = state.owed_bytes.saturating_sub(held);
        drop(state);
        self.made_room();
    }

    /// Whether the peer has asked for more than the bound allows: replies
    /// queued or owed, over the bound in number, or the bytes of the
    /// replies queued and of the requests still being answered over the
    /// bound in bytes.
    pub(crate) fn replies_over(&self) -> bool {
        let state = self.lock();
        state.replies + state.owed >= self.max_messages
            || state.reply_bytes + state.owed_bytes >= self.max_bytes
    }

    /// Puts messages back at the front, in their order: those a writer took
    /// but never handed to the kernel.
    pub(crate) fn put_back(&self, items: Vec<Outgoing>) {
        if items.is_empty() {
            return;
        }
        let mut state = self.lock();
        for item in items.into_iter().rev() {
            if matches!(item, Outgoing::End) {
                continue;
            }
            state.messages += item.messages();
            state.bytes += item.len();
            if item.is_reply() {
                state.replies += 1;
                state.reply_bytes += item.len();
            }
            state.queue.push_front(item);
        }
    }

    /// The connection has ended: only posts stay, for the next one.
    /// Requests (their callers were told they failed), answers and control
    /// messages belonged to it. Returns the connection that ended.
    pub(crate) fn end_connection(&self) -> u64 {
        let mut state = self.lock();
        let ended = self.connection.fetch_add(1, Ordering::SeqCst);
        state.queue.retain(Outgoing::is_post);
        state.messages = state.queue.iter().map(Outgoing::messages).sum();
        state.bytes = state.queue.iter().map(Outgoing::len).sum();
        state.replies = 0;
        state.reply_bytes = 0;
        state.owed = 0;
        state.owed_bytes = 0;
        drop(state);
        self.made_room();
        ended
    }

    /// Refuses later pushes; what is queued still goes out.
    pub(crate) fn end_pushes(&self) {
        self.lock().ended = true;
        self.made_room();
    }

    /// Queues the end of the connection (once); later pushes fail.
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        state.ended = true;
        state.queue.push_back(Outgoing::End);
        drop(state);
        self.ready.notify_one();
    }

    /// Waits until something is queued, then moves all of it into `batch`
    /// (empty).
    pub(crate) async fn take_batch(&self, batch: &mut VecDeque<Outgoing>) {
        while !self.try_take_batch(batch) {
            self.ready.notified().await;
        }
    }

    /// Moves what is queued into `batch` (empty), without waiting; false
    /// when nothing was.
    pub(crate) fn try_take_batch(&self, batch: &mut VecDeque<Outgoing>) -> bool {
        let mut state = self.lock();
        if state.queue.is_empty() {
            return false;
        }
        std::mem::swap(&mut state.queue, batch);
        state.taken += 1;
        state.messages = 0;
        state.bytes = 0;
        state.replies = 0;
        state.reply_bytes = 0;
        drop(state);
        self.made_room();
        true
    }

    /// Drops what is queued (closing its descriptors) and ends the queue,
    /// later pushes refused with `why`; returns how many posts went.
    pub(crate) fn discard(&self, why: WorkerError) -> usize {
        let mut state = self.lock();
        state.ended = true;
        state.ended_with = Some(why);
        state.messages = 0;
        state.bytes = 0;
        state.replies = 0;
        state.reply_bytes = 0;
        let posts = state.queue.iter().filter(|i| i.is_post()).map(Outgoing::messages).sum();
        state.queue.clear();
        state.runs = RunBufs::default();
        drop(state);
        self.made_room();
        posts
    }
}

#[cfg(test)]
mod tests;
