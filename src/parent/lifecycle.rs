//! The life of a worker's processes, as the `Worker` actor leads it: each
//! process started (on the spawner thread) and launched with a link task
//! of its own; its exit, and the restart, stop or give-up the policy
//! decides; and the polite shutdown a terminate starts, with the signals
//! that follow its grace period.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message};

use super::events::{Event, GaveUp};
use super::link::{Link, LinkExit};
use super::output;
use super::process::Grace;
use super::side::ParentSide;
use super::sink::{EventSink, Events};
use super::spawn;
use super::worker::{State, Then, Waiting, Worker};
use crate::error::{ExitStatus, SpawnError, WireError, WorkerError};
use crate::protocol::Protocol;
use crate::session::sender::Sender;
use crate::session::Common;
use crate::supervise::Decision;
use crate::wire::envelope::{self, Kind};

/// Fails what is in flight if the link task is dropped before its link
/// has ended (its runtime went away: the System stopped): the link fails
/// requests with the exit when it ends, and will not end now.
struct Unfinished {
    sender: Option<Sender>,
}

impl Unfinished {
    fn disarm(mut self) {
        self.sender = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            super::worker::fail_abandoned(&sender.outbox, &sender.pending);
        }
    }
}

impl<P: Protocol> Worker<P> {
    pub(super) fn launch(&mut self, ctx: &mut Context<Self>, spawned: spawn::Spawned) {
        self.generation += 1;
        let handle = Arc::new(spawned.handle);
        self.pid = handle.pid();
        self.span.record("pid", self.pid);
        if let Some(fd) = spawned.stdout {
            let _ =
                output::capture(fd, self.options.name.clone(), self.pid, output::Stream::Stdout);
        }
        if let Some(fd) = spawned.stderr {
            let _ =
                output::capture(fd, self.options.name.clone(), self.pid, output::Stream::Stderr);
        }
        self.child = Arc::downgrade(&handle);
        super::process::register(&handle, self.options.shutdown_timeout, self.options.kill_delay);
        let generation = self.generation;
        let on_closing: Box<dyn Fn()> = {
            let me = ctx.address().downgrade();
            Box::new(move || {
                if let Some(me) = me.upgrade() {
                    me.do_send(ChildClosing { generation });
                }
            })
        };
        let events = Events::new(self.events.clone(), self.options.limits.window());
        let side = ParentSide::new(
            self.options.name.clone(),
            self.pid,
            events,
            on_closing,
            self.sender.outbox.clone(),
        );
        let link = Link::<P> {
            side,
            handle,
            common: Common {
                sender: self.sender.clone(),
                handlers: self.options.handlers.clone(),
                max_shared_bytes: self.options.limits.max_shared_bytes,
                span: self.span.clone(),
            },
            fingerprint: self.fingerprint,
            data: self.options.data.clone(),
            heartbeat: self.options.heartbeat,
            later: self.events.clone(),
            handshake_timeout: self.options.handshake_timeout,
            starting: spawned.starting,
        };
        // Its own task: it outlives the actor, should the last address go.
        let me = ctx.address().downgrade();
        let unfinished = Unfinished { sender: Some(self.sender.clone()) };
        crate::session::spawn_boxed(async move {
            let LinkExit { status, certain } = link.run(spawned.sock).await;
            unfinished.disarm();
            if let Some(me) = me.upgrade() {
                me.do_send(ChildExited { generation, status, certain });
            }
        });
    }

    /// Starts the polite shutdown: a terminate message after everything
    /// accepted, then SIGTERM and SIGKILL to the group if the worker lingers.
    pub(super) fn terminate(&mut self, grace: Grace) {
        if let State::Restarting(status) = self.state {
            // No child to stop: stop for good where we are.
            self.finish(status);
            return;
        }
        let grace = match grace {
            Grace::Default => Some(self.options.grace),
            Grace::After(d) => Some(d),
            Grace::Never => None,
        };
        if self.state == State::Terminating && std::mem::take(&mut self.closing) {
            // The worker said it closes itself (`Closing`) and has not
            // gone: it is sent nothing new (no terminate message), but it
            // is held to this grace all the same (once: a second terminate
            // does nothing).
            self.escalate(grace);
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
            then.queued(self.sender.outbox.push_unbounded(bytes, fds));
        }
        if self.sender.outbox.push_last(envelope::bare(Kind::Terminate)).is_err() {
            tracing::debug!(worker = %self.options.name, "terminate could not be queued; signals follow");
        }
        if self.child.strong_count() == 0 {
            // Not started yet: the signals are for the process once it is.
            self.deferred_grace = grace;
            return;
        }
        self.escalate(grace);
    }

    /// SIGTERM to the process group after `grace`, SIGKILL after the kill
    /// delay, unless the process has exited first.
    pub(super) fn escalate(&mut self, grace: Option<Duration>) {
        if let Some(grace) = grace {
            let child = self.child.clone();
            let kill_delay = self.options.kill_delay;
            self.escalation = Some(crate::session::spawn_boxed(async move {
                tokio::time::sleep(grace).await;
                let Some(handle) = child.upgrade() else { return };
                handle.signal_group(crate::os::SIGTERM);
                drop(handle);
                tokio::time::sleep(kill_delay).await;
                if let Some(handle) = child.upgrade() {
                    handle.signal_group(crate::os::SIGKILL);
                }
            }));
        }
    }

    /// The child has exited: restart it, or stop for good, as the policy says.
    pub(super) fn child_exited(
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
        match self.history.decide(&self.options.policy, status, wanted, Instant::now()) {
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
                    self.options.policy.max_restarts, self.options.policy.within
                );
                self.give_up(reason, status, None);
            }
        }
    }

    pub(super) fn restart(&mut self, ctx: &mut Context<Self>) {
        if let State::Restarting(_) = self.state {
            self.spawn_process(ctx);
        }
        // Otherwise terminated meanwhile.
    }

    /// Has the process started on the spawner thread (the actor's thread
    /// never forks); [`spawned`](Self::spawned) takes the result.
    pub(super) fn spawn_process(&mut self, ctx: &mut Context<Self>) {
        let started = spawn::spawn(&self.options.spec);
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
    pub(super) fn spawned(
        &mut self,
        res: Result<spawn::Spawned, SpawnError>,
        ctx: &mut Context<Self>,
    ) {
        let status = match self.state {
            State::Restarting(status) => status,
            // Stopped for good meanwhile: the process goes (its handle's
            // drop kills and reaps it).
            State::Exited(_) => return,
            State::Running | State::Terminating => {
                ExitStatus { code: None, signal: None, lost: None }
            }
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

    pub(super) fn give_up(&mut self, reason: String, status: ExitStatus, cause: Option<WireError>) {
        let exits = std::mem::take(&mut self.exits);
        self.emit(Event::GaveUp(GaveUp { reason, exits, cause }));
        self.finish(status);
    }

    /// Stops for good: what waits is told, what is queued is dropped.
    pub(super) fn finish(&mut self, status: ExitStatus) {
        self.state = State::Exited(status);
        // Ended first, then the slots failed: a request from a `Port` on
        // another thread is either refused, or purged here and failed.
        let mut dropped = self.sender.outbox.discard(WorkerError::Exited(status));
        self.sender.pending.fail_all(&WorkerError::Exited(status));
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
            self.closing = true;
            self.sender.outbox.end_pushes();
        }
    }
}
