//! Typed request/response across the process boundary, both ways: the
//! asking side (this file) and the answering side (`answers.rs`).
//!
//! A request is any actix [`Message`](actix::Message) whose type and answer
//! are serde types (see [`Request`](crate::Request)). The asking side
//! registers a slot in its [`Pending`] table under a fresh correlation id
//! and sends the request with that id and a tag naming its type; the
//! answering side looks the tag up in its handlers, decodes the request,
//! has its actor handle it, and sends back the answer or a [`Failure`]
//! under the same id. Answers may come back in any order; a late answer to
//! a request that timed out finds no slot and is dropped.
//!
//! A request nobody waits for any more (its timeout fired, its future was
//! dropped, its caller's channel closed) is cancelled: its slot goes, and
//! the other side is told (a `Cancel` frame), so that it stops working on
//! it where it can.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorReport, WireError, WorkerError};
use crate::wire::envelope::Kind;
use crate::wire::outbox::Outbox;
use crate::wire::ws::reader::Inbound;

/// A table keyed by request id: looked up twice per request, so hashed
/// fast, with a seed of the process's own (the other side chooses the ids
/// it asks with).
pub(crate) type ById<V> = std::collections::HashMap<u64, V, foldhash::fast::RandomState>;

/// Why the other side could not answer; the payload of a `Failed` frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    /// The handler panicked.
    Panicked(ErrorReport),
    /// No handler is registered for the request's type.
    Unhandled(String),
    /// The request did not decode, or the answer did not encode.
    Wire(String),
    /// The answering actor is gone.
    Gone,
    /// A streamed answer's producer raised this error (its text): the
    /// stream ends with it.
    Raised(String),
}

impl From<Failure> for WorkerError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Panicked(report) => WorkerError::Panicked(report),
            Failure::Unhandled(name) => WorkerError::Unhandled(name),
            Failure::Wire(text) => WorkerError::Remote(text),
            Failure::Gone => WorkerError::Disconnected,
            Failure::Raised(text) => WorkerError::StreamFailed(text),
        }
    }
}

/// What is done with the answer (or the failure) of one request.
pub(crate) trait Slot: Send {
    /// The answer's frame, or why none will come; what it says of the
    /// request for its side's [`Tally`].
    fn deliver(self: Box<Self>, result: Result<Inbound, WorkerError>) -> Counted;

    /// Whether nobody waits for it any more (looked at by
    /// [`Pending::sweep`]).
    fn gone(&self) -> bool {
        false
    }

    /// Whether it is answered by a stream of items (`streams.rs`), ended
    /// by an `End` frame; else by one `Answer`.
    fn streams(&self) -> bool {
        false
    }

    /// One item of its streamed answer. An error fails the request with
    /// it (and cancels it): an item for a request answered once, or past
    /// the asker's window.
    ///
    /// The item is staged, handed on to the stream's reader with the others
    /// of its read ([`Pending::hand_on_staged`]).
    fn item(&mut self, item: Inbound) -> Result<(), WorkerError> {
        let _ = item;
        Err(WireError::Unexpected("stream item for a request answered once").into())
    }

    /// Hands on the items staged since the last call.
    fn hand_on_staged(&mut self) {}
}

/// The answer decoded as `A`: the one place an answer is decoded.
pub(crate) fn decoded<A: DeserializeOwned>(
    result: Result<Inbound, WorkerError>,
) -> Result<A, WorkerError> {
    result.and_then(|mut inbound| {
        let fds = std::mem::take(&mut inbound.fds);
        let (codec, max) = (inbound.codec, inbound.max_shared);
        let decode =
            |payload: &[u8]| crate::wire::shared::carry::decode_with(codec, payload, fds, max);
        Ok(inbound.decoding(decode).0?)
    })
}

/// How a request is named to its asker when the other side does not
/// answer it (`declared::describe`): called only then, so that an ask
/// carries a pointer, not a string.
pub(crate) type Naming = fn() -> String;

/// What a delivered slot says of its request for its side's [`Tally`]:
/// nothing when its asker keeps its own count (a pool, a stream, a
/// request with a timeout of its own), else whether it was answered and,
/// when it was one of the few timed, when it was asked.
pub(crate) type Counted = Option<(bool, Option<Instant>)>;

/// Where a side counts its requests' outcomes (the parent's `Recorder`,
/// behind a worker's `Stats`): set on its [`Pending`] once, so that a
/// slot need not hold it (an `Arc` cloned and dropped per request).
pub(crate) trait Tally: Send + Sync {
    fn finish(&self, ok: bool, started: Option<Instant>);
}

/// A request awaiting its answer: the connection it was made for (see
/// [`Pending::fail_through`]), how it is named, and its slot.
type Waiting = (u64, Naming, Box<dyn Slot>);

/// Requests this side asked and that await their answers.
#[derive(Default)]
pub(crate) struct Pending {
    next_id: AtomicU64,
    slots: Mutex<ById<Waiting>>,
    /// Where the other side is told of cancelled requests.
    tell: OnceLock<Arc<Outbox>>,
    /// What counts the outcomes its slots say count (see [`Counted`]).
    tally: OnceLock<Arc<dyn Tally>>,
    /// The asking spans of the requests asked while a subscriber wanted
    /// them (`trace.rs`), each kept until its request is done with; and
    /// how many there are, so that while there are none an answer looks
    /// nothing up.
    spans: Mutex<ById<tracing::Span>>,
    traced: AtomicUsize,
}

impl Pending {
    fn slots(&self) -> std::sync::MutexGuard<'_, ById<Waiting>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outbox a cancelled request's `Cancel` frame goes into, whatever
    /// its bound (it frees the other side, and is small); set once, by the
    /// side that owns the outbox.
    pub(crate) fn tell_through(&self, outbox: Arc<Outbox>) {
        let _ = self.tell.set(outbox);
    }

    /// Where the outcomes its slots count go; set once, by the side that
    /// keeps them.
    pub(crate) fn count_into(&self, tally: Arc<dyn Tally>) {
        let _ = self.tally.set(tally);
    }

    /// Counts what a delivered slot said (see [`Counted`]).
    pub(crate) fn count(&self, counted: Counted) {
        if let (Some((ok, started)), Some(tally)) = (counted, self.tally.get()) {
            tally.finish(ok, started);
        }
    }

    /// A fresh id, with no slot yet: [`attach`](Self::attach) gives it
    /// one, before the answer can arrive.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The slot of request `id`, named by `name`.
    pub(crate) fn attach(&self, id: u64, name: Naming, slot: Box<dyn Slot>) {
        self.attach_on(id, name, slot);
    }

    /// [`attach`](Self::attach), returning the connection the request is
    /// for: the outbox's, now (see `Outbox::try_push_on`).
    pub(crate) fn attach_on(&self, id: u64, name: Naming, slot: Box<dyn Slot>) -> u64 {
        let connection = self.tell.get().map_or(0, |outbox| outbox.connection());
        self.slots().insert(id, (connection, name, slot));
        connection
    }

    /// Keeps `span`, the asking span of request `id`, until the request
    /// is answered, failed or cancelled (a disabled one is not kept).
    pub(crate) fn trace(&self, id: u64, span: tracing::Span) {
        if !super::trace::wanted(&span) {
            return;
        }
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        spans.insert(id, span);
        self.traced.store(spans.len(), Ordering::Relaxed);
    }

    /// Request `id` is done with: its asking span closes.
    pub(crate) fn untrace(&self, id: u64) {
        if self.traced.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let span = spans.remove(&id);
        self.traced.store(spans.len(), Ordering::Relaxed);
        drop(spans);
        drop(span);
    }

    /// Takes request `id`'s slot away unseen: its request was never
    /// queued (nothing to cancel on the other side).
    pub(crate) fn forget(&self, id: u64) {
        drop(self.take(id));
    }

    /// Request `id`'s slot, taken back undelivered (its span closes): the
    /// request never went out.
    pub(crate) fn take(&self, id: u64) -> Option<Box<dyn Slot>> {
        let slot = self.take_to_retry(id);
        self.untrace(id);
        slot
    }

    /// [`take`](Self::take), its span kept: the request is made again.
    pub(crate) fn take_to_retry(&self, id: u64) -> Option<Box<dyn Slot>> {
        self.slots().remove(&id).map(|(_, _, slot)| slot)
    }

    /// How many asking spans are kept (see [`trace`](Self::trace)).
    #[cfg(test)]
    pub(crate) fn spans_kept(&self) -> usize {
        self.traced.load(Ordering::Relaxed)
    }

    /// Delivers an answer, a stream's end or a failure; a late one (no
    /// slot) is dropped. A request the other side does not answer is named
    /// as its asker knows it (the other side knows only its tag). An end
    /// that does not fit the request (an `End` for one answered once, an
    /// `Answer` for a stream) fails it.
    pub(crate) fn resolve(&self, id: u64, mut result: Result<Inbound, WorkerError>) {
        let slot = self.slots().remove(&id);
        self.untrace(id);
        if let Some((_, name, slot)) = slot {
            if let Err(WorkerError::Unhandled(said)) = &mut result {
                *said = name();
            }
            if let Ok(inbound) = &result {
                if (inbound.header.kind == Kind::End) != slot.streams() {
                    let e = WireError::Unexpected(inbound.header.kind.name());
                    result = Err(WorkerError::Wire(e));
                }
            }
            self.count(slot.deliver(result));
        } else {
            tracing::trace!(id, "answer to a request nobody waits for any more");
        }
    }

    /// A run of items of the stream that answers one request (`run`, all
    /// of the same id, taken from it), looked up once. Items for a request
    /// that is not waited for any more (cancelled, failed, ended) are
    /// dropped; items for an id never asked are an error (the side reports
    /// it, once per run). An item its slot refuses (past the window, for a
    /// request answered once) fails the request with why, and cancels it:
    /// the rest of the run is dropped.
    pub(crate) fn items(&self, run: &mut Vec<Inbound>) -> Result<(), WireError> {
        let Some(id) = run.first().map(|item| item.header.id) else { return Ok(()) };
        let mut items = run.drain(..);
        let refused = {
            let mut slots = self.slots();
            let Some((.., slot)) = slots.get_mut(&id) else {
                drop(slots);
                if id >= self.next_id.load(Ordering::Relaxed) {
                    return Err(WireError::UnknownStream(id));
                }
                tracing::trace!(id, "stream items nobody waits for any more");
                return Ok(());
            };
            match items.by_ref().try_for_each(|item| slot.item(item)) {
                Ok(()) => return Ok(()),
                Err(e) => (slots.remove(&id), e),
            }
        };
        drop(items);
        if let (Some((.., slot)), e) = refused {
            tracing::debug!(id, error = %e, "stream item refused: the stream fails");
            self.tell(crate::wire::envelope::cancel(id));
            self.count(slot.deliver(Err(e)));
        }
        Ok(())
    }

    /// Hands the items staged for the streams `staged` (taken from it) on
    /// to their readers: the reading side calls it when it has handled a
    /// read, with the ids it gave [`items`](Self::items) since.
    pub(crate) fn hand_on_staged(&self, staged: &mut Vec<u64>) {
        if staged.is_empty() {
            return;
        }
        let mut slots = self.slots();
        for id in staged.drain(..) {
            // One that failed or was cancelled since has gone.
            if let Some((.., slot)) = slots.get_mut(&id) {
                slot.hand_on_staged();
            }
        }
    }

    /// The asker of stream `id` has read `bytes` more of its items: the
    /// other side may send that many more.
    pub(crate) fn credit(&self, id: u64, bytes: u64) {
        if self.slots().contains_key(&id) {
            self.tell(crate::wire::envelope::credit(id, bytes));
        }
    }

    /// Queues a small control frame (a cancel, a credit) whatever the
    /// outbox's bound: it frees the other side.
    fn tell(&self, frame: bytes::Bytes) {
        if let Some(outbox) = self.tell.get() {
            let _ = outbox.push_unbounded(frame, Vec::new());
        }
    }

    /// Request `id` is no longer waited for: its slot goes (dropped, not
    /// delivered) and the other side is told, if it was still waiting.
    /// Whether it was: if not, its slot was delivered, or is being (taken
    /// by an answer, a failure or a connection's end on another thread).
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let slot = self.slots().remove(&id);
        self.untrace(id);
        let waiting = slot.is_some();
        if waiting {
            self.tell(crate::wire::envelope::cancel(id));
        }
        waiting
    }

    /// Cancels the requests whose caller is gone.
    pub(crate) fn sweep(&self) {
        let gone: Vec<u64> =
            self.slots().iter().filter(|(_, (.., slot))| slot.gone()).map(|(&id, _)| id).collect();
        for id in gone {
            let _ = self.cancel(id);
        }
    }

    /// Whether request `id` still waits for its answer (not answered,
    /// failed, timed out or cancelled).
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.slots().contains_key(&id)
    }

    /// How many requests wait for their answers.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    /// Fails every pending request with `err`.
    pub(crate) fn fail_all(&self, err: &WorkerError) {
        let slots = std::mem::take(&mut *self.slots());
        for &id in slots.keys() {
            self.untrace(id);
        }
        for (_, (.., slot)) in slots {
            self.count(slot.deliver(Err(err.clone())));
        }
    }

    /// Fails with `err` the requests made for connections up to `ended`
    /// (whose queued requests were purged); those made since wait for the
    /// next connection.
    pub(crate) fn fail_through(&self, ended: u64, err: &WorkerError) {
        let failed: Vec<Box<dyn Slot>> = {
            let mut slots = self.slots();
            let ids: Vec<u64> =
                slots.iter().filter(|(_, (c, ..))| *c <= ended).map(|(&id, _)| id).collect();
            let failed = ids.iter().filter_map(|id| slots.remove(id)).map(|(.., slot)| slot);
            let failed = failed.collect();
            drop(slots);
            ids.iter().for_each(|&id| self.untrace(id));
            failed
        };
        for slot in failed {
            self.count(slot.deliver(Err(err.clone())));
        }
    }
}

/// What an asking side does with an incoming `Answer`, `End` or `Failed`
/// frame.
pub(crate) fn resolve_frame(pending: &Pending, inbound: Inbound) {
    let id = inbound.header.id;
    match inbound.header.kind {
        Kind::Answer | Kind::End => pending.resolve(id, Ok(inbound)),
        _ => {
            let err = match inbound.decode::<Failure>() {
                Ok(f) => f.into(),
                Err(e) => WorkerError::Wire(e),
            };
            pending.resolve(id, Err(err));
        }
    }
}
