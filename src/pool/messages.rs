//! The messages a pool takes other than asks (those are `ask.rs`'s and
//! `waiting.rs`'s), and where each goes: those of a single worker
//! ([`Post`], [`Terminate`], [`Join`]), [`Broadcast`] and [`Stats`]; and
//! the shorthands of [`WorkerAddrExt`] on a pool's address.

use std::future::Future;
use std::sync::atomic::Ordering;

use actix::{Addr, Context, Handler, Message, MessageResult, ResponseFuture};

use super::routing;
use super::waiting::{Back, Enter, Entered};
use super::worker_pool::{State, WorkerPool};
use crate::error::{ExitStatus, WorkerError};
use crate::parent::messages::{Join, Post, Terminate, WorkerAddrExt};
use crate::parent::stats::{MemberStats, PoolStats, Stats};
use crate::parent::worker::Worker;
use crate::protocol::{Protocol, Request};
use crate::session::trace::Caller;

/// Posts a copy of the message to every member of a pool. Resolves once
/// every member has queued it, or to the first refusal: an ask made after
/// that comes after it in every member (one made before may overtake it:
/// a pool's asks go straight to its member's queue).
pub struct Broadcast<M>(pub M);

impl<M: 'static> Message for Broadcast<M> {
    type Result = Result<(), WorkerError>;
}

impl<P: Protocol> Handler<Post<P::ToWorker>> for WorkerPool<P> {
    type Result = ResponseFuture<Result<(), WorkerError>>;

    fn handle(&mut self, msg: Post<P::ToWorker>, _: &mut Context<Self>) -> Self::Result {
        let to = match self.state {
            State::Running => self.next_for_post(),
            _ => None,
        };
        let Some(addr) = to else {
            return Box::pin(std::future::ready(Err(self.refusal())));
        };
        let sent = addr.send(msg);
        Box::pin(async move { sent.await.unwrap_or(Err(WorkerError::Disconnected)) })
    }
}

impl<P: Protocol> WorkerPool<P> {
    /// The member a post goes to: the next one in turn that takes work
    /// (online first; one still starting queues it).
    fn next_for_post(&mut self) -> Option<Addr<Worker<P>>> {
        let n = self.members.len();
        let at = routing::pick_for_post(n, self.turn, |at| self.members[at].snapshot())?;
        self.turn = (at + 1) % n;
        Some(self.members[at].addr.clone())
    }
}

impl<P: Protocol> Handler<Broadcast<P::ToWorker>> for WorkerPool<P>
where
    P::ToWorker: Clone,
{
    type Result = ResponseFuture<Result<(), WorkerError>>;

    fn handle(&mut self, msg: Broadcast<P::ToWorker>, _: &mut Context<Self>) -> Self::Result {
        if self.state != State::Running {
            return Box::pin(std::future::ready(Err(self.refusal())));
        }
        let sends: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.takes_work())
            .map(|m| m.addr.send(Post::new(msg.0.clone())))
            .collect();
        Box::pin(async move {
            for sent in futures_util::future::join_all(sends).await {
                sent.unwrap_or(Err(WorkerError::Disconnected))?;
            }
            Ok(())
        })
    }
}

impl<P: Protocol> Handler<Terminate> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        self.close(msg.0, ctx);
    }
}

impl<P: Protocol> Handler<Join> for WorkerPool<P> {
    type Result = ResponseFuture<ExitStatus>;

    fn handle(&mut self, _: Join, _: &mut Context<Self>) -> Self::Result {
        if let State::Stopped(status) = self.state {
            return Box::pin(std::future::ready(status));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.joiners.push(tx);
        Box::pin(
            async move { rx.await.unwrap_or(ExitStatus { code: None, signal: None, lost: None }) },
        )
    }
}

impl<P: Protocol> Handler<Stats> for WorkerPool<P> {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> MessageResult<Stats> {
        let members: Vec<MemberStats> = self
            .members
            .iter()
            .filter(|m| m.gone.is_none())
            .map(|m| {
                let load = &m.load;
                MemberStats::new(
                    (m.index, m.pid, m.online),
                    self.host_name(m.host),
                    (
                        load.in_flight.load(Ordering::Acquire),
                        load.completed.load(Ordering::Relaxed),
                        load.failed.load(Ordering::Relaxed),
                    ),
                )
            })
            .collect();
        let completed = self.completed_before + members.iter().map(|m| m.completed).sum::<u64>();
        let failed = self.failed_before + members.iter().map(|m| m.failed).sum::<u64>();
        // As they are: nothing is swept here, so that what stays in the
        // queue is seen.
        let queue = self.queue.borrow();
        let mut stats =
            PoolStats::new(queue.len(), members, (completed, failed), self.rtts.percentiles());
        stats.waiting = self.tickets.len();
        stats.deadlines = queue.deadlines();
        stats.timers = queue.timers();
        MessageResult(stats)
    }
}

impl<P: Protocol> WorkerAddrExt<P> for Addr<WorkerPool<P>> {
    fn post(&self, data: P::ToWorker) {
        self.do_send(Post::new(data));
    }

    fn terminate(&self) {
        self.do_send(Terminate::default());
    }

    /// Under [`WhenFull::Wait`](crate::parent::options::WhenFull::Wait), with
    /// the queue at its bound, the request waits here, in the caller's
    /// future, for a place in the queue.
    fn ask<R: Request>(
        &self,
        request: R,
    ) -> impl Future<Output = Result<R::Answer, WorkerError>> + use<P, R> {
        // Its span is a child of the span current here.
        let caller = crate::session::trace::Caller::here();
        let enter = Enter { request: (request, caller), place: None, may_hold: true };
        // Outside tokio's cooperative budget, as for one worker.
        let sent = tokio::task::unconstrained(self.send(enter));
        async move {
            match sent.await {
                Ok(Entered::Answer(answer)) => answer,
                // Boxed: the common ask's future stays small.
                Ok(Entered::HeldBack(request, back)) => Box::pin(held_back(request, back)).await,
                Err(_) => Err(WorkerError::Disconnected),
            }
        }
    }
}

/// A request handed back by its pool: waits for its place, then goes into
/// it. No place (the pool is closing): sent anyway, to be told why.
async fn held_back<R: Request>(
    request: (R, Caller),
    (placed, pool): Back<R>,
) -> Result<R::Answer, WorkerError> {
    let place = placed.await.ok();
    let enter = Enter { request, place, may_hold: false };
    match tokio::task::unconstrained(pool.send(enter)).await {
        Ok(Entered::Answer(answer)) => answer,
        // Not held back twice: with no `may_hold`.
        Ok(Entered::HeldBack(..)) | Err(_) => Err(WorkerError::Disconnected),
    }
}
