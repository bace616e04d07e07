//! [`Port`]: posts and requests that go straight into a worker's outbox,
//! from any thread, without a turn of its `Worker` actor.
//!
//! The actor's mailbox costs each message an allocation, a wake-up and a
//! dispatch; a port encodes on the caller's thread and queues the bytes
//! where the actor would have. What the actor adds is not lost: restarts,
//! the queue's bound, the exit's failures and cancellation work the same,
//! because they live in the outbox and the table of pending requests,
//! which a port shares. Two things are the actor's alone: waiting for room
//! behind messages the actor holds (a port's messages may pass those), and
//! `Event::Refused` (a port's caller gets the error itself).

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use super::messages::ToCaller;
use super::options::WhenFull;
use super::stats::{sampled, Recorder};
use super::turn::Turn;
use super::worker::Worker;
use crate::error::WorkerError;
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::{Naming, Slot};
use crate::session::sender::{
    answer_by, deadline, AnswerRx, Cancel, Encoded, NotQueued, Posted, Sender,
};
use crate::session::streams::{AnswerStream, Asking};
use crate::session::trace;
use crate::streamed::StreamRequest;
use crate::wire::encode::Arena;
use crate::wire::outbox::Refusal;
use actix::{Addr, Context, Handler, Message, MessageResult};

/// A direct line to one worker: [`post`](Port::post) and
/// [`ask`](Port::ask) without going through the `Worker` actor's mailbox,
/// from any thread.
///
/// ```no_run
/// # use actix::prelude::*;
/// # use actix_webworker::{Port, Protocol, Worker, WorkerError};
/// # struct Calc;
/// # impl Protocol for Calc { type ToWorker = u64; type FromWorker = (); }
/// async fn feed(worker: &Addr<Worker<Calc>>) -> Result<(), WorkerError> {
///     let mut port = Port::open(worker).await?;
///     for n in 0..1_000_000 {
///         port.post(n)?;
///     }
///     Ok(())
/// }
/// ```
///
/// Open it once and keep it (in an actix-web handler's app data, in a
/// thread of your own): every clone can post and ask on its own, and a
/// port is `Send`. Through a port a message costs about half of what it
/// costs through the address (figures in docs/performance.md), because it is encoded on the caller's thread and queued in
/// the worker's outbox, where the actor would have put it.
///
/// It is the same worker as the address's, with the same guarantees:
/// messages queued while it is starting or restarting go to the next
/// process; the queue's bound ([`Limits`](crate::Limits)) holds; a
/// request in flight when the process exits fails with
/// [`WorkerError::Exited`] and never reaches a later process; a request
/// whose future is dropped, or times out, is cancelled in the worker; its
/// round trips count in [`Stats`](crate::Stats). After the worker has
/// stopped for good, everything sent through its ports fails with the
/// reason ([`WorkerError::Exited`], or [`WorkerError::Terminating`] from
/// `Terminate` on).
///
/// Order: messages sent through one port arrive in the order they were
/// sent, as do those sent through one address; there is no order between
/// the two. Under [`WhenFull::Wait`] the actor holds the messages it could
/// not queue yet; a port's messages do not wait behind those.
pub struct Port<P: Protocol> {
    pub(super) line: Arc<Line>,
    /// This port's own: what it encodes pins memory of nobody else's. A
    /// lean one: an application may hold ports by the hundred, and none
    /// keeps a large message's buffer after it is written.
    arena: Arena,
    /// What `post_waiting` queued since it last let others run.
    turn: Turn,
    _protocol: PhantomData<fn(P::ToWorker)>,
}

/// What every port of one worker shares with its `Worker` actor.
pub(super) struct Line {
    pub(super) sender: Sender,
    recorder: Arc<Recorder>,
    /// Whether a full queue makes a request wait for room.
    pub(super) wait: bool,
    /// The worker's span and name (what a traced request records).
    pub(super) peer: (tracing::Span, String),
}

impl<P: Protocol> Clone for Port<P> {
    fn clone(&self) -> Self {
        Port {
            line: self.line.clone(),
            arena: Arena::lean(),
            turn: Turn::default(),
            _protocol: PhantomData,
        }
    }
}

impl<P: Protocol> std::fmt::Debug for Port<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("queued", &self.line.sender.outbox.len())
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Port<P> {
    /// A port to `worker`; fails only when its actor has stopped
    /// ([`WorkerError::Disconnected`]).
    pub fn open(
        worker: &Addr<Worker<P>>,
    ) -> impl Future<Output = Result<Self, WorkerError>> + use<P> {
        let opened = worker.send(OpenPort(PhantomData));
        async move { opened.await.map_err(|_| WorkerError::Disconnected) }
    }

    /// Posts `data` (the original's `postMessage`): queued, to be written
    /// in order, or refused at once: too large, the queue full
    /// ([`WorkerError::QueueFull`], whatever [`WhenFull`] says: see
    /// [`post_waiting`](Self::post_waiting)), the worker terminating or
    /// exited.
    pub fn post(&mut self, data: P::ToWorker) -> Result<(), WorkerError> {
        self.post_with_fds(data, Vec::new())
    }

    /// [`post`](Self::post) with descriptors (at most
    /// [`MAX_FDS_PER_MESSAGE`](crate::MAX_FDS_PER_MESSAGE)), received with
    /// exactly this message.
    pub fn post_with_fds(
        &mut self,
        data: P::ToWorker,
        fds: Vec<OwnedFd>,
    ) -> Result<(), WorkerError> {
        self.line.sender.post(Some(&mut self.arena), &data, fds)?;
        self.turn.count(0);
        Ok(())
    }

    /// [`post`](Self::post), waiting for room while the queue is full
    /// instead of refusing.
    pub async fn post_waiting(&mut self, data: P::ToWorker) -> Result<(), WorkerError> {
        let sender = &self.line.sender;
        let outbox = &sender.outbox;
        let posted =
            sender.encoding.post_or_append(Some(&mut self.arena), &data, vec![], outbox)?;
        let (mut bytes, mut fds) = match posted {
            Posted::Appended(len) => return self.queued(len).await,
            Posted::Encoded(encoded) => encoded,
        };
        let len = bytes.len();
        loop {
            let epoch = sender.outbox.room_epoch();
            match sender.outbox.try_push(bytes, fds) {
                Ok(()) => return self.queued(len).await,
                Err((Refusal::Full, b, f)) => (bytes, fds) = (b, f),
                Err((refusal, _, _)) => return Err(sender.outbox.error(refusal)),
            }
            sender.outbox.wait_room(epoch).await;
        }
    }

    /// A post of `len` bytes was queued: a caller on the writer's thread
    /// lets it write what it queued (see `turn.rs`).
    async fn queued(&mut self, len: usize) -> Result<(), WorkerError> {
        self.turn.count(len);
        if self.turn.due() {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Asks `request` and resolves to its typed answer, as
    /// [`WorkerAddrExt::ask`](crate::WorkerAddrExt::ask) does. The request
    /// is queued now, not when the future is first polled. Under
    /// [`WhenFull::Wait`] a full queue makes the future wait for room;
    /// else it fails with [`WorkerError::QueueFull`].
    pub fn ask<R: Request>(
        &mut self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + Send + use<P, R> {
        self.ask_within(request, None)
    }

    /// [`ask`](Self::ask), failing with [`WorkerError::Timeout`] (and
    /// cancelled in the worker) if no answer came within `limit` of this
    /// call (not of the future's first poll), the time it waited for room
    /// under [`WhenFull::Wait`] included.
    pub fn ask_timeout<R: Request>(
        &mut self,
        request: R,
        limit: Duration,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + Send + use<P, R> {
        self.ask_within(request, Some(limit))
    }

    /// Asks streamed `request` and gives the stream of its items, as
    /// [`AskStream`](crate::AskStream) does, with a window of `window`
    /// bytes ([`DEFAULT_STREAM_WINDOW`](crate::DEFAULT_STREAM_WINDOW) is
    /// the address's default). Queued now; a full queue refuses it (the
    /// stream's only item says so), whatever [`WhenFull`] says.
    pub fn ask_stream<R: StreamRequest>(
        &mut self,
        request: R,
        window: usize,
    ) -> AnswerStream<R::Item> {
        let line = &self.line;
        let pending = &line.sender.pending;
        let asker = (trace::Caller::here(), trace::Peer::default());
        let asking = Asking::new::<R>(pending, window, asker);
        let arena = Some(&mut self.arena);
        let encoded = line.sender.encoding.stream_request::<P, R>(arena, &asking, &request);
        let (bytes, fds) = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                pending.forget(asking.id);
                return AnswerStream::refused(e);
            }
        };
        let started = sampled();
        let halves = || {
            let recorder = line.recorder.clone();
            let after = Box::new(move |end: Result<(), &WorkerError>| {
                recorder.finish(end.is_ok(), started)
            });
            asking.halves::<R::Item>(pending, Some(after))
        };
        let named = (asking.id, describe::<P, R> as Naming);
        match line.sender.queue_with(named, (bytes, fds), false, halves) {
            Ok(stream) => stream,
            Err(NotQueued::Refused(e)) => AnswerStream::refused(e),
            Err(NotQueued::Full { .. }) => {
                AnswerStream::refused(line.sender.outbox.error(Refusal::Full))
            }
        }
    }

    fn ask_within<R: Request>(
        &mut self,
        request: R,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + Send + use<P, R> {
        let line = &self.line;
        let id = line.sender.pending.next_id();
        let started = sampled();
        let (caller, peer) = (trace::Caller::here(), trace::Peer::default());
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, peer);
        // Kept before it is queued: the answer may come on another thread
        // before this returns.
        line.sender.pending.trace(id, span);
        let encoded =
            line.sender.encoding.request::<P, R>(Some(&mut self.arena), (id, context), &request);
        let named = (id, describe::<P, R> as Naming);
        // The line goes with the future only when it must wait for room:
        // a request queued at once needs no more than its table (an `Arc`
        // less cloned and dropped per request).
        let first = encoded.and_then(|encoded| {
            match line.try_queue::<R::Answer>(named, encoded, started) {
                Ok(rx) => Ok(Ok(rx)),
                Err(NotQueued::Refused(e)) => Err(e),
                Err(NotQueued::Full { bytes, fds, epoch }) => {
                    Ok(Err((line.clone(), (bytes, fds), epoch)))
                }
            }
        });
        // Armed now: dropped before it is first polled, it cancels too.
        let cancel = Cancel::new(&line.sender.pending, id);
        // Where a timeout is counted: the slot is dropped unanswered.
        let timed_out = timeout.map(|_| line.sender.pending.clone());
        // Its limit runs from the call, not from the first poll.
        let deadline = timeout.map(deadline);
        async move {
            let answer = match first? {
                Ok(rx) => answer_by(cancel, rx, deadline).await,
                // Its timeout covers the wait for room too, as through the
                // address. Boxed: the future of every request would
                // otherwise have room for this rare one's state (with it
                // and the timer inline, a port's ask future was 1,008
                // bytes; 472 with both boxed, 488 with the deadline taken
                // at the call).
                Err((line, encoded, epoch)) => {
                    Box::pin(async move {
                        let queued = line.queue_when_room(named, encoded, epoch, started);
                        let rx = match deadline {
                            None => queued.await?,
                            Some((limit, at)) => tokio::time::timeout_at(at, queued)
                                .await
                                .unwrap_or(Err(WorkerError::Timeout(limit)))?,
                        };
                        answer_by(cancel, rx, deadline).await
                    })
                    .await
                }
            };
            if let (Err(WorkerError::Timeout(_)), Some(pending)) = (&answer, timed_out) {
                // Its slot was dropped unanswered: the caller's outcome.
                pending.count(Some((false, None)));
            }
            answer
        }
    }
}

impl Line {
    /// Queues request `id` once the outbox has made room since `epoch`,
    /// and again after each time it finds it full.
    async fn queue_when_room<A: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        named: (u64, Naming),
        (mut bytes, mut fds): Encoded,
        mut epoch: u64,
        started: Option<std::time::Instant>,
    ) -> Result<AnswerRx<A>, WorkerError> {
        loop {
            self.sender.outbox.wait_room(epoch).await;
            match self.try_queue::<A>(named, (bytes, fds), started) {
                Ok(rx) => return Ok(rx),
                Err(NotQueued::Refused(e)) => return Err(e),
                Err(NotQueued::Full { bytes: b, fds: f, epoch: e }) => {
                    (bytes, fds, epoch) = (b, f, e)
                }
            }
        }
    }

    /// Queues request `id` with a slot that records its round trip and
    /// hands its answer to the caller; a full queue is refused, unless the
    /// limits say wait (then the caller waits for room and tries again).
    fn try_queue<A: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        id: (u64, Naming),
        encoded: Encoded,
        started: Option<std::time::Instant>,
    ) -> Result<AnswerRx<A>, NotQueued> {
        let slot = |tx| Box::new(ToCaller::new(tx, started)) as Box<dyn Slot>;
        self.sender.queue_request(id, encoded, self.wait, slot)
    }
}

/// Asks a `Worker` for a [`Port`] (see [`Port::open`]).
struct OpenPort<P>(PhantomData<fn(P)>);

impl<P: Protocol> Message for OpenPort<P> {
    type Result = Port<P>;
}

impl<P: Protocol> Handler<OpenPort<P>> for Worker<P> {
    type Result = MessageResult<OpenPort<P>>;

    fn handle(&mut self, _: OpenPort<P>, _: &mut Context<Self>) -> Self::Result {
        let line = Line {
            sender: self.sender.clone(),
            recorder: self.recorder.clone(),
            wait: self.options.limits.when_full == WhenFull::Wait,
            peer: (self.span.clone(), self.options.name.to_string()),
        };
        MessageResult(Port {
            line: Arc::new(line),
            arena: Arena::lean(),
            turn: Turn::default(),
            _protocol: PhantomData,
        })
    }
}
