//! What a pool tells: each member's events, tagged with its index, and the
//! pool's own (a member added, recycled, the pool's size, giving up).

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, Context, Handler, Message, WeakAddr};

use super::WorkerPool;
use crate::parent::events::{GaveUp, WorkerEvent};
use crate::protocol::Protocol;

/// One event of a pool.
#[non_exhaustive]
pub enum PoolEvent<P: Protocol> {
    /// An event of member `index` (its pid is in the event).
    Member {
        /// The member's place in the pool; a member that replaces another
        /// takes a fresh index.
        index: usize,
        /// What happened in it.
        event: WorkerEvent<P>,
    },
    /// Member `index` was added: at the start, to replace a member that
    /// gave up or is being recycled, or to grow the pool.
    Started {
        /// Its index.
        index: usize,
    },
    /// Member `index` is being recycled: it takes no more requests,
    /// finishes those it has, and closes gracefully; a replacement has
    /// been started first.
    Recycled {
        /// Its index.
        index: usize,
        /// Why.
        reason: Recycle,
    },
    /// The pool now has this many members (after growing or shrinking).
    Scaled {
        /// How many members it has.
        members: usize,
    },
    /// Members gave up more often than
    /// [`replacements`](crate::PoolBuilder::replacements) allows: the pool
    /// closes every member and fails what waits.
    GaveUp(GaveUp),
}

/// Why a member is recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recycle {
    /// It was given [`max_requests`](crate::PoolBuilder::max_requests).
    Requests(u64),
    /// Its resident memory, in bytes, passed
    /// [`max_rss`](crate::PoolBuilder::max_rss).
    Rss(u64),
}

impl<P: Protocol> Message for PoolEvent<P> {
    type Result = ();
}

impl<P: Protocol> std::fmt::Debug for PoolEvent<P>
where
    P::FromWorker: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolEvent::Member { index, event } => {
                write!(f, "Member({index}, pid {}, {:?})", event.pid, event.kind)
            }
            PoolEvent::Started { index } => write!(f, "Started({index})"),
            PoolEvent::Recycled { index, reason } => write!(f, "Recycled({index}, {reason:?})"),
            PoolEvent::Scaled { members } => write!(f, "Scaled({members})"),
            PoolEvent::GaveUp(g) => write!(f, "GaveUp({g:?})"),
        }
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
