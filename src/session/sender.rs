//! The sending half of a session, the same on both sides: how one
//! connection's payloads are written ([`Encoding`]), and a [`Sender`] that
//! encodes and queues posts and requests into a side's outbox and waits
//! for their answers ([`answer_by`], the one answer future, and its
//! [`Cancel`] guard).
//!
//! Everything that sends goes through here: the parent's `Worker` actor
//! and its `Port`s, the worker's `Parent` handle, and the `Reply` each
//! request is owed (`answers.rs`) on either side. What differs between
//! them is only what they do when the outbox is full (the actor keeps a
//! queue of its own, a port may wait for room, the worker refuses) and
//! where the answer goes (a caller's channel, a pool, a closure).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::declared::{describe, request_tag};
use super::requests::{Failure, Naming, Pending, Slot};
use super::trace;
use crate::error::{WireError, WorkerError};
use crate::protocol::Codec;
use crate::protocol::{Protocol, Request};
use crate::wire::encode::{
    descriptors, encode, encode_in_sharing, encode_or_append, encode_sharing, Arena,
};
use crate::wire::envelope::{Header, MAX_BATCH};
use crate::wire::outbox::{Outbox, Refusal};
use crate::wire::segments::Segments;
use crate::wire::trace::TraceContext;
use crate::wire::ws::max_ws_message;

mod answer;
pub(crate) use answer::{answer_by, awaited, deadline, AnswerRx, Cancel, ToChannel};

/// A message encoded for the outbox: its bytes and the descriptors that go
/// with them.
pub(crate) type Encoded = (Segments, Vec<OwnedFd>);

/// What became of a post (see [`Encoding::post_or_append`]).
pub(crate) enum Posted {
    /// Queued already, in a run of posts; its size.
    Appended(usize),
    /// Encoded, for the caller to queue.
    Encoded(Encoded),
}

/// How one connection's payloads are written: by its codec, within its
/// size bound, and with shared buffers as descriptors where the
/// connection carries them (a UNIX socket) or as bytes where it does not
/// (TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub codec: Codec,
    pub max_message_size: usize,
    /// Whether the connection carries descriptors.
    pub descriptors: bool,
}

impl Encoding {
    /// A post of `data` with `fds` (refused when the connection carries
    /// no descriptors), into `arena` when the sender keeps one.
    pub(crate) fn post<M: Serialize + ?Sized>(
        &self,
        arena: Option<&mut Arena>,
        data: &M,
        fds: Vec<OwnedFd>,
    ) -> Result<Encoded, WorkerError> {
        let header = Header::post(fds.len())?;
        let fds = descriptors(self.descriptors, fds)?;
        self.encode(arena, (header, None), data, fds)
    }

    /// [`post`](Self::post), or, for a small post without descriptors,
    /// appended straight into `outbox`'s run of posts (see
    /// `Outbox::append_post`). Refused there (the queue full or ended),
    /// it is returned encoded, for the caller to queue as
    /// [`post`](Self::post)'s, which says why.
    pub(crate) fn post_or_append<M: Serialize + ?Sized>(
        &self,
        arena: Option<&mut Arena>,
        data: &M,
        fds: Vec<OwnedFd>,
        outbox: &Outbox,
    ) -> Result<Posted, WorkerError> {
        if !fds.is_empty() {
            return self.post(arena, data, fds).map(Posted::Encoded);
        }
        let head = (self.codec, Header::post(0)?, None);
        let fds = descriptors(self.descriptors, fds)?;
        let limit = MAX_BATCH.min(max_ws_message(self.max_message_size));
        let mut len = 0;
        let mut append = |msg: &[u8]| {
            len = msg.len();
            outbox.append_post(msg, limit)
        };
        let made = encode_or_append(arena, head, data, fds, self.max_message_size, &mut append)?;
        Ok(made.map_or(Posted::Appended(len), Posted::Encoded))
    }

    /// Request `id` of type `R`, tagged as protocol `P` names it, once its
    /// type is known to be one the codec can carry; with its asker's trace
    /// `context`, when one travels (see `trace.rs`).
    pub(crate) fn request<P: Protocol, R: Request>(
        &self,
        arena: Option<&mut Arena>,
        (id, context): (u64, Option<TraceContext>),
        request: &R,
    ) -> Result<Encoded, WorkerError> {
        let tag = request_tag::<P, R>().map_err(|e| WireError::Encode(e.to_string()))?;
        let header = match context {
            None => Header::request(id, tag),
            Some(_) => crate::wire::trace::traced_request(id, tag),
        };
        self.encode(arena, (header, context), request, self.descriptors.then(Vec::new))
    }

    /// The answer to request `id`; when it cannot be encoded, the failure
    /// that says why, in its place.
    pub(crate) fn answer<A: Serialize + ?Sized>(&self, id: u64, answer: &A) -> Encoded {
        let header = Header::reply_to(id);
        self.encode(None, (header, None), answer, self.descriptors.then(Vec::new))
            .unwrap_or_else(|e| (self.failure(id, Failure::Wire(e.to_string())), Vec::new()))
    }

    /// Why request `id` got no answer; a report too large to send goes as
    /// its gist.
    pub(crate) fn failure(&self, id: u64, failure: Failure) -> Segments {
        let (codec, max) = (self.codec, self.max_message_size);
        encode(codec, Header::failed(id), &failure, max).unwrap_or_else(|_| {
            let gist = Failure::Wire("the failure report was too large to send".into());
            encode(codec, Header::failed(id), &gist, usize::MAX).unwrap_or_default()
        })
    }

    /// A message of `header`, with the asker's trace `context` after the
    /// header's fields when one travels (`header` is then of a traced
    /// kind).
    pub(super) fn encode<M: Serialize + ?Sized>(
        &self,
        arena: Option<&mut Arena>,
        (header, context): (Header, Option<TraceContext>),
        data: &M,
        fds: Option<Vec<OwnedFd>>,
    ) -> Result<Encoded, WorkerError> {
        let (codec, max) = (self.codec, self.max_message_size);
        let bytes = context.map(TraceContext::to_bytes);
        let head = (codec, header, bytes.as_ref());
        match arena {
            Some(arena) => encode_in_sharing(arena, head, data, fds, max),
            None => encode_sharing(head, data, fds, max),
        }
    }
}

/// One side's sending half: the outbox its session's writer drains, the
/// table of the requests it asked, and how its connection is written.
/// Cheap to clone; every handle that sends holds one.
#[derive(Clone)]
pub(crate) struct Sender {
    pub outbox: Arc<Outbox>,
    pub pending: Arc<Pending>,
    pub encoding: Encoding,
}

/// Why a request was not queued.
pub(crate) enum NotQueued {
    /// For good: the error says why.
    Refused(WorkerError),
    /// The outbox is full; the request, to try again once it has made room
    /// since `epoch`.
    Full { bytes: Segments, fds: Vec<OwnedFd>, epoch: u64 },
}

impl Sender {
    /// A sending half over `outbox`; cancelled requests are told through it.
    pub(crate) fn new(outbox: Arc<Outbox>, encoding: Encoding) -> Self {
        let pending = Arc::new(Pending::default());
        pending.tell_through(outbox.clone());
        Sender { outbox, pending, encoding }
    }

    /// Encodes and queues a post; refused at once when the outbox is full.
    pub(crate) fn post<M: Serialize + ?Sized>(
        &self,
        arena: Option<&mut Arena>,
        data: &M,
        fds: Vec<OwnedFd>,
    ) -> Result<(), WorkerError> {
        match self.encoding.post_or_append(arena, data, fds, &self.outbox)? {
            Posted::Appended(_) => Ok(()),
            Posted::Encoded((bytes, fds)) => self.outbox.push(bytes, fds),
        }
    }

    /// Queues request `id` (encoded), its slot taken first (the answer may
    /// come before this returns): `slot` makes it from the channel the
    /// answer will come down, whose receiving end is returned. The request
    /// is made for the connection its slot was taken on: if that one ends
    /// before the push, the request is refused (see `Outbox::try_push_on`)
    /// and made again, with the same slot, for the next; unless the end's
    /// failures reached its slot first: then that failure is its outcome,
    /// counted once, and the receiver returned has it. A full outbox
    /// refuses it, unless `wait` (then the caller tries again once there
    /// is room).
    pub(crate) fn queue_request<A>(
        &self,
        named: (u64, Naming),
        encoded: Encoded,
        wait: bool,
        slot: impl FnOnce(oneshot::Sender<Result<A, WorkerError>>) -> Box<dyn Slot>,
    ) -> Result<AnswerRx<A>, NotQueued> {
        let halves = || {
            let (tx, rx) = oneshot::channel();
            (slot(tx), rx)
        };
        self.queue_with(named, encoded, wait, halves)
    }

    /// [`queue_request`](Self::queue_request) with any slot: `halves` makes
    /// it and what its caller keeps (a receiver, a stream), once: the same
    /// slot goes with every try (see [`queue_slot`](Self::queue_slot)).
    pub(crate) fn queue_with<X>(
        &self,
        named: (u64, Naming),
        encoded: Encoded,
        wait: bool,
        halves: impl FnOnce() -> (Box<dyn Slot>, X),
    ) -> Result<X, NotQueued> {
        // One slot for every try: a stream's slot dropped on a `Moved`
        // retry would tell its `after` a failure (a streamed request
        // counted twice, failed and then answered).
        let (slot, kept) = halves();
        match self.queue_slot(named, encoded, wait, slot) {
            Ok(()) => Ok(kept),
            // Failed meanwhile: what the caller keeps has its failure.
            Err((_, None)) => Ok(kept),
            // Taken back before what the caller keeps is dropped: no cancel.
            Err((why, Some(slot))) => {
                drop(slot);
                drop(kept);
                Err(why)
            }
        }
    }

    /// [`queue_with`](Self::queue_with) with one slot for every try: a
    /// request not queued hands its slot back with why (`None`: the slot
    /// was failed with the connection it was taken on, its caller told).
    /// Nothing is made per try, so nothing need share what the slot holds.
    pub(crate) fn queue_slot(
        &self,
        named: (u64, Naming),
        mut encoded: Encoded,
        wait: bool,
        mut slot: Box<dyn Slot>,
    ) -> Result<(), (NotQueued, Option<Box<dyn Slot>>)> {
        loop {
            let (refusal, epoch);
            (refusal, encoded, epoch) = match self.try_queue(named, encoded, slot) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
            // Taken back, not cancelled: nothing went out. Made again, it
            // keeps its asking span; else that closes.
            let back = self.pending.take_to_retry(named.0);
            if !matches!((&back, refusal), (Some(_), Refusal::Moved)) {
                self.pending.untrace(named.0);
            }
            let error = |refusal| NotQueued::Refused(self.outbox.error(refusal));
            slot = match (back, refusal) {
                (Some(slot), Refusal::Moved) => slot,
                (None, refusal) => return Err((error(refusal), None)),
                (slot, Refusal::Full) if wait => {
                    let (bytes, fds) = encoded;
                    return Err((NotQueued::Full { bytes, fds, epoch }, slot));
                }
                (slot, refusal) => return Err((error(refusal), slot)),
            };
        }
    }

    /// One try: `slot` taken for the outbox's connection now, then the
    /// request pushed for that connection. Refused, the request comes back
    /// with why and the outbox's room epoch before the push (its slot stays
    /// taken, for the caller to forget or take back).
    fn try_queue(
        &self,
        (id, name): (u64, Naming),
        (bytes, fds): Encoded,
        slot: Box<dyn Slot>,
    ) -> Result<(), (Refusal, Encoded, u64)> {
        let connection = self.pending.attach_on(id, name, slot);
        let epoch = self.outbox.room_epoch();
        match self.outbox.try_push_on(bytes, fds, connection) {
            Ok(()) => Ok(()),
            Err((refusal, bytes, fds)) => Err((refusal, (bytes, fds), epoch)),
        }
    }

    /// Asks `request` and resolves to its answer, at most `timeout`;
    /// refused at once when the outbox is full. Queued now, not when the
    /// future is first polled.
    pub(crate) fn ask<P: Protocol, R: Request>(
        &self,
        request: &R,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<P, R> {
        let id = self.pending.next_id();
        let (caller, peer) = (trace::Caller::here(), trace::Peer::default());
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, peer);
        self.pending.trace(id, span);
        let queued = self.encoding.request::<P, R>(None, (id, context), request);
        let queued = queued.and_then(|encoded| {
            let slot = |tx| Box::new(ToChannel(Some(tx))) as Box<dyn Slot>;
            match self.queue_request((id, describe::<P, R>), encoded, false, slot) {
                Ok(rx) => Ok(rx),
                Err(NotQueued::Refused(e)) => Err(e),
                // Not without `wait`; refused as full all the same.
                Err(NotQueued::Full { .. }) => Err(self.outbox.error(Refusal::Full)),
            }
        });
        // Armed now: dropped before it is first polled, it cancels too.
        let cancel = Cancel::new(&self.pending, id);
        // Its limit runs from now, too.
        let deadline = timeout.map(deadline);
        async move { answer_by(cancel, queued?, deadline).await }
    }
}

#[cfg(test)]
mod tests;
