//! Channels between workers, the Web's `MessageChannel`: a socketpair
//! whose ends travel to two workers inside ordinary messages (as
//! descriptors), each end then a typed endpoint that speaks the same
//! session as the parent link, with the parent out of the data path.
//!
//! - `end.rs`: the channel and its ends before they are open, and how an
//!   end is written into a message and read back (checked against its
//!   type);
//! - `open.rs`: opening an end where it arrived: its session, run by a
//!   task, and what reaches the actor that holds it;
//! - `handle.rs`: the open end as its holder uses it ([`Channel`]), its
//!   events, and the account of a channel that closed;
//! - `registry.rs`: the ends open on a thread, closed when its worker ends.

mod end;
mod handle;
mod open;
mod registry;
#[cfg(test)]
mod tests;

pub use self::end::{ChannelEnd, MessageChannel};
pub use self::handle::{Channel, ChannelClosed, ChannelEvent, CloseReason};
pub use self::open::{ChannelOptions, Opening};
pub(crate) use self::registry::close_all;
