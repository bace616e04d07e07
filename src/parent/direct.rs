//! A pool's line to one member past the member's mailbox: what the
//! `Worker` actor does with a `Forward` (encode the request, queue it in
//! the outbox with the caller's slot in the table of pending requests,
//! keep its span), done on the pool's turn instead, through the member's
//! [`Port`](super::port::Port) internals. A request routed by a pool so
//! crosses one mailbox (the pool's), not two.
//!
//! What only the actor can do stays with it: a request with a timeout (its
//! timer is a task the actor spawns), and every request of a member whose
//! limits say `WhenFull::Wait` (the actor holds what finds the queue full
//! until there is room).

use std::sync::{Arc, Mutex};

use super::messages::Answered;
use super::port::{Line, Port};
use crate::error::WorkerError;
use crate::protocol::{Protocol, Request};
use crate::session::declared::describe;
use crate::session::requests::Slot;
use crate::session::sender::NotQueued;
use crate::session::trace;
use crate::wire::outbox::Refusal;
use crate::wire::ws::reader::Inbound;

/// One member's line (see the module's doc).
pub(crate) struct Direct<P> {
    line: Arc<Line>,
    _protocol: std::marker::PhantomData<fn(P)>,
}

impl<P> Clone for Direct<P> {
    fn clone(&self) -> Self {
        Direct { line: self.line.clone(), _protocol: std::marker::PhantomData }
    }
}

impl<P: Protocol> Direct<P> {
    /// The line a pool routes requests to `port`'s worker through.
    pub(crate) fn of(port: &Port<P>) -> Self {
        Direct { line: port.line.clone(), _protocol: std::marker::PhantomData }
    }

    /// Whether requests can take this line: not when a full queue makes
    /// them wait (the actor's to do).
    pub(crate) fn takes_requests(&self) -> bool {
        !self.line.wait
    }

    /// Queues `request` for the member whose process is `pid` (0: not
    /// known), its answer or failure to `then`.
    pub(crate) fn forward<R: Request>(
        &self,
        (request, caller): (R, trace::Caller),
        pid: u32,
        then: Answered<R::Answer>,
    ) {
        let sender = &self.line.sender;
        let id = sender.pending.next_id();
        let (span, name) = &self.line.peer;
        let peer = trace::Peer { name: Some(name), pid: Some(pid), span: Some(span) };
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, peer);
        let encoded = match sender.encoding.request::<P, R>(None, (id, context), &request) {
            Ok(encoded) => encoded,
            Err(e) => return then.call(Err(e)),
        };
        // The slot of each try shares `then`, taken by whichever answers;
        // a try that is not queued leaves it for the next, or for us.
        let then = Arc::new(Mutex::new(Some(then)));
        let halves = || (Box::new(Shared(then.clone())) as Box<dyn Slot>, ());
        let queued = sender.queue_with((id, describe::<P, R>), encoded, false, halves);
        let taken = || then.lock().unwrap_or_else(|e| e.into_inner()).take();
        match queued {
            Ok(()) => sender.pending.trace(id, span),
            Err(not_queued) => {
                let e = match not_queued {
                    NotQueued::Refused(e) => e,
                    // Not without waiting; refused as full all the same.
                    NotQueued::Full { .. } => sender.outbox.error(Refusal::Full),
                };
                if let Some(then) = taken() {
                    then.call(Err(e));
                }
            }
        }
    }
}

/// The slot of one try: `then`, if no other try has taken it.
struct Shared<A>(Arc<Mutex<Option<Answered<A>>>>);

impl<A: serde::de::DeserializeOwned + Send + 'static> Slot for Shared<A> {
    fn deliver(self: Box<Self>, result: Result<Inbound, WorkerError>) {
        let then = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(then) = then {
            Box::new(then).deliver(result);
        }
    }

    fn gone(&self) -> bool {
        let then = self.0.lock().unwrap_or_else(|e| e.into_inner());
        then.as_ref().is_none_or(|then| then.gone())
    }
}
