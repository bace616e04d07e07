//! What both sides share, from the socket up: the fd-aware stream ([`fd`],
//! with the ledger of what it wrote), the WebSocket over it ([`socket`],
//! its reading half, and [`writer`], the task that drains an [`outbox`]),
//! the envelope ([`frame`]), and payloads ([`codec`], which [`encode`]
//! uses to make whole messages; [`shared`] buffers travel as descriptors).

pub(crate) mod codec;
pub(crate) mod encode;
pub(crate) mod envelope;
pub(crate) mod outbox;
pub(crate) mod shared;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod writer;
pub(crate) mod ws;
pub(crate) mod wsframe;

/// The most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 64;
