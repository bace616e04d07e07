//! What waits in a pool: requests in its queue, handed to members as they
//! free a place (`pump`), dropped when their callers go (`sweep`), failed
//! at their deadlines (`expire`) or when the pool closes; and, under
//! `WhenFull::Wait`, callers held back at the queue's bound, each with its
//! request in its own future, until the pool gives it a place
//! ([`Enter`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::dev::{MessageResponse, OneshotSender};
use actix::{AsyncContext, Context, Handler, Message, Recipient};

use super::ask::{PoolAsk, Route};
use super::queue::{self, Expires, Place, Pump, Release, Sweep};
use super::worker_pool::{State, WorkerPool};
use crate::error::WorkerError;
use crate::parent::answered::Reply;
use crate::parent::options::WhenFull;
use crate::protocol::{Protocol, Request};
use crate::session::trace::Caller;

impl<P: Protocol> WorkerPool<P> {
    /// Hands waiting requests to members with room, oldest first; grows
    /// the pool when some are left.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        let before = self.queue.borrow().len();
        loop {
            let Some(front_cancelled) = self.queue.borrow().front_cancelled() else { break };
            if front_cancelled {
                self.queue.borrow_mut().pop_front();
                continue;
            }
            let Some(at) = self.pick() else { break };
            let Some(item) = self.queue.borrow_mut().pop_front() else { break };
            item.dispatch(self, at);
        }
        let waiting = self.queue.borrow().len();
        if waiting != before {
            queue::arm(&self.queue, ctx);
        }
        // Also when a place came back, or a caller given one went straight
        // to a member.
        self.admit();
        if waiting + self.tickets.len() > 0 {
            self.grow(ctx);
        }
    }

    /// What the answers look at to know whether to wake the pool.
    pub(super) fn count_waiting(&self) {
        let waiting = self.queue.borrow().len() + self.tickets.len();
        self.common.queued.store(waiting, Ordering::Release);
    }

    /// Drops the requests whose callers have gone, wherever they are in the
    /// queue, and the tickets of callers held back who have gone; their
    /// places go to the next.
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.queue.borrow_mut().sweep() > 0 {
            queue::arm(&self.queue, ctx);
        }
        self.tickets.retain(|ticket| !ticket.is_closed());
        self.admit();
    }

    /// Everything waiting fails with `e`.
    pub(super) fn refuse_queued(&mut self, e: &WorkerError, ctx: &mut Context<Self>) {
        let queued = self.queue.borrow_mut().drain();
        // Callers held back send their requests again with no place, and
        // are told why.
        self.tickets.clear();
        self.common.queued.store(0, Ordering::Release);
        queue::arm(&self.queue, ctx);
        for item in queued {
            item.refuse(e.clone());
        }
    }

    /// Whether a request from
    /// [`WorkerAddrExt::ask`](crate::parent::messages::WorkerAddrExt::ask) is held back at its
    /// caller: the queue is at its bound under [`WhenFull::Wait`] (counting
    /// the places given to callers on their way back), or callers already
    /// wait for a place (they go first). Only if it would be queued: one a
    /// member takes now is never held back.
    fn holds_back(&mut self) -> bool {
        if self.state != State::Running || self.settings.when_full != WhenFull::Wait {
            return false;
        }
        let queued = self.queue.borrow().len();
        let full = !self.tickets.is_empty() || queued + self.places >= self.settings.max_queued;
        // `pick` only when the queue is empty: with requests waiting, a new
        // one goes behind them.
        full && (queued > 0 || !self.has_room())
    }

    /// Gives places in the queue to callers held back, oldest first, while
    /// it has room under its bound.
    pub(super) fn admit(&mut self) {
        let max = self.settings.max_queued;
        while self.queue.borrow().len() + self.places < max {
            let Some(ticket) = self.tickets.pop_front() else { break };
            let place = Place::new(self.common.pool.clone().recipient());
            match ticket.send(place) {
                Ok(()) => self.places += 1,
                // Its caller went: the place goes to the next.
                Err(place) => place.taken(),
            }
        }
        self.count_waiting();
    }
}

impl<P: Protocol> Expires for WorkerPool<P> {
    fn expire(&mut self, ctx: &mut Context<Self>) {
        queue::fired(&self.queue);
        let due = self.queue.borrow_mut().take_due(Instant::now());
        for item in due {
            item.expire();
        }
        queue::arm(&self.queue, ctx);
        self.admit();
    }
}

impl<P: Protocol> Handler<Pump> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        // Before pumping: an answer after this sends the next. (A swap,
        // not a store: it sees every place freed by an answer that found
        // this one on its way.)
        self.common.pumping.swap(false, Ordering::AcqRel);
        self.pump(ctx);
    }
}

impl<P: Protocol> Handler<Sweep> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) {
        self.sweep(ctx);
    }
}

impl<P: Protocol> Handler<Release> for WorkerPool<P> {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Context<Self>) {
        self.places = self.places.saturating_sub(1);
        self.admit();
    }
}

/// A request from
/// [`WorkerAddrExt::ask`](crate::parent::messages::WorkerAddrExt::ask) on a
/// pool's address: an [`Ask`](crate::parent::messages::Ask) that the pool may hand back to its caller instead of queueing
/// it, when the queue is at its bound under [`WhenFull::Wait`].
///
/// That is how the bound holds without the pool keeping what waits beyond
/// it: the caller gets its request back with a ticket, and waits (its
/// future pending, the request in it) until the pool gives it a place;
/// then it sends the request again, into that place. The pool keeps only
/// the ticket, a few dozen bytes, dropped when its caller goes. (A plain
/// `send(Ask)` cannot be handed back: it is queued beyond the bound.)
pub(crate) struct Enter<R: Request> {
    /// With its caller (see `session/trace.rs`).
    pub(super) request: (R, Caller),
    /// The place given, on the way back.
    pub(super) place: Option<Place>,
    /// Whether it may be handed back (not on its way back).
    pub(super) may_hold: bool,
}

/// What a caller's [`Enter`] comes back with.
pub(crate) enum Entered<R: Request> {
    Answer(Result<R::Answer, WorkerError>),
    /// The request handed back: the caller waits for a place.
    HeldBack((R, Caller), Back<R>),
}

/// Where a request handed back gets its place, and the pool to send it to
/// again (an address the caller need not keep for every request).
pub(crate) type Back<R> = (tokio::sync::oneshot::Receiver<Place>, Recipient<Enter<R>>);

impl<R: Request> Message for Enter<R> {
    type Result = Entered<R>;
}

/// The reply channel of an [`Enter`], for an answer.
pub(super) struct EnterReply<R: Request>(OneshotSender<Entered<R>>);

impl<R: Request> Reply<R::Answer> for EnterReply<R> {
    fn send(self, result: Result<R::Answer, WorkerError>) {
        let _ = self.0.send(Entered::Answer(result));
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn closed(&mut self) -> impl std::future::Future<Output = ()> {
        self.0.closed()
    }
}

/// How an [`Enter`] resolves: as an ask, or handed back to its caller.
pub(crate) struct Entering<P: Protocol, R: Request>(EnteringAs<P, R>);

enum EnteringAs<P: Protocol, R: Request> {
    Ask(PoolAsk<P, R>),
    HeldBack((R, Caller), Back<R>),
}

impl<P: Protocol, R: Request> Handler<Enter<R>> for WorkerPool<P> {
    type Result = Entering<P, R>;

    fn handle(&mut self, msg: Enter<R>, ctx: &mut Context<Self>) -> Entering<P, R> {
        let Enter { request, place, may_hold } = msg;
        if let Some(place) = place {
            // Its place is taken now (queued, or sent to a member).
            place.taken();
            self.places = self.places.saturating_sub(1);
        } else if may_hold && self.holds_back() {
            let (ticket, placed) = tokio::sync::oneshot::channel();
            self.tickets.push_back(ticket);
            self.common.queued.fetch_add(1, Ordering::AcqRel);
            self.grow(ctx);
            let back = (placed, ctx.address().recipient());
            return Entering(EnteringAs::HeldBack(request, back));
        }
        let route = self.route(ctx);
        if !matches!(route, Route::Queue(_)) {
            // Not queued (a member took it, or it is refused): if it had a
            // place, the place goes to the next.
            self.admit();
        }
        Entering(EnteringAs::Ask(PoolAsk { request, timeout: None, route }))
    }
}

impl<P: Protocol, R: Request> MessageResponse<WorkerPool<P>, Enter<R>> for Entering<P, R> {
    fn handle(self, ctx: &mut Context<WorkerPool<P>>, tx: Option<OneshotSender<Entered<R>>>) {
        match self.0 {
            EnteringAs::Ask(ask) => ask.respond(ctx, tx.map(EnterReply)),
            // Handed back with where its place will come; a caller gone
            // already drops its request here (and its ticket is swept).
            EnteringAs::HeldBack(request, back) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Entered::HeldBack(request, back));
                }
            }
        }
    }
}
