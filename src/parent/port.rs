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

use actix::{Addr, Context, Handler, Message, MessageResult};
use bytes::Bytes;

use super::messages::ToCaller;
use super::options::WhenFull;
use super::stats::Recorder;
use super::worker::Worker;
use crate::error::{WireError, WorkerError};
use crate::protocol::Codec;
use crate::protocol::{tag_of, Protocol, Request};
use crate::session::requests::Pending;
use crate::wire::encode::{descriptors, encode_in_sharing, Arena};
use crate::wire::envelope::Header;
use crate::wire::outbox::{Outbox, Refusal};

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
/// costs through the address (figures in the README's performance
/// section), because it is encoded on the caller's thread and queued in
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
    line: Arc<Line>,
    /// This port's own: what it encodes pins memory of nobody else's. A
    /// lean one: an application may hold ports by the hundred, and none
    /// keeps a large message's buffer after it is written.
    arena: Arena,
    _protocol: PhantomData<fn(P::ToWorker)>,
}

/// What every port of one worker shares with its `Worker` actor.
struct Line {
    outbox: Arc<Outbox>,
    pending: Arc<Pending>,
    recorder: Arc<Recorder>,
    max_message_size: usize,
    codec: Codec,
    fds_ok: bool,
    wait: bool,
}

impl<P: Protocol> Clone for Port<P> {
    fn clone(&self) -> Self {
        Port { line: self.line.clone(), arena: Arena::lean(), _protocol: PhantomData }
    }
}

impl<P: Protocol> std::fmt::Debug for Port<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("queued", &self.line.outbox.len()).finish_non_exhaustive()
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
        let (bytes, fds) = self.encode(Header::post(fds.len())?, &data, fds)?;
        self.line.outbox.push(bytes, fds)
    }

    /// [`post`](Self::post), waiting for room while the queue is full
    /// instead of refusing.
    pub async fn post_waiting(&mut self, data: P::ToWorker) -> Result<(), WorkerError> {
        let (mut bytes, mut fds) = self.encode(Header::post(0)?, &data, Vec::new())?;
        loop {
            let epoch = self.line.outbox.room_epoch();
            match self.line.outbox.try_push(bytes, fds) {
                Ok(()) => return Ok(()),
                Err((Refusal::Full, b, f)) => (bytes, fds) = (b, f),
                Err((refusal, _, _)) => return Err(self.line.outbox.error(refusal)),
            }
            self.line.outbox.wait_room(epoch).await;
        }
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
    /// cancelled in the worker) if no answer came within `limit`.
    pub fn ask_timeout<R: Request>(
        &mut self,
        request: R,
        limit: Duration,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + Send + use<P, R> {
        self.ask_within(request, Some(limit))
    }

    fn ask_within<R: Request>(
        &mut self,
        request: R,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + Send + use<P, R> {
        let line = self.line.clone();
        let id = line.pending.next_id();
        let started = line.recorder.start();
        let first = crate::session::shape::check_request::<R>()
            .map_err(|e| WireError::Encode(e.to_string()).into())
            .and_then(|()| self.encode(Header::request(id, tag_of::<R>()), &request, Vec::new()))
            .map(|(bytes, fds)| line.try_queue::<R::Answer>(id, bytes, fds, started));
        async move {
            let mut attempt = first?;
            let rx = loop {
                match attempt {
                    Attempt::Queued(rx) => break rx,
                    Attempt::Refused(e) => return Err(e),
                    Attempt::Full { bytes, fds, epoch } => {
                        line.outbox.wait_room(epoch).await;
                        attempt = line.try_queue::<R::Answer>(id, bytes, fds, started);
                    }
                }
            };
            // From here on, dropped or timed out, it is cancelled.
            let cancel = Cancel { pending: &line.pending, id, armed: true };
            let answer = match timeout {
                None => tokio::task::unconstrained(rx).await,
                Some(limit) => match tokio::time::timeout(limit, rx).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        line.recorder.finish(false, None);
                        return Err(WorkerError::Timeout(limit));
                    }
                },
            };
            // Its slot went with the answer: nothing to look up.
            cancel.disarm();
            answer.map_err(|_| WorkerError::Disconnected)?
        }
    }

    fn encode<M: serde::Serialize>(
        &mut self,
        header: Header,
        data: &M,
        fds: Vec<OwnedFd>,
    ) -> Result<(Bytes, Vec<OwnedFd>), WorkerError> {
        let line = &self.line;
        let fds = descriptors(line.fds_ok, fds)?;
        encode_in_sharing(&mut self.arena, line.codec, header, data, fds, line.max_message_size)
    }
}

/// How an attempt to queue a request went.
enum Attempt<A> {
    /// Queued; its answer comes here.
    Queued(tokio::sync::oneshot::Receiver<Result<A, WorkerError>>),
    /// Refused for good.
    Refused(WorkerError),
    /// The queue is full and the limits say wait: try again once it has
    /// made room since `epoch`.
    Full { bytes: Bytes, fds: Vec<OwnedFd>, epoch: u64 },
}

impl Line {
    /// Queues request `id`, its answer slot taken first (the answer may
    /// come before this returns). Made for the connection its slot was
    /// taken on: if that one ends before the push, the slot is failed with
    /// the others (or forgotten here) and the request is made again for
    /// the next (see `Outbox::try_push_on`).
    fn try_queue<A: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        id: u64,
        mut bytes: Bytes,
        mut fds: Vec<OwnedFd>,
        started: Option<std::time::Instant>,
    ) -> Attempt<A> {
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let slot = ToCaller::new(tx, self.recorder.clone(), started);
            let connection = self.pending.attach_on(id, Box::new(slot));
            let epoch = self.outbox.room_epoch();
            let refusal = match self.outbox.try_push_on(bytes, fds, connection) {
                Ok(()) => return Attempt::Queued(rx),
                Err((refusal, b, f)) => {
                    (bytes, fds) = (b, f);
                    refusal
                }
            };
            self.pending.forget(id);
            match refusal {
                Refusal::Moved => continue,
                Refusal::Full if self.wait => return Attempt::Full { bytes, fds, epoch },
                refusal => return Attempt::Refused(self.outbox.error(refusal)),
            }
        }
    }
}

/// Cancels request `id` when dropped: its caller stopped waiting. (After
/// the answer came its slot is gone, and this does nothing.)
struct Cancel<'a> {
    pending: &'a Pending,
    id: u64,
    armed: bool,
}

impl Cancel<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.cancel(self.id);
        }
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
            outbox: self.outbox.clone(),
            pending: self.pending.clone(),
            recorder: self.recorder.clone(),
            max_message_size: self.limits.max_message_size,
            codec: self.codec,
            fds_ok: self.fds_ok,
            wait: self.limits.when_full == WhenFull::Wait,
        };
        MessageResult(Port { line: Arc::new(line), arena: Arena::lean(), _protocol: PhantomData })
    }
}
