//! A pool's line to one member past the member's mailbox: what the
//! `Worker` actor does with a `Forward` (encode the request, queue it in
//! the outbox with the caller's slot in the table of pending requests,
//! keep its span), done on the pool's turn instead, through the member's
//! [`Port`](super::port::Port) internals. A request routed by a pool so
//! crosses one mailbox (the pool's), not two.
//!
//! What only the actor can do stays with it: a request with a timeout (its
//! timer is a task the actor spawns), and, under `WhenFull::Wait` (the
//! default), a request that finds the queue full: handed to the actor
//! encoded, with its slot and span ([`Held`]), it waits there for room
//! behind what already waits. A pool bounds what it gives each member, so
//! that is rare: the common request crosses the pool's mailbox only.

use std::sync::Arc;

use actix::{Addr, Context, Handler, Message};

use super::answered::{Answered, Reply};
use super::port::{Line, Port};
use super::worker::Worker;
use crate::error::WorkerError;
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::{Naming, Slot};
use crate::session::sender::{Encoded, NotQueued};
use crate::session::trace;

/// One member's line (see the module's doc), and its address, for what
/// only its actor can do: one reference to clone per request.
pub(crate) struct Direct<P: Protocol>(Arc<(Arc<Line>, Addr<Worker<P>>)>);

impl<P: Protocol> Clone for Direct<P> {
    fn clone(&self) -> Self {
        Direct(self.0.clone())
    }
}

impl<P: Protocol> Direct<P> {
    /// The line a pool routes requests to `port`'s worker (`addr`) through.
    pub(crate) fn of(port: &Port<P>, addr: Addr<Worker<P>>) -> Self {
        Direct(Arc::new((port.line.clone(), addr)))
    }

    /// The member's address.
    pub(crate) fn addr(&self) -> &Addr<Worker<P>> {
        &self.0 .1
    }

    /// Queues `request` for the member whose process is `pid` (0: not
    /// known), its answer or failure to `then`; or, when the queue is full
    /// and the member's limits say wait, gives it back encoded, for the
    /// member's actor to hold until there is room.
    pub(crate) fn forward<R: Request, F: Then<R::Answer>, T: Reply<R::Answer>>(
        &self,
        (request, caller): (R, trace::Caller),
        pid: u32,
        then: Answered<R::Answer, F, T>,
    ) -> Option<Held> {
        let line = &self.0 .0;
        let sender = &line.sender;
        let id = sender.pending.next_id();
        let (span, name) = &line.peer;
        let peer = trace::Peer { name: Some(name), pid: Some(pid), span: Some(span) };
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, peer);
        let encoded = match sender.encoding.request::<P, R>(None, (id, context), &request) {
            Ok(encoded) => encoded,
            Err(e) => {
                then.call(Err(e));
                return None;
            }
        };
        // One slot for every try, handed back if not queued.
        let named = (id, describe::<P, R> as Naming);
        let slot = Box::new(then) as Box<dyn Slot>;
        let (e, slot) = match sender.queue_slot(named, encoded, line.wait, slot) {
            Ok(()) => {
                sender.pending.trace(id, span);
                return None;
            }
            Err((NotQueued::Full { bytes, fds, .. }, slot)) => {
                return slot.map(|slot| Held { named, encoded: (bytes, fds), slot, span });
            }
            Err((NotQueued::Refused(e), slot)) => (e, slot),
        };
        // Refused: its slot says why (none left: its caller was told).
        if let Some(slot) = slot {
            sender.pending.count(slot.deliver(Err(e)));
        }
        None
    }
}

/// A request a pool routed past its member's mailbox that found the
/// member's queue full under `WhenFull::Wait`: encoded, its id named, its
/// answer's `then` and its asking span, for the member's actor to queue
/// behind what waits there.
pub(crate) struct Held {
    named: (u64, Naming),
    encoded: Encoded,
    slot: Box<dyn Slot>,
    span: tracing::Span,
}

/// What is done with a routed request's result before its caller gets it
/// (a pool's accounting).
pub(crate) trait Then<A>: FnOnce(&Result<A, WorkerError>) + Send + 'static {}

impl<A, F: FnOnce(&Result<A, WorkerError>) + Send + 'static> Then<A> for F {}

impl Message for Held {
    type Result = ();
}

impl<P: Protocol> Handler<Held> for Worker<P> {
    type Result = ();

    fn handle(&mut self, held: Held, ctx: &mut Context<Self>) {
        let Held { named: (id, name), encoded: (bytes, fds), slot, span } = held;
        let pending = self.sender.pending.clone();
        pending.attach(id, name, slot);
        match self.queue(bytes, fds, Some(id), ctx) {
            Ok(_) => pending.trace(id, span),
            // Never queued: its slot says why.
            Err(e) => pending.resolve(id, Err(e)),
        }
    }
}
