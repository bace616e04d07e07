//! How a pool changes size: growing while requests wait, shrinking back
//! when members are idle, recycling members (after `max_requests`, past
//! `max_rss`), and letting go of members that have left.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{AsyncContext, Context, Handler, Message};

use super::events::{PoolEvent, Recycle};
use super::worker_pool::{State, WorkerPool};
use crate::parent::messages::Terminate;
use crate::parent::process::Grace;
use crate::parent::worker::every;
use crate::protocol::Protocol;

/// How often the pool looks at idle members and memory.
const TICK: Duration = Duration::from_secs(1);

/// The pool's clock: idle members and memory are looked at.
struct Tick;

impl Message for Tick {
    type Result = ();
}

impl<P: Protocol> Handler<Tick> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Tick, _: &mut Context<Self>) {
        self.tick();
    }
}

impl<P: Protocol> WorkerPool<P> {
    pub(super) fn start_timer(&mut self, ctx: &mut Context<Self>) {
        let pool = ctx.address().downgrade();
        every(TICK, move || pool.upgrade().map(|pool| pool.do_send(Tick)).is_some());
    }

    /// How many members take work.
    fn active(&self) -> usize {
        self.members.iter().filter(|m| m.takes_work()).count()
    }

    fn tick(&mut self) {
        if self.state != State::Running {
            return;
        }
        // Past its memory: recycled. Only a member of this machine: the
        // pid of one on another host is its launcher's (`ssh`, `kubectl`),
        // whose memory is not the worker's.
        if let Some(max) = self.settings.max_rss {
            let over: Vec<_> = self
                .members
                .iter()
                .filter(|m| m.online && m.takes_work() && !m.remote)
                .filter_map(|m| rss(m.pid).filter(|&rss| rss > max).map(|rss| (m.index, rss)))
                .collect();
            for (index, rss) in over {
                self.recycle(index, Recycle::Rss(rss));
            }
        }
        // Idle above the minimum: closed, one a tick.
        if self.active() > self.settings.min && self.queue.borrow().is_empty() {
            let idle_for = self.settings.idle_timeout;
            let idle = self.members.iter().position(|m| {
                m.takes_work() && m.in_flight() == 0 && m.busy_at.elapsed() >= idle_for
            });
            if let Some(at) = idle {
                let index = self.members[at].index;
                self.retire(index);
                self.emit(PoolEvent::Scaled { members: self.active() });
            }
        }
        self.finish_leaving();
    }

    /// Grows by one member while requests wait and none is starting.
    pub(super) fn grow(&mut self, ctx: &mut Context<Self>) {
        if self.state != State::Running || self.active() >= self.settings.max {
            return;
        }
        let starting = self.members.iter().any(|m| !m.online && m.takes_work());
        if starting {
            return;
        }
        match self.add_member(ctx) {
            Ok(_) => self.emit(PoolEvent::Scaled { members: self.active() }),
            Err(e) => tracing::warn!(pool = %self.name, error = %e, "could not grow"),
        }
    }

    /// Member `index` takes no more work; a replacement starts first, and
    /// it closes once it has finished what it has.
    pub(super) fn recycle(&mut self, index: usize, reason: Recycle) {
        let Some(m) = self.member(index) else { return };
        if m.leaving {
            return;
        }
        m.leaving = true;
        self.emit(PoolEvent::Recycled { index, reason });
        // The replacement is started from the actor's context.
        if let Some(pool) = self.common.pool.upgrade() {
            pool.do_send(Replenish);
        }
    }

    /// Leaving members with nothing in flight are closed.
    pub(super) fn finish_leaving(&mut self) {
        let done: Vec<usize> = self
            .members
            .iter()
            .filter(|m| m.leaving && m.gone.is_none())
            .filter(|m| m.in_flight() == 0)
            .map(|m| m.index)
            .collect();
        for index in done {
            self.retire(index);
        }
    }

    /// Closes member `index` gracefully and lets go of it once it has
    /// exited.
    fn retire(&mut self, index: usize) {
        let Some(m) = self.member(index) else { return };
        m.leaving = true;
        if m.gone.is_some() {
            return;
        }
        // Marked gone now: nothing is routed to it, it is not retired
        // twice, and its end (see `member_gone`) is not a failure.
        m.gone = Some(crate::error::ExitStatus { code: None, signal: None, lost: None });
        m.addr.do_send(Terminate(Grace::Default));
    }

    /// Forgets member `index`, keeping its counts.
    pub(super) fn let_go(&mut self, index: usize) {
        if let Some(at) = self.members.iter().position(|m| m.index == index) {
            let m = self.members.remove(at);
            self.completed_before += m.load.completed.load(Ordering::Relaxed);
            self.failed_before += m.load.failed.load(Ordering::Relaxed);
            if self.turn >= self.members.len() {
                self.turn = 0;
            }
        }
    }

    /// Lets go of every member (all have exited).
    pub(super) fn retire_all(&mut self) {
        let all: Vec<usize> = self.members.iter().map(|m| m.index).collect();
        for index in all {
            self.let_go(index);
        }
    }
}

/// Starts members until the pool has `min` that take work.
pub(crate) struct Replenish;

impl actix::Message for Replenish {
    type Result = ();
}

impl<P: Protocol> actix::Handler<Replenish> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Replenish, ctx: &mut Context<Self>) {
        while self.state == State::Running && self.active() < self.settings.min {
            if let Err(e) = self.add_member(ctx) {
                tracing::error!(pool = %self.name, error = %e, "could not start a member");
                break;
            }
        }
        self.finish_leaving();
    }
}

/// Resident memory of process `pid`, in bytes (`VmRSS` of its status).
fn rss(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
