//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! They run the decoding a peer's bytes go through, on arbitrary input:
//! the envelope header, the hello, the payload codec, the whole reading
//! path (WebSocket framing over the fd-aware socket, then the envelope),
//! and the parent's whole side of a connection (reader, dispatch, answers,
//! events to a recipient) with descriptors sent along. Any panic, hang,
//! unbounded allocation or leaked descriptor they find is a bug.
mod link;
mod sample;
mod seeds;
mod targets;

pub use self::link::link;
pub use self::seeds::seeds;
#[cfg(feature = "tls")]
pub use self::targets::auth;
pub use self::targets::{envelope, stream};
