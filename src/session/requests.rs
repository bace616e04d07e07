//! Typed request/response across the process boundary, both ways.
//!
//! A request is any actix [`Message`](actix::Message) whose type and answer are serde types
//! (see [`Request`]). The asking side registers a slot in its [`Pending`]
//! table under a fresh correlation id and sends the request with that id
//! and a tag naming its type; the answering side looks the tag up in its
//! [`Handlers`], decodes the request, has its actor handle it (plain or
//! async handlers alike, through actix's own `send`), and sends back the
//! answer or a [`Failure`] under the same id. Answers may come back in any
//! order; a late answer to a request that timed out finds no slot and is
//! dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{ErrorReport, WorkerError};
use crate::protocol::{tag_of, Request};
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::frame::{Header, Kind};
use crate::wire::outbox::Outbox;
use crate::wire::socket::Inbound;

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
}

impl From<Failure> for WorkerError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Panicked(report) => WorkerError::Panicked(report),
            Failure::Unhandled(name) => WorkerError::Unhandled(name),
            Failure::Wire(text) => WorkerError::Remote(text),
            Failure::Gone => WorkerError::Disconnected,
        }
    }
}

/// What to do with the answer (or the failure) of one request.
type Slot = Box<dyn FnOnce(Result<Inbound, WorkerError>) + Send>;

/// Requests this side asked and that await their answers.
#[derive(Default)]
pub(crate) struct Pending {
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Pending {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh id, with no slot yet: [`on_answer`](Self::on_answer) gives
    /// it one, before the answer can arrive.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// What to do with the answer to `id`, decoded as `A` (the one place
    /// an answer is decoded), or with its failure.
    pub(crate) fn on_answer<A: DeserializeOwned>(
        &self,
        id: u64,
        then: impl FnOnce(Result<A, WorkerError>) + Send + 'static,
    ) {
        let slot: Slot = Box::new(move |result| {
            then(result.and_then(|inbound| Ok(codec::decode::<A>(inbound.payload())?)))
        });
        self.slots().insert(id, slot);
    }

    /// Delivers an answer or failure; a late one (no slot) is dropped.
    pub(crate) fn resolve(&self, id: u64, result: Result<Inbound, WorkerError>) {
        let slot = self.slots().remove(&id);
        if let Some(slot) = slot {
            slot(result);
        } else {
            tracing::trace!(id, "answer to a request nobody waits for any more");
        }
    }

    pub(crate) fn cancel(&self, id: u64) {
        self.slots().remove(&id);
    }

    /// Whether request `id` still waits for its answer (not answered,
    /// failed, timed out or cancelled).
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.slots().contains_key(&id)
    }

    /// Fails every pending request with `err`.
    pub(crate) fn fail_all(&self, err: &WorkerError) {
        let slots = std::mem::take(&mut *self.slots());
        for (_, slot) in slots {
            slot(Err(err.clone()));
        }
    }
}

/// The answer to request `id` of `pending`, decoded, as a future: waited
/// for from now on (the slot is taken at once, so the answer can come
/// before the future is first polled), at most `timeout`.
pub(crate) fn answer<A: DeserializeOwned + Send + 'static>(
    pending: &Arc<Pending>,
    id: u64,
    timeout: Option<Duration>,
) -> impl Future<Output = Result<A, WorkerError>> + use<A> {
    let (tx, rx) = oneshot::channel();
    pending.on_answer::<A>(id, move |answer| {
        let _ = tx.send(answer);
    });
    let pending = pending.clone();
    async move {
        let received = match timeout {
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(r) => r,
                Err(_) => {
                    pending.cancel(id);
                    return Err(WorkerError::Timeout(limit));
                }
            },
            // Outside tokio's cooperative budget, as `WorkerAddrExt::ask`.
            None => tokio::task::unconstrained(rx).await,
        };
        received.map_err(|_| WorkerError::Disconnected)?
    }
}

/// What an answering side does with an incoming `Failed` or `Answer` frame.
pub(crate) fn resolve_frame(pending: &Pending, inbound: Inbound) {
    let id = inbound.header.id;
    match inbound.header.kind {
        Kind::Answer => pending.resolve(id, Ok(inbound)),
        _ => {
            let err = match codec::decode::<Failure>(inbound.payload()) {
                Ok(f) => f.into(),
                Err(e) => WorkerError::Wire(e),
            };
            pending.resolve(id, Err(err));
        }
    }
}

/// The answer to one request, owed to the other side. Whatever happens to
/// the request, exactly one reply goes out: the answer, a failure, or (when
/// this is dropped unanswered, e.g. by a panicking handler) `Panicked` with
/// the panic's report, or `Gone`.
pub(crate) struct Reply {
    id: u64,
    outbox: Arc<Outbox>,
    /// The connection the request came on (see `Outbox::owe_reply`).
    connection: u64,
    max_message_size: usize,
    last_panic: fn() -> Option<ErrorReport>,
    sent: bool,
}

impl Reply {
    /// Sends the answer.
    pub(crate) fn answer<A: Serialize>(mut self, answer: &A) {
        let frame = match encode(Header::answer(self.id), answer, self.max_message_size) {
            Ok(bytes) => bytes,
            Err(e) => failure_frame(self.id, Failure::Wire(e.to_string()), self.max_message_size),
        };
        self.send(frame);
    }

    /// Sends a failure.
    pub(crate) fn fail(mut self, failure: Failure) {
        let frame = failure_frame(self.id, failure, self.max_message_size);
        self.send(frame);
    }

    fn send(&mut self, frame: Bytes) {
        self.sent = true;
        self.outbox.push_reply(frame, self.connection);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            let failure = match (self.last_panic)() {
                Some(report) => Failure::Panicked(report),
                None => Failure::Gone,
            };
            let frame = failure_frame(self.id, failure, self.max_message_size);
            self.send(frame);
        }
    }
}

type Handler = Box<dyn Fn(&[u8], Reply)>;

/// The request types one side answers, by tag.
pub(crate) struct Handlers {
    by_tag: HashMap<u64, Handler>,
    last_panic: fn() -> Option<ErrorReport>,
}

impl Handlers {
    /// No handlers yet; `last_panic` names the panic that dropped an answer,
    /// where the side knows it.
    pub(crate) fn new(last_panic: fn() -> Option<ErrorReport>) -> Self {
        Handlers { by_tag: HashMap::new(), last_panic }
    }

    /// Answers requests of type `R` with `start`, which hands the decoded
    /// request to an actor and the [`Reply`] to whatever answers.
    pub(crate) fn insert<R: Request>(&mut self, start: impl Fn(R, Reply) + 'static) {
        let handler: Handler = Box::new(move |payload, reply| match codec::decode::<R>(payload) {
            Ok(req) => start(req, reply),
            Err(e) => reply.fail(Failure::Wire(e.to_string())),
        });
        self.by_tag.insert(tag_of::<R>(), handler);
    }

    /// Starts answering request frame `inbound`; the reply goes to `outbox`.
    pub(crate) fn dispatch(
        &self,
        inbound: &Inbound,
        outbox: &Arc<Outbox>,
        max_message_size: usize,
    ) {
        let (id, tag) = (inbound.header.id, inbound.header.tag);
        let reply = Reply {
            id,
            outbox: outbox.clone(),
            connection: outbox.owe_reply(),
            max_message_size,
            last_panic: self.last_panic,
            sent: false,
        };
        match self.by_tag.get(&tag) {
            Some(handler) => handler(inbound.payload(), reply),
            None => reply.fail(Failure::Unhandled(format!("request type with tag {tag:016x}"))),
        }
    }
}

fn failure_frame(id: u64, failure: Failure, max: usize) -> Bytes {
    encode(Header::failed(id), &failure, max).unwrap_or_else(|_| {
        // A failure too large to send (a huge panic message): send its gist.
        let gist = Failure::Wire("the failure report was too large to send".into());
        encode(Header::failed(id), &gist, usize::MAX).unwrap_or_default()
    })
}
