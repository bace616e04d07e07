//! What a pool tells: each member's events, tagged with its index, and the
//! pool's own (a member added, recycled, the pool's size, giving up).

use actix::Message;

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
        /// The host it runs on ([`Host::name`](crate::Host::name); `local`
        /// for a pool without hosts).
        host: std::sync::Arc<str>,
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
            PoolEvent::Started { index, host } => write!(f, "Started({index} on {host})"),
            PoolEvent::Recycled { index, reason } => write!(f, "Recycled({index}, {reason:?})"),
            PoolEvent::Scaled { members } => write!(f, "Scaled({members})"),
            PoolEvent::GaveUp(g) => write!(f, "GaveUp({g:?})"),
        }
    }
}
