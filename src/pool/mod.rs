//! Pools: many worker processes behind one address, for CPU-bound work and
//! work to keep apart from the parent (parsers, plugins).
//!
//! A [`WorkerPool`] is an actor that takes the messages a single worker
//! takes ([`Post`](crate::Post), [`Ask`](crate::Ask),
//! [`Terminate`](crate::Terminate), [`Join`](crate::Join)), plus
//! [`Broadcast`] and [`Stats`]. Each member is an ordinary
//! [`Worker`](crate::Worker), built from the same options, with its own
//! restart policy. How work is spread:
//!
//! - An ask goes to the member with the fewest requests in flight (ties in
//!   turn), among those that are online and have fewer than
//!   [`max_in_flight_per_worker`](PoolBuilder::max_in_flight_per_worker).
//!   When none has room, it waits in the pool's queue, and goes to the
//!   first member that finishes one. Beyond the queue's bound the caller
//!   is refused, or (under `WhenFull::Wait`) held back with its request in
//!   its own future until it is given a place (`waiting.rs`). The answer
//!   goes straight from the member to the caller (`ask.rs`): no task and
//!   no channel of the pool's per request.
//! - A streamed request ([`AskStream`](crate::AskStream)) is routed as an
//!   ask is, and counts in flight on its member until its stream ends.
//! - A post goes to one member, in turn; [`Broadcast`] goes to every one.
//! - A member that crashes is restarted by its own policy; what it had in
//!   flight fails with [`WorkerError::Exited`](crate::WorkerError::Exited)
//!   and is never sent again, and the queue flows to the others meanwhile.
//!   A member that gives up is replaced, within the pool's own intensity.
//! - The pool grows while requests wait (up to `max`), shrinks back to
//!   `min` when members are idle, and recycles a member after
//!   `max_requests` or past `max_rss` (`scale.rs`).
//! - Members may be spread over hosts ([`Host`]): each new one goes to the
//!   host up with room and the fewest members; one lost is replaced
//!   elsewhere (`hosts.rs`).
//!
//! The rooms: the actor and what it keeps ([`worker_pool`]); one member
//! ([`member`]) and which member takes what ([`routing`], pure); an ask
//! ([`ask`]) and a streamed one ([`ask_stream`]), the queue ([`queue`]) and what waits in it ([`waiting`]);
//! the other messages ([`messages`]); the members' lives ([`lifecycle`])
//! and the pool's size ([`scale`]); where members run ([`hosts`]); what it
//! tells ([`events`]); and its builder ([`builder`]).

pub(crate) mod ask;
pub(crate) mod ask_stream;
pub(crate) mod builder;
pub(crate) mod events;
pub(crate) mod hosts;
pub(crate) mod lifecycle;
pub(crate) mod member;
pub(crate) mod messages;
pub(crate) mod queue;
pub(crate) mod routing;
pub(crate) mod scale;
pub(crate) mod waiting;
pub(crate) mod worker_pool;

pub use self::ask::PoolAsk;
pub use self::ask_stream::PoolStream;
pub use self::builder::{PoolBuilder, Pooled};
pub use self::events::{PoolEvent, Recycle};
pub use self::hosts::Host;
pub use self::messages::Broadcast;
pub use self::worker_pool::WorkerPool;
