//! The `Worker` actor: a worker process as an actix actor in the parent.
//!
//! Its mailbox is the original's `postMessage`: [`Post`](crate::Post) a typed message and
//! it is encoded and queued in the worker's outbox, to be written as soon as (and in the
//! order that) the child can take it. [`Terminate`](crate::Terminate) ends the worker the
//! polite way first. The connection and the process are watched by a task of their own (see
//! `link.rs`); how the process ended is that task's value, and comes back as one message.
//!
//! The actor never stops taking messages: when the outbox is full and the limits say
//! [`WhenFull::Wait`], what cannot be queued waits in a queue of the actor's own (everything
//! sent after it waits behind it, so order is kept), and its sender is answered once it is
//! queued. Exits, restarts, terminate, timeouts and `Join` act at once, whatever waits.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, ResponseFuture, Running};

use super::events::{Event, WorkerEvent};
use super::options::{Options, WhenFull};
use super::process::{ChildHandle, Grace};
use super::sink::EventSink;
use super::spawn;
use super::stats::Recorder;
use super::turn::Turn;
use crate::error::{ExitStatus, SpawnError, WorkerError};
use crate::handoff::{ENV_ENTRY, ENV_FD};
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::Pending;
use crate::session::sender::{awaited, Encoding, Posted, Sender};
use crate::session::trace;
use crate::supervise::History;
use crate::wire::encode::Arena;
use crate::wire::outbox::{Outbox, Refusal};
use crate::wire::segments::Segments;

/// A worker process, as an actor. Start one with [`Worker::builder`].
///
/// Messages it handles: [`Post`](crate::Post) (the original's
/// `postMessage`), [`Ask`](crate::Ask) (a typed request),
/// [`Terminate`](crate::Terminate) and [`Join`](crate::Join). Events go to
/// the recipient given to [`WorkerBuilder::events`](crate::WorkerBuilder::events)
/// or come as a stream. The address stays valid across restarts (see
/// [`RestartPolicy`](crate::RestartPolicy)).
pub struct Worker<P: Protocol> {
    /// What it was started with, kept whole.
    pub(super) options: Options,
    /// Its span (name, entry, pid), while a subscriber wants it.
    pub(super) span: tracing::Span,
    pub(super) history: History,
    /// The exits that led to restarts, for the final report.
    pub(super) exits: Vec<ExitStatus>,
    /// The shape of the protocol, compared at each handshake.
    pub(super) fingerprint: u64,
    pub(super) events: EventSink<P>,
    /// Its sending half: the outbox its connections drain, the requests
    /// in flight, how its connections are written.
    pub(super) sender: Sender,
    /// What this worker's posts and requests are encoded into (see
    /// `wire::encode::encode_in`): its own, so that its queued messages pin no
    /// memory shared with other workers'.
    pub(super) arena: Arena,
    /// Its requests' outcomes and round trips, for `Stats`: the tally of
    /// its sender's `Pending` too (shared with its ports).
    pub(super) recorder: Arc<Recorder>,
    /// The running process; the link task owns it, so that nothing of a
    /// process is held once it has been reaped.
    pub(super) child: Weak<ChildHandle>,
    /// A terminate's grace period, when it came before the process was
    /// up: its signals are for the process once it is.
    pub(super) deferred_grace: Option<Duration>,
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) joiners: Vec<tokio::sync::oneshot::Sender<ExitStatus>>,
    pub(super) state: State,
    /// Accepted while the outbox was full, oldest first; see the module docs.
    pub(super) waiting: VecDeque<Waiting>,
    /// A task waits for the outbox to make room for `waiting`.
    pub(super) watching: bool,
    /// What was queued since the writer last had a turn (see `turn.rs`).
    pub(super) turn: Turn,
    /// The signals a terminate sends after its grace period; cancelled when
    /// the process exits first.
    pub(super) escalation: Option<tokio::task::JoinHandle<()>>,
    /// The worker said it closes itself (`Closing`): a terminate still holds it to a grace.
    pub(super) closing: bool,
    _protocol: PhantomData<fn() -> P>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Running,
    /// The child is gone; a new one starts after the backoff. Messages are
    /// queued for it meanwhile.
    Restarting(ExitStatus),
    /// Terminate or `close()` was asked for: no more messages, no restart.
    Terminating,
    Exited(ExitStatus),
}

/// Where a post's sender hears that it is queued, once the outbox has room.
pub(super) type QueuedLater = tokio::sync::oneshot::Receiver<Result<(), WorkerError>>;

/// How a request went: answered or refused at once, awaited by the link
/// task (`Waiting`), or by a future of its own (with a timeout).
pub(super) enum Asked<A> {
    Ready(Result<A, WorkerError>),
    Waiting { id: u64, pending: Arc<Pending> },
    Later(Pin<Box<dyn Future<Output = Result<A, WorkerError>>>>),
}

/// A message waiting for room in the outbox.
pub(super) struct Waiting {
    pub(super) bytes: Segments,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) then: Then,
}

/// Who is told when a waiting message is queued.
pub(super) enum Then {
    /// The sender of a post.
    Post(tokio::sync::oneshot::Sender<Result<(), WorkerError>>),
    /// Nobody: the request `id` waits for its answer in `pending` (and is
    /// dropped unsent if that gives up first).
    Request(u64),
}

impl<P: Protocol> Worker<P> {
    pub(crate) fn start_with(
        options: Options,
        events: EventSink<P>,
    ) -> Result<Addr<Self>, SpawnError> {
        if actix::System::try_current().is_none() {
            return Err(SpawnError::NoSystem);
        }
        // Still named in our own environment: we were started as a worker
        // and are not running as one yet. Every worker started now would do
        // the same again.
        if std::env::var_os(ENV_ENTRY).is_some() || std::env::var_os(ENV_FD).is_some() {
            return Err(SpawnError::NotYetAWorker);
        }
        // What can be known without starting anything fails here; the
        // process itself is started on the spawner thread (`started`).
        spawn::check(&options.spec)?;
        let fingerprint = crate::session::shape::fingerprint::<P>()?;
        let limits = &options.limits;
        let outbox = Arc::new(Outbox::new(limits.max_queued_messages, limits.max_queued_bytes));
        let encoding = Encoding {
            codec: options.codec,
            max_message_size: limits.max_message_size,
            descriptors: options.spec.transport.carries_fds(),
        };
        let span = trace::peer(&options.name, options.spec.entry.as_deref().unwrap_or_default());
        let (sender, recorder) = (Sender::new(outbox, encoding), Arc::<Recorder>::default());
        sender.pending.count_into(recorder.clone());
        let worker = Worker {
            options,
            span,
            history: History::default(),
            exits: Vec::new(),
            fingerprint,
            events,
            sender,
            arena: Arena::default(),
            recorder,
            child: Weak::new(),
            deferred_grace: None,
            generation: 0,
            pid: 0,
            joiners: Vec::new(),
            state: State::Running,
            waiting: VecDeque::new(),
            watching: false,
            turn: Turn::default(),
            escalation: None,
            closing: false,
            _protocol: PhantomData,
        };
        Ok(Worker::create(move |ctx| {
            // `send` and `do_send` from one sender must stay in order: with actix's bounded
            // mailbox a `send` may wait for room while a later `do_send` overtakes it. The
            // bound that matters is the outbox's. Set before anyone holds the address.
            ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
            worker
        }))
    }

    pub(super) fn emit(&self, kind: Event<P>) {
        self.events.send(WorkerEvent::new(self.options.name.clone(), self.pid, kind));
    }

    /// Whether messages are taken: an error says why not.
    pub(super) fn check_open(&self) -> Result<(), WorkerError> {
        match self.state {
            State::Running | State::Restarting(_) => Ok(()),
            State::Terminating => Err(WorkerError::Terminating),
            State::Exited(status) => Err(WorkerError::Exited(status)),
        }
    }

    /// Whether a message queued now waits behind others that wait for
    /// room (under [`WhenFull::Wait`]).
    fn behind_waiting(&self) -> bool {
        self.options.limits.when_full == WhenFull::Wait && !self.waiting.is_empty()
    }

    /// Queues one message: at once, or (when the outbox is full and the
    /// limits say [`WhenFull::Wait`]) behind the others that wait for room.
    /// A waiting post's sender hears on the receiver when it is queued.
    pub(super) fn queue(
        &mut self,
        bytes: Segments,
        fds: Vec<OwnedFd>,
        request: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<Result<(), WorkerError>>>, WorkerError> {
        let wait = self.options.limits.when_full == WhenFull::Wait;
        let epoch = self.sender.outbox.room_epoch();
        let (bytes, fds) = if self.behind_waiting() {
            (bytes, fds)
        } else {
            match self.turn.push(&self.sender.outbox, (bytes, fds), ctx) {
                Ok(()) => return Ok(None),
                Err((Refusal::Full, bytes, fds)) if wait => (bytes, fds),
                Err((refusal, _, _)) => return Err(self.sender.outbox.error(refusal)),
            }
        };
        let (then, rx) = match request {
            Some(id) => (Then::Request(id), None),
            None => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Then::Post(tx), Some(rx))
            }
        };
        self.waiting.push_back(Waiting { bytes, fds, then });
        self.watch_room(epoch, ctx);
        Ok(rx)
    }

    /// Has the waiting messages moved to the outbox once it makes room
    /// (since `epoch`).
    fn watch_room(&mut self, epoch: u64, ctx: &mut Context<Self>) {
        if self.watching {
            return;
        }
        self.watching = true;
        let outbox = self.sender.outbox.clone();
        let room = async move { outbox.wait_room(epoch).await };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(room).map(|(), act, ctx| {
            act.watching = false;
            act.queue_waiting(ctx);
        }));
    }

    /// Moves waiting messages to the outbox while it has room, in order.
    pub(super) fn queue_waiting(&mut self, ctx: &mut Context<Self>) {
        while let Some(Waiting { bytes, fds, then }) = self.waiting.pop_front() {
            if !self.still_wanted(&then) {
                continue;
            }
            let epoch = self.sender.outbox.room_epoch();
            match self.sender.outbox.try_push(bytes, fds) {
                Ok(()) => then.queued(Ok(())),
                Err((refusal, bytes, fds)) => {
                    self.waiting.push_front(Waiting { bytes, fds, then });
                    // Ended: the exit that follows tells them.
                    if refusal == Refusal::Full {
                        self.watch_room(epoch, ctx);
                    }
                    return;
                }
            }
        }
    }

    /// Whether a waiting message is still to be sent: a request that failed
    /// or timed out meanwhile is not (it must never reach a worker after
    /// its caller was told it failed).
    pub(super) fn still_wanted(&self, then: &Then) -> bool {
        match then {
            Then::Post(_) => true,
            Then::Request(id) => self.sender.pending.contains(*id),
        }
    }

    /// Encodes and queues a post (see `Post`): queued now (`None`), or
    /// once the outbox has room (told on the receiver), or refused.
    pub(super) fn post(
        &mut self,
        data: P::ToWorker,
        fds: Vec<OwnedFd>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<QueuedLater>, WorkerError> {
        // Behind messages waiting for room, a post waits too.
        let behind = self.behind_waiting();
        let posted = self.check_open().and_then(|()| {
            let (arena, outbox) = (Some(&mut self.arena), &self.sender.outbox);
            match behind {
                true => self.sender.encoding.post(arena, &data, fds).map(Posted::Encoded),
                false => self.sender.encoding.post_or_append(arena, &data, fds, outbox),
            }
        });
        let queued = posted.and_then(|posted| match posted {
            Posted::Appended(len) => {
                self.turn.counted(len, ctx);
                Ok(None)
            }
            Posted::Encoded((bytes, fds)) => self.queue(bytes, fds, None, ctx),
        });
        if let Err(e) = &queued {
            tracing::debug!(worker = %self.options.name, error = %e, "post refused");
            self.emit(Event::Refused(e.clone()));
        }
        queued
    }

    /// This worker as the asking span of a request to it names it; no pid
    /// in a restart's backoff or once stopped (that process never sees it).
    pub(super) fn as_peer(&self) -> trace::Peer<'_> {
        let pid =
            (!matches!(self.state, State::Restarting(_) | State::Exited(_))).then_some(self.pid);
        trace::Peer { name: Some(&self.options.name), pid, span: Some(&self.span) }
    }

    /// Encodes and queues a request, and awaits its answer (see `Ask`).
    pub(super) fn ask<R: Request>(
        &mut self,
        (request, caller): (R, trace::Caller),
        timeout: Option<Duration>,
        ctx: &mut Context<Self>,
    ) -> Asked<R::Answer> {
        let id = self.sender.pending.next_id();
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, self.as_peer());
        let encoded = self.check_open().and_then(|()| {
            self.sender.encoding.request::<P, R>(Some(&mut self.arena), (id, context), &request)
        });
        // Queued, or waiting for room: either way its answer is awaited now,
        // and its timeout runs from now.
        if let Err(e) = encoded.and_then(|(bytes, fds)| self.queue(bytes, fds, Some(id), ctx)) {
            return Asked::Ready(Err(e));
        }
        self.sender.pending.trace(id, span);
        match timeout {
            // The common case: the answer, when it comes, goes straight to
            // the caller, decoded by the link task; no task of its own.
            None => Asked::Waiting { id, pending: self.sender.pending.clone() },
            Some(timeout) => Asked::Later(Box::pin(awaited::<R::Answer>(
                &self.sender.pending,
                (id, describe::<P, R>),
                Some(timeout),
            ))),
        }
    }

    /// Resolves with the exit status once the worker has exited for good.
    pub(super) fn join(&mut self) -> ResponseFuture<ExitStatus> {
        if let State::Exited(status) = self.state {
            return Box::pin(std::future::ready(status));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.joiners.push(tx);
        Box::pin(
            async move { rx.await.unwrap_or(ExitStatus { code: None, signal: None, lost: None }) },
        )
    }
}

impl Then {
    /// Tells the sender how queueing went.
    pub(super) fn queued(self, result: Result<(), WorkerError>) {
        if let Then::Post(tx) = self {
            let _ = tx.send(result);
        }
    }
}

/// How often the requests whose callers went away are looked for (and
/// cancelled, the worker told).
const SWEEP: Duration = Duration::from_millis(100);

/// Runs `f` every `period` until it returns false, in a task of its own:
/// not as an interval of an actor's context, which actix polls again with
/// every message the actor handles (a cost on every request).
pub(crate) fn every(period: Duration, mut f: impl FnMut() -> bool + 'static) {
    crate::session::spawn_boxed(async move {
        let start = tokio::time::Instant::now() + period;
        let mut ticks = tokio::time::interval_at(start, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !f() {
                break;
            }
        }
    });
}

impl<P: Protocol> Actor for Worker<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.spawn_process(ctx);
        let pending = Arc::downgrade(&self.sender.pending);
        every(SWEEP, move || pending.upgrade().map(|pending| pending.sweep()).is_some());
    }

    /// The last address is gone: end the worker the polite way, within its
    /// shutdown timeout.
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.terminate(Grace::After(self.options.shutdown_timeout));
        Running::Stop
    }
}

impl<P: Protocol> Drop for Worker<P> {
    fn drop(&mut self) {
        // Dropped without `stopping` (the System went away): the link task
        // is gone with the runtime, so the ChildHandle's own Drop kills and
        // reaps once the last reference goes.
        if matches!(self.state, State::Running | State::Restarting(_)) {
            self.sender.outbox.discard(WorkerError::Disconnected);
        }
        // A link task still running (it holds the process) fails what is in
        // flight with the exit, or answers it: the worker may still be
        // closing politely. With none, nothing else would: ports hold the
        // table of pending requests beyond the actor, and their callers
        // would wait for ever (reliability review, finding 7).
        if self.child.strong_count() == 0 {
            fail_abandoned(&self.sender.outbox, &self.sender.pending);
        }
    }
}

/// Fails every request in `pending` once nothing is left to answer or
/// fail them: the actor is gone with no link task, or the link task was
/// dropped unfinished (its runtime went away; `lifecycle.rs`). Pushes end
/// first, so that a port's request made from now on is refused at the
/// outbox, not left in the table; each fails with the reason that refusal
/// gives (`Disconnected` when the actor was dropped running, else
/// `Terminating`).
pub(super) fn fail_abandoned(outbox: &Outbox, pending: &Pending) {
    outbox.end_pushes();
    pending.fail_all(&outbox.error(Refusal::Ended));
}
