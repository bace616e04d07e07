//! The life of the pool's members, as the pool leads it: each started
//! with a relay of its events, followed through them, and let go or
//! replaced once it has stopped for good; and the pool's own end, once
//! every member has.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WeakAddr, WrapFuture};

use super::events::PoolEvent;
use super::hosts::{self, Seat};
use super::member::Member;
use super::scale::Replenish;
use super::worker_pool::{State, WorkerPool};
use crate::error::{ExitStatus, SpawnError, WireError, WorkerError};
use crate::parent::events::{log_event, Event, GaveUp, WorkerEvent};
use crate::parent::messages::{Join, Terminate};
use crate::parent::process::Grace;
use crate::parent::sink::EventSink;
use crate::parent::worker::Worker;
use crate::protocol::Protocol;
use crate::supervise::Decision;

impl<P: Protocol> WorkerPool<P> {
    /// Starts a member at a fresh index, on the host placement picks.
    pub(super) fn add_member(&mut self, ctx: &mut Context<Self>) -> Result<usize, SpawnError> {
        let mut options = self.options.clone();
        let host = self.place(ctx)?;
        let remote = match host {
            Some(at) => {
                let host = &self.hosts[at].host;
                options.spec.launcher = host.launcher.clone();
                if let Some(transport) = &host.transport {
                    options.spec.transport = transport.clone();
                }
                // Replaced by the pool, where placement says, not in place.
                options.policy = crate::supervise::RestartPolicy::never();
                !host.is_local()
            }
            None => !options.spec.launcher.is_empty(),
        };
        let index = self.next_index;
        self.next_index += 1;
        let relay = Relay { index, pool: ctx.address().downgrade() }.start();
        options.name = format!("{}#{index}", self.name).into();
        let addr = Worker::start_with(options, EventSink::Recipient(relay.recipient()));
        let addr = addr.inspect_err(|_| self.host_down(host))?;
        // When it has stopped for good, whatever the reason. Told by a task
        // of its own, holding the pool weakly: a future in the pool's
        // context would keep the pool alive after its last address went
        // (actix stops an actor only once nothing runs in its context),
        // and its members with it.
        let (join, pool) = (addr.send(Join), ctx.address().downgrade());
        crate::session::spawn_boxed(async move {
            let status = join.await.ok();
            if let Some(pool) = pool.upgrade() {
                pool.do_send(MemberGone { index, status });
            }
        });
        // Its line past its mailbox, for what the pool routes to it.
        let port = crate::parent::port::Port::open(&addr);
        ctx.spawn(port.into_actor(self).map(move |port, pool, _| {
            if let (Ok(port), Some(m)) = (port, pool.member(index)) {
                m.direct = Some(crate::parent::direct::Direct::of(&port, m.addr.clone()));
            }
        }));
        self.members.push(Member::new(index, addr, host, remote));
        self.emit(PoolEvent::Started { index, host: self.host_name(host) });
        Ok(index)
    }

    /// A member's event: kept track of, and passed on tagged.
    fn member_event(
        &mut self,
        index: usize,
        event: WorkerEvent<P>,
        handled: Option<OneshotSender<()>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(m) = self.member(index) {
            match &event.kind {
                Event::Online => {
                    m.online = true;
                    m.was_online = true;
                    m.pid = event.pid;
                    m.load.down.store(false, Ordering::Release);
                }
                Event::Exit(_) => m.online = false,
                _ => {}
            }
        }
        // A failure certain to repeat (no such entry, other message types,
        // another codec): the pool stops now, whether or not the member's
        // end has been seen yet.
        let certain = match &event.kind {
            Event::GaveUp(GaveUp { cause: Some(cause), exits, .. }) => {
                Some((cause.clone(), exits.last().copied()))
            }
            _ => None,
        };
        if self.events.is_none() {
            // Nobody receives the pool's events: what a worker of its own
            // would log is logged (its errors, losses and exits).
            log_event(&event.name, event.pid, &event.kind);
        }
        let online = matches!(event.kind, Event::Online);
        let event = PoolEvent::Member { index, event };
        match (handled, &self.events) {
            // A mark of the member's events window: answered once the
            // recipient has handled it (a sender of its own, queued now, in
            // order with the others).
            (Some(handled), Some(recipient)) => {
                let mark = recipient.clone().send(event);
                crate::session::spawn_boxed(async move {
                    let _ = mark.await;
                    let _ = handled.send(());
                });
            }
            (Some(handled), None) => {
                let _ = handled.send(());
            }
            (None, _) => self.emit(event),
        }
        if online {
            self.pump(ctx);
        }
        if let (Some((cause, exit)), State::Running) = (certain, self.state) {
            self.exits.extend(exit);
            self.give_up(format!("a member cannot run: {cause}"), Some(cause), ctx);
        }
    }

    /// Member `index` has stopped for good. One the pool closed is let go;
    /// any other (it gave up, or exited with no restart) is replaced,
    /// within the pool's own intensity.
    fn member_gone(&mut self, index: usize, status: Option<ExitStatus>, ctx: &mut Context<Self>) {
        let Some(m) = self.member(index) else { return };
        let closed_by_us = m.gone.is_some();
        let (host, was_online) = (m.host, m.was_online);
        self.let_go(index);
        if closed_by_us || self.state != State::Running {
            return;
        }
        let exit = status.unwrap_or(ExitStatus { code: None, signal: None, lost: None });
        self.exits.push(exit);
        if exit.lost.is_some() || !was_online {
            // Lost (its connection silent or cut), or never up: the host
            // is passed over for a while.
            self.host_down(host);
        }
        let policy = self.settings.replacements;
        match self.replacements.decide(&policy, exit, false, Instant::now()) {
            Decision::Restart { delay, .. } => {
                ctx.run_later(delay, |pool, ctx| {
                    if pool.state == State::Running {
                        if let Err(e) = pool.add_member(ctx) {
                            tracing::error!(pool = %pool.name, error = %e, "could not replace a member");
                        }
                        pool.pump(ctx);
                    }
                });
            }
            Decision::Stop | Decision::GiveUp => {
                let reason = format!(
                    "members stopped more than {} times within {:?}",
                    policy.max_restarts, policy.within
                );
                self.give_up(reason, None, ctx);
            }
        }
    }

    /// Stops for good: says why, fails what waits with the cause when it
    /// is certain (or `Terminating`), and closes every member.
    fn give_up(&mut self, reason: String, cause: Option<WireError>, ctx: &mut Context<Self>) {
        tracing::error!(pool = %self.name, %reason, "the pool gives up");
        let exits = self.exits.clone();
        self.gave_up = true;
        if let Some(cause) = &cause {
            self.refuse_queued(&WorkerError::Wire(cause.clone()), ctx);
            self.cause = Some(cause.clone());
        }
        self.emit(PoolEvent::GaveUp(GaveUp { reason, exits, cause }));
        self.close(Grace::Default, ctx);
    }

    /// The host the next member goes to (`hosts::place`), or `None` for a
    /// pool without hosts. With every host with room down, the pool looks
    /// again when the first comes back.
    fn place(&mut self, ctx: &mut Context<Self>) -> Result<Option<usize>, SpawnError> {
        if self.hosts.is_empty() {
            return Ok(None);
        }
        let seats: Vec<Seat> = (0..self.hosts.len())
            .map(|at| Seat {
                members: self
                    .members
                    .iter()
                    .filter(|m| m.takes_work() && m.host == Some(at))
                    .count(),
                limit: self.hosts[at].host.limit,
                down_until: self.hosts[at].down_until,
            })
            .collect();
        let now = Instant::now();
        match hosts::place(&seats, now) {
            Ok(at) => Ok(Some(at)),
            Err(back) => {
                if let Some(back) = back {
                    ctx.run_later(back.saturating_duration_since(now), |_, ctx| {
                        ctx.address().do_send(Replenish);
                    });
                }
                Err(SpawnError::NoHost { hosts: self.hosts.len(), down: back.is_some() })
            }
        }
    }

    /// Host `at` is passed over for its `retry_after`; its members still
    /// starting are ended now, to be replaced elsewhere, rather than left
    /// to their handshake timeout on a host that lost one of theirs.
    fn host_down(&mut self, at: Option<usize>) {
        let Some(placed) = at.and_then(|at| self.hosts.get_mut(at)) else { return };
        let until = Instant::now() + placed.host.retry_after;
        placed.down_until = Some(until);
        tracing::warn!(pool = %self.name, host = %placed.host.name, "host taken for down");
        let starting = self.members.iter().filter(|m| m.host == at && !m.online && m.takes_work());
        for m in starting {
            m.addr.do_send(Terminate(Grace::After(std::time::Duration::ZERO)));
        }
    }

    /// The name of host `at`, or `local` for a pool without hosts.
    pub(super) fn host_name(&self, at: Option<usize>) -> std::sync::Arc<str> {
        at.and_then(|at| self.hosts.get(at)).map_or_else(|| "local".into(), |p| p.host.name.clone())
    }

    /// Closes every member (their `on_close` runs) and fails what waits.
    pub(crate) fn close(&mut self, grace: Grace, ctx: &mut Context<Self>) {
        if self.state != State::Running {
            return;
        }
        self.state = State::Closing;
        self.refuse_queued(&WorkerError::Terminating, ctx);
        for m in &self.members {
            m.addr.do_send(Terminate(grace));
        }
        self.when_all_gone(ctx);
    }

    /// Once every member has exited for good: the pool's own end.
    fn when_all_gone(&mut self, ctx: &mut Context<Self>) {
        let joins: Vec<_> = self.members.iter().map(|m| (m.index, m.addr.send(Join))).collect();
        let all = futures_util::future::join_all(
            joins.into_iter().map(|(i, j)| async move { (i, j.await.ok()) }),
        );
        ctx.spawn(actix::fut::wrap_future(all).map(|statuses, pool: &mut Self, _| {
            // The first member that failed; after giving up, the last exit
            // that led there.
            let failed = statuses.iter().filter_map(|(_, s)| *s).find(|s| !s.success());
            let given_up = pool.gave_up.then(|| pool.exits.last().copied()).flatten();
            let ok = ExitStatus { code: Some(0), signal: None, lost: None };
            let status = failed.or(given_up).unwrap_or(ok);
            pool.state = State::Stopped(status);
            for joiner in pool.joiners.drain(..) {
                let _ = joiner.send(status);
            }
            // Nothing of the members is held any more; the pool stays to
            // answer `Join` and refuse what comes.
            pool.retire_all();
        }));
    }
}

/// A member's event, as the pool gets it. `handled` is there when the
/// member's link waits to hear that the event was handled (a mark of its
/// events window): the pool answers it once the pool's own recipient has
/// handled the event, so that a recipient that falls behind holds the
/// member back, as it would hold back a worker of its own.
pub(crate) struct MemberEvent<P: Protocol> {
    pub index: usize,
    pub event: WorkerEvent<P>,
    pub handled: Option<OneshotSender<()>>,
}

impl<P: Protocol> Message for MemberEvent<P> {
    type Result = ();
}

impl<P: Protocol> Handler<MemberEvent<P>> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, msg: MemberEvent<P>, ctx: &mut Context<Self>) {
        self.member_event(msg.index, msg.event, msg.handled, ctx);
    }
}

/// A member has stopped for good (see `WorkerPool::add_member`).
struct MemberGone {
    index: usize,
    status: Option<ExitStatus>,
}

impl Message for MemberGone {
    type Result = ();
}

impl<P: Protocol> Handler<MemberGone> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, ctx: &mut Context<Self>) {
        self.member_gone(msg.index, msg.status, ctx);
    }
}

/// The events recipient of one member: tags them with its index, and holds
/// the pool weakly (the pool holds the member; a strong address here would
/// keep both alive for ever).
pub(crate) struct Relay<P: Protocol> {
    pub index: usize,
    pub pool: WeakAddr<WorkerPool<P>>,
}

impl<P: Protocol> Actor for Relay<P> {
    type Context = Context<Self>;
}

impl<P: Protocol> Handler<WorkerEvent<P>> for Relay<P> {
    type Result = Relayed<P>;

    fn handle(&mut self, event: WorkerEvent<P>, _: &mut Context<Self>) -> Relayed<P> {
        Relayed { index: self.index, pool: self.pool.clone(), event }
    }
}

/// A member's event on its way to the pool. Its answer channel is there
/// only for the link's marks (sent with `send`, the others with
/// `do_send`): it goes along, to be answered when the event is handled.
pub(crate) struct Relayed<P: Protocol> {
    index: usize,
    pool: WeakAddr<WorkerPool<P>>,
    event: WorkerEvent<P>,
}

impl<P: Protocol> MessageResponse<Relay<P>, WorkerEvent<P>> for Relayed<P> {
    fn handle(self, _: &mut Context<Relay<P>>, tx: Option<OneshotSender<()>>) {
        // A pool gone drops `tx`: the mark resolves, nothing waits for it.
        if let Some(pool) = self.pool.upgrade() {
            pool.do_send(MemberEvent { index: self.index, event: self.event, handled: tx });
        }
    }
}
