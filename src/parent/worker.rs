//! The `Worker` actor: a worker process as an actix actor in the parent.
//!
//! Its mailbox is the original's `postMessage`: [`Post`] a typed message and
//! it is encoded and queued in the worker's outbox, to be written as soon as
//! (and in the order that) the child can take it. [`Terminate`] ends the
//! worker the polite way first. The connection and the process are watched
//! by a task of their own (see `link.rs`), which reports to the actor only
//! what changes its state.
//!
//! The actor never stops taking messages: when the outbox is full and the
//! limits say [`WhenFull::Wait`], what cannot be queued waits in a queue of
//! the actor's own (everything sent after it waits behind it, so order is
//! kept), and its sender is answered once it is queued. Exits, restarts,
//! terminate, timeouts and `Join` act at once, whatever waits.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, Running,
};
use bytes::Bytes;

use super::events::{Event, GaveUp, WorkerEvent};
use super::link::{Link, LinkExit};
use super::options::CommandSpec;
use super::options::{Limits, Options, WhenFull};
use super::output;
use super::process::ChildHandle;
use super::sink::{EventSink, Events};
use super::spawn;
use crate::error::{ExitStatus, SpawnError, WireError, WorkerError};
use crate::handoff::{ENV_ENTRY, ENV_FD};
use crate::protocol::Protocol;
use crate::protocol::{tag_of, Request};
use crate::session::requests::{await_answer, Handlers, Pending};
use crate::supervise::{Decision, History, RestartPolicy};
use crate::wire::frame::{self, Kind};
use crate::wire::outbox::{Outbox, Refusal};
use crate::wire::{self, codec};

/// A worker process, as an actor. Start one with [`Worker::builder`].
///
/// Messages it handles: [`Post`] (the original's `postMessage`), [`Ask`]
/// (a typed request), [`Terminate`] and [`Join`]. Events go to the recipient
/// given to [`WorkerBuilder::events`](crate::WorkerBuilder::events). The address stays valid across
/// restarts (see [`RestartPolicy`]).
pub struct Worker<P: Protocol> {
    name: Arc<str>,
    spec: CommandSpec,
    policy: RestartPolicy,
    history: History,
    /// The exits that led to restarts, for the final report.
    exits: Vec<ExitStatus>,
    limits: Limits,
    grace: Duration,
    kill_delay: Duration,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    /// The shape of the protocol, compared at each handshake.
    fingerprint: u64,
    events: EventSink<P>,
    outbox: Arc<Outbox>,
    /// What this worker's posts and requests are encoded into (see
    /// `wire::encode_in`): its own, so that its queued messages pin no
    /// memory shared with other workers'.
    arena: bytes::BytesMut,
    pending: Arc<Pending>,
    handlers: Rc<Handlers>,
    /// The running process; the link task owns it, so that nothing of a
    /// process is held once it has been reaped.
    child: Weak<ChildHandle>,
    /// A terminate's grace period, when it came before the process was
    /// up: its signals are for the process once it is.
    deferred_grace: Option<Duration>,
    generation: u64,
    pid: u32,
    joiners: Vec<tokio::sync::oneshot::Sender<ExitStatus>>,
    state: State,
    /// Accepted while the outbox was full, oldest first; see the module docs.
    waiting: VecDeque<Waiting>,
    /// A task waits for the outbox to make room for `waiting`.
    watching: bool,
    /// The signals a terminate sends after its grace period; cancelled when
    /// the process exits first.
    escalation: Option<tokio::task::JoinHandle<()>>,
    _protocol: PhantomData<fn() -> P>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// The child is gone; a new one starts after the backoff. Messages are
    /// queued for it meanwhile.
    Restarting(ExitStatus),
    /// Terminate or `close()` was asked for: no more messages, no restart.
    Terminating,
    Exited(ExitStatus),
}

/// A message waiting for room in the outbox.
struct Waiting {
    bytes: Bytes,
    fds: Vec<OwnedFd>,
    then: Then,
}

/// Who is told when a waiting message is queued.
enum Then {
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
        let name = options.name;
        // What can be known without starting anything fails here; the
        // process itself is started on the spawner thread (`started`).
        spawn::check(&options.spec)?;
        let fingerprint = crate::session::shape::fingerprint::<P>()?;
        let limits = options.limits;
        let worker = Worker {
            name,
            spec: options.spec,
            policy: options.policy,
            history: History::default(),
            exits: Vec::new(),
            limits,
            grace: options.grace,
            kill_delay: options.kill_delay,
            handshake_timeout: options.handshake_timeout,
            shutdown_timeout: options.shutdown_timeout,
            fingerprint,
            events,
            outbox: Arc::new(Outbox::new(limits.max_queued_messages, limits.max_queued_bytes)),
            arena: bytes::BytesMut::new(),
            pending: Arc::default(),
            handlers: Rc::new(options.handlers),
            child: Weak::new(),
            deferred_grace: None,
            generation: 0,
            pid: 0,
            joiners: Vec::new(),
            state: State::Running,
            waiting: VecDeque::new(),
            watching: false,
            escalation: None,
            _protocol: PhantomData,
        };
        Ok(Worker::create(move |ctx| {
            // `send` and `do_send` from one sender must stay in order: with
            // actix's bounded mailbox a `send` may wait for room while a
            // later `do_send` overtakes it. The bound that matters is the
            // outbox's. Set before anyone holds the address.
            ctx.set_mailbox_capacity(crate::handoff::MAILBOX_CAPACITY);
            worker
        }))
    }

    fn emit(&self, kind: Event<P>) {
        self.events.send(WorkerEvent { name: self.name.clone(), pid: self.pid, kind });
    }

    fn launch(&mut self, ctx: &mut Context<Self>, spawned: spawn::Spawned) {
        self.generation += 1;
        let handle = Arc::new(spawned.handle);
        self.pid = handle.pid();
        if let Some(fd) = spawned.stdout {
            output::capture(fd, self.name.clone(), self.pid, output::Stream::Stdout);
        }
        if let Some(fd) = spawned.stderr {
            output::capture(fd, self.name.clone(), self.pid, output::Stream::Stderr);
        }
        self.child = Arc::downgrade(&handle);
        super::process::register(&handle, self.shutdown_timeout, self.kill_delay);
        let generation = self.generation;
        let link = Link::<P> {
            name: self.name.clone(),
            handle,
            outbox: self.outbox.clone(),
            pending: self.pending.clone(),
            handlers: self.handlers.clone(),
            events: Events::new(self.events.clone(), self.limits.event_window),
            on_closing: {
                let me = ctx.address().downgrade();
                Box::new(move || {
                    if let Some(me) = me.upgrade() {
                        me.do_send(ChildClosing { generation });
                    }
                })
            },
            max_message_size: self.limits.max_message_size,
            fingerprint: self.fingerprint,
            handshake_timeout: self.handshake_timeout,
            asked: false,
        };
        // Its own task: it outlives the actor, should the last address go.
        let me = ctx.address().downgrade();
        actix_rt::spawn(async move {
            let LinkExit { status, certain } = link.run(spawned.sock).await;
            if let Some(me) = me.upgrade() {
                me.do_send(ChildExited { generation, status, certain });
            }
        });
    }

    /// Whether messages are taken: an error says why not.
    fn check_open(&self) -> Result<(), WorkerError> {
        match self.state {
            State::Running | State::Restarting(_) => Ok(()),
            State::Terminating => Err(WorkerError::Terminating),
            State::Exited(status) => Err(WorkerError::Exited(status)),
        }
    }

    /// Queues one message: at once, or (when the outbox is full and the
    /// limits say [`WhenFull::Wait`]) behind the others that wait for room.
    /// A waiting post's sender hears on the receiver when it is queued.
    fn queue(
        &mut self,
        bytes: Bytes,
        fds: Vec<OwnedFd>,
        request: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<Result<(), WorkerError>>>, WorkerError> {
        let wait = self.limits.when_full == WhenFull::Wait;
        let epoch = self.outbox.room_epoch();
        let (bytes, fds) = if wait && !self.waiting.is_empty() {
            (bytes, fds)
        } else {
            match self.outbox.try_push(bytes, fds) {
                Ok(()) => return Ok(None),
                Err((Refusal::Full, bytes, fds)) if wait => (bytes, fds),
                Err((refusal, _, _)) => return Err(self.outbox.error(refusal)),
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
        let outbox = self.outbox.clone();
        let room = async move { outbox.wait_room(epoch).await };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(room).map(|(), act, ctx| {
            act.watching = false;
            act.queue_waiting(ctx);
        }));
    }

    /// Moves waiting messages to the outbox while it has room, in order.
    fn queue_waiting(&mut self, ctx: &mut Context<Self>) {
        while let Some(Waiting { bytes, fds, then }) = self.waiting.pop_front() {
            if !self.still_wanted(&then) {
                continue;
            }
            let epoch = self.outbox.room_epoch();
            match self.outbox.try_push(bytes, fds) {
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
    fn still_wanted(&self, then: &Then) -> bool {
        match then {
            Then::Post(_) => true,
            Then::Request(id) => self.pending.contains(*id),
        }
    }

    /// Starts the polite shutdown: a terminate message after everything
    /// accepted, then SIGTERM and SIGKILL to the group if the worker lingers.
    fn terminate(&mut self, grace: Grace) {
        if let State::Restarting(status) = self.state {
            // No child to stop: stop for good where we are.
            self.finish(status);
            return;
        }
        if self.state != State::Running {
            return;
        }
        self.state = State::Terminating;
        // What waits for room was accepted before the terminate: it goes
        // first, whatever the bound (it is in memory already).
        for Waiting { bytes, fds, then } in std::mem::take(&mut self.waiting) {
            if !self.still_wanted(&then) {
                continue;
            }
            then.queued(self.outbox.push_unbounded(bytes, fds));
        }
        if self.outbox.push_last(frame::bare(Kind::Terminate)).is_err() {
            tracing::debug!(worker = %self.name, "terminate could not be queued; signals follow");
        }
        let grace = match grace {
            Grace::Default => Some(self.grace),
            Grace::After(d) => Some(d),
            Grace::Never => None,
        };
        if self.child.strong_count() == 0 {
            // Not started yet: the signals are for the process once it is.
            self.deferred_grace = grace;
            return;
        }
        self.escalate(grace);
    }

    /// SIGTERM to the process group after `grace`, SIGKILL after the kill
    /// delay, unless the process has exited first.
    fn escalate(&mut self, grace: Option<Duration>) {
        if let Some(grace) = grace {
            let child = self.child.clone();
            let kill_delay = self.kill_delay;
            self.escalation = Some(actix_rt::spawn(async move {
                tokio::time::sleep(grace).await;
                let Some(handle) = child.upgrade() else { return };
                handle.signal_group(libc::SIGTERM);
                drop(handle);
                tokio::time::sleep(kill_delay).await;
                if let Some(handle) = child.upgrade() {
                    handle.signal_group(libc::SIGKILL);
                }
            }));
        }
    }
}

impl Then {
    /// Tells the sender how queueing went.
    fn queued(self, result: Result<(), WorkerError>) {
        if let Then::Post(tx) = self {
            let _ = tx.send(result);
        }
    }
}

impl<P: Protocol> Actor for Worker<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.spawn_process(ctx);
    }

    /// The last address is gone: end the worker the polite way, within its
    /// shutdown timeout.
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.terminate(Grace::After(self.shutdown_timeout));
        Running::Stop
    }
}

impl<P: Protocol> Drop for Worker<P> {
    fn drop(&mut self) {
        // Dropped without `stopping` (the System went away): the link task
        // is gone with the runtime, so the ChildHandle's own Drop kills and
        // reaps once the last reference goes.
        if self.state == State::Running {
            self.outbox.discard();
        }
    }
}

/// Posts a typed message to the worker: the original's `postMessage`.
///
/// Resolves to `Ok(())` once the message is queued (it is written when the
/// worker can take it, in order), or to the reason it was refused: too
/// large, queue full, worker terminating or exited. With `do_send`, a
/// refusal is reported to the event recipient as a
/// [`Event::WireError`] or logged.
pub struct Post<M> {
    data: M,
    fds: Vec<OwnedFd>,
}

impl<M> Post<M> {
    /// A message without descriptors.
    pub fn new(data: M) -> Self {
        Post { data, fds: Vec::new() }
    }

    /// A message with descriptors (at most [`MAX_FDS_PER_MESSAGE`](crate::MAX_FDS_PER_MESSAGE)); the
    /// worker receives them with exactly this message.
    pub fn with_fds(data: M, fds: Vec<OwnedFd>) -> Self {
        Post { data, fds }
    }
}

impl<M: 'static> Message for Post<M> {
    type Result = Result<(), WorkerError>;
}

impl<P: Protocol> Handler<Post<P::ToWorker>> for Worker<P> {
    type Result = PostResponse;

    fn handle(&mut self, msg: Post<P::ToWorker>, ctx: &mut Context<Self>) -> PostResponse {
        let encoded = self.check_open().and_then(|()| {
            let max = self.limits.max_message_size;
            wire::encode_in(&mut self.arena, Kind::Post, 0, 0, &msg.data, msg.fds.len(), max)
        });
        match encoded.and_then(|bytes| self.queue(bytes, msg.fds, None, ctx)) {
            Ok(None) => PostResponse(None),
            Ok(Some(later)) => PostResponse(Some(Queued::Later(later))),
            Err(e) => {
                tracing::debug!(worker = %self.name, error = %e, "post refused");
                self.emit(Event::Refused(e.clone()));
                PostResponse(Some(Queued::Refused(e)))
            }
        }
    }
}

/// Why a frame is not queued yet.
enum Queued {
    /// It will be, once the outbox has room; the answer comes here.
    Later(tokio::sync::oneshot::Receiver<Result<(), WorkerError>>),
    /// It never will be.
    Refused(WorkerError),
}

/// How a [`Post`] resolves: at once, or once the outbox has room. You never
/// need to name this type: `send(Post)` resolves to `Result<(), WorkerError>`.
pub struct PostResponse(Option<Queued>);

impl<P: Protocol> MessageResponse<Worker<P>, Post<P::ToWorker>> for PostResponse {
    fn handle(
        self,
        _: &mut Context<Worker<P>>,
        tx: Option<OneshotSender<Result<(), WorkerError>>>,
    ) {
        let Some(tx) = tx else { return };
        match self.0 {
            None => {
                let _ = tx.send(Ok(()));
            }
            Some(Queued::Refused(e)) => {
                let _ = tx.send(Err(e));
            }
            Some(Queued::Later(rx)) => {
                actix_rt::spawn(async move {
                    let _ = tx.send(rx.await.unwrap_or(Err(WorkerError::Disconnected)));
                });
            }
        }
    }
}

/// Asks the worker a typed [`Request`] and resolves to its typed answer.
///
/// ```no_run
/// # use actix::prelude::*;
/// # use actix_webworker::{Ask, Protocol, Worker, WorkerError};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Sum(Vec<u64>);
/// # struct Calc;
/// # impl Protocol for Calc { type ToWorker = (); type FromWorker = (); }
///
/// async fn sum(worker: &Addr<Worker<Calc>>) -> Result<u64, WorkerError> {
///     worker.send(Ask::new(Sum(vec![1, 2, 3]))).await.map_err(|_| WorkerError::Disconnected)?
/// }
/// ```
///
/// When the worker exits first, the answer is [`WorkerError::Exited`]; when
/// its handler panics, [`WorkerError::Panicked`] with the report; after the
/// [`timeout`](Ask::timeout), [`WorkerError::Timeout`].
pub struct Ask<R> {
    request: R,
    timeout: Option<Duration>,
}

impl<R> Ask<R> {
    /// A request with no timeout of its own.
    pub fn new(request: R) -> Self {
        Ask { request, timeout: None }
    }

    /// Gives up after `limit`: the caller gets [`WorkerError::Timeout`] and a
    /// late answer is dropped.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl<R: Request> Message for Ask<R> {
    type Result = Result<R::Answer, WorkerError>;
}

impl<P: Protocol, R: Request> Handler<Ask<R>> for Worker<P> {
    type Result = AskResponse<R>;

    fn handle(&mut self, msg: Ask<R>, ctx: &mut Context<Self>) -> AskResponse<R> {
        let max = self.limits.max_message_size;
        let id = self.pending.next_id();
        let sendable = crate::session::shape::check::<R>()
            .and_then(|()| crate::session::shape::check::<R::Answer>());
        if let Err(e) = sendable {
            return AskResponse(AskInner::Ready(Err(WireError::Encode(e.to_string()).into())));
        }
        let encoded = self.check_open().and_then(|()| {
            let tag = tag_of::<R>();
            wire::encode_in(&mut self.arena, Kind::Request, id, tag, &msg.request, 0, max)
        });
        // Queued, or waiting for room: either way its answer is awaited now,
        // and its timeout runs from now.
        if let Err(e) = encoded.and_then(|bytes| self.queue(bytes, Vec::new(), Some(id), ctx)) {
            return AskResponse(AskInner::Ready(Err(e)));
        }
        match msg.timeout {
            // The common case: the answer, when it comes, goes straight to
            // the caller, decoded by the link task; no task of its own.
            None => AskResponse(AskInner::Waiting { id, pending: self.pending.clone() }),
            Some(timeout) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.pending.attach(
                    id,
                    Box::new(move |result| {
                        let _ = tx.send(result);
                    }),
                );
                let pending = self.pending.clone();
                AskResponse(AskInner::Later(Box::pin(async move {
                    await_answer(pending, id, rx, Some(timeout)).await
                })))
            }
        }
    }
}

/// How an [`Ask`] resolves. You never need to name this type:
/// `send(Ask::new(req))` resolves to `Result<Answer, WorkerError>`.
pub struct AskResponse<R: Request>(AskInner<R>);

enum AskInner<R: Request> {
    Ready(Result<R::Answer, WorkerError>),
    Waiting { id: u64, pending: Arc<Pending> },
    Later(Pin<Box<dyn Future<Output = Result<R::Answer, WorkerError>>>>),
}

impl<P: Protocol, R: Request> MessageResponse<Worker<P>, Ask<R>> for AskResponse<R> {
    fn handle(
        self,
        _: &mut Context<Worker<P>>,
        tx: Option<OneshotSender<Result<R::Answer, WorkerError>>>,
    ) {
        match self.0 {
            AskInner::Ready(result) => {
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            AskInner::Waiting { id, pending } => pending.attach(
                id,
                Box::new(move |result| {
                    let answer = result.and_then(|inbound| {
                        codec::decode::<R::Answer>(inbound.payload()).map_err(WorkerError::from)
                    });
                    if let Some(tx) = tx {
                        let _ = tx.send(answer);
                    }
                }),
            ),
            AskInner::Later(fut) => {
                actix_rt::spawn(async move {
                    let result = fut.await;
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                });
            }
        }
    }
}

/// How long [`Terminate`] waits before it signals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grace {
    /// The worker's configured grace period (default 5 s).
    #[default]
    Default,
    /// This long, then SIGTERM, then SIGKILL.
    After(Duration),
    /// Wait for the worker to exit on its own; never signal it.
    Never,
}

/// Ends the worker: its `on_close` runs after every message queued before
/// this one, and it exits. If it has not exited after the grace period, its
/// process group gets SIGTERM, then SIGKILL. A second terminate, or one after
/// the exit, does nothing.
#[derive(Clone, Copy, Debug, Default, Message)]
#[rtype(result = "()")]
pub struct Terminate(pub Grace);

impl<P: Protocol> Handler<Terminate> for Worker<P> {
    type Result = ();

    fn handle(&mut self, msg: Terminate, _: &mut Context<Self>) {
        self.terminate(msg.0);
    }
}

/// Resolves when the worker process has exited for good, with its status:
/// the `join` of a thread. `worker.send(Join).await`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Join;

impl Message for Join {
    type Result = ExitStatus;
}

impl<P: Protocol> Handler<Join> for Worker<P> {
    type Result = ResponseFuture<ExitStatus>;

    fn handle(&mut self, _: Join, _: &mut Context<Self>) -> Self::Result {
        if let State::Exited(status) = self.state {
            return Box::pin(std::future::ready(status));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.joiners.push(tx);
        Box::pin(async move { rx.await.unwrap_or(ExitStatus { code: None, signal: None }) })
    }
}

impl<P: Protocol> Worker<P> {
    /// The child has exited: restart it, or stop for good, as the policy says.
    fn child_exited(
        &mut self,
        status: ExitStatus,
        certain: Option<WireError>,
        ctx: &mut Context<Self>,
    ) {
        self.child = Weak::new();
        if let Some(escalation) = self.escalation.take() {
            escalation.abort();
        }
        let wanted = self.state == State::Terminating;
        if let (false, Some(cause)) = (wanted, certain) {
            // Another start would fail the same way.
            self.exits.push(status);
            return self.give_up(cause.to_string(), status, Some(cause));
        }
        match self.history.decide(&self.policy, status, wanted, Instant::now()) {
            Decision::Restart { attempt, delay } => {
                self.exits.push(status);
                self.state = State::Restarting(status);
                self.emit(Event::Restarting { attempt, delay });
                ctx.run_later(delay, |act, ctx| act.restart(ctx));
            }
            Decision::Stop => self.finish(status),
            Decision::GiveUp => {
                self.exits.push(status);
                let reason = format!(
                    "more than {} restarts within {:?}",
                    self.policy.max_restarts, self.policy.within
                );
                self.give_up(reason, status, None);
            }
        }
    }

    fn restart(&mut self, ctx: &mut Context<Self>) {
        if let State::Restarting(_) = self.state {
            self.spawn_process(ctx);
        }
        // Otherwise terminated meanwhile.
    }

    /// Has the process started on the spawner thread (the actor's thread
    /// never forks); [`spawned`](Self::spawned) takes the result.
    fn spawn_process(&mut self, ctx: &mut Context<Self>) {
        let started = spawn::spawn(&self.spec);
        ctx.spawn(actix::fut::wrap_future::<_, Self>(started).map(|res, act, ctx| {
            let res = res.unwrap_or_else(|_| {
                Err(SpawnError::Setup {
                    what: "spawner thread",
                    source: std::io::Error::other("the spawner thread is gone"),
                })
            });
            act.spawned(res, ctx);
        }));
    }

    /// The process asked for by [`spawn_process`](Self::spawn_process) has
    /// started, or could not.
    fn spawned(&mut self, res: Result<spawn::Spawned, SpawnError>, ctx: &mut Context<Self>) {
        let status = match self.state {
            State::Restarting(status) => status,
            // Stopped for good meanwhile: the process goes (its handle's
            // drop kills and reaps it).
            State::Exited(_) => return,
            State::Running | State::Terminating => ExitStatus { code: None, signal: None },
        };
        match res {
            Ok(spawned) => {
                if self.state != State::Terminating {
                    self.state = State::Running;
                }
                self.launch(ctx, spawned);
                if let Some(grace) = self.deferred_grace.take() {
                    self.escalate(Some(grace));
                }
            }
            Err(e) => self.give_up(format!("could not start a new process: {e}"), status, None),
        }
    }

    fn give_up(&mut self, reason: String, status: ExitStatus, cause: Option<WireError>) {
        let exits = std::mem::take(&mut self.exits);
        self.emit(Event::GaveUp(GaveUp { reason, exits, cause }));
        self.finish(status);
    }

    /// Stops for good: what waits is told, what is queued is dropped.
    fn finish(&mut self, status: ExitStatus) {
        self.state = State::Exited(status);
        self.pending.fail_all(&WorkerError::Exited(status));
        let mut dropped = self.outbox.discard();
        for waiting in self.waiting.drain(..) {
            // Requests among them were failed with the others pending.
            if let Then::Post(tx) = waiting.then {
                dropped += 1;
                let _ = tx.send(Err(WorkerError::Exited(status)));
            }
        }
        if dropped > 0 {
            self.emit(Event::Undelivered(dropped));
        }
        // Last: whoever joins may rely on every event having been sent.
        for joiner in self.joiners.drain(..) {
            let _ = joiner.send(status);
        }
        // Nothing more to tell: a stream of its events ends here.
        if let EventSink::Stream(_) = self.events {
            self.events = EventSink::Log;
        }
    }
}

/// The child process of `generation` has exited (its link task says).
pub(crate) struct ChildExited {
    pub generation: u64,
    pub status: ExitStatus,
    /// An error that another start would meet again (see
    /// [`WireError::is_certain`]).
    pub certain: Option<WireError>,
}

impl Message for ChildExited {
    type Result = ();
}

impl<P: Protocol> Handler<ChildExited> for Worker<P> {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        if msg.generation == self.generation {
            self.child_exited(msg.status, msg.certain, ctx);
        }
    }
}

/// The worker of `generation` announced it is closing itself.
pub(crate) struct ChildClosing {
    pub generation: u64,
}

impl Message for ChildClosing {
    type Result = ();
}

impl<P: Protocol> Handler<ChildClosing> for Worker<P> {
    type Result = ();

    fn handle(&mut self, msg: ChildClosing, _: &mut Context<Self>) {
        if msg.generation == self.generation && self.state == State::Running {
            self.state = State::Terminating;
            self.outbox.end_pushes();
        }
    }
}

/// Shorthands on a worker's address.
pub trait WorkerAddrExt<P: Protocol> {
    /// `do_send(Post::new(data))`: fire and forget.
    fn post(&self, data: P::ToWorker);
    /// `do_send(Terminate::default())`.
    fn terminate(&self);
    /// `send(Ask::new(request))`, with a closed mailbox as
    /// [`WorkerError::Disconnected`].
    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<Self, P, R>;
}

impl<P: Protocol> WorkerAddrExt<P> for Addr<Worker<P>> {
    fn post(&self, data: P::ToWorker) {
        self.do_send(Post::new(data));
    }

    fn terminate(&self) {
        self.do_send(Terminate::default());
    }

    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<P, R> {
        // Unconstrained: each poll is one look at a oneshot, so it cannot
        // hog the thread; under tokio's cooperative budget, thousands of
        // these gathered in a `FuturesUnordered` spend most of their time
        // yielding to each other (7x slower with 20,000 in flight).
        let sent = tokio::task::unconstrained(self.send(Ask::new(request)));
        async move { sent.await.map_err(|_| WorkerError::Disconnected)? }
    }
}
