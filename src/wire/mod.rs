//! What both sides share, from the socket up to whole messages:
//!
//! ```text
//! stream/    the fd-aware byte stream (SCM_RIGHTS; TCP, and TLS, for remote
//!            workers): its writing and reading halves, the descriptor
//!            queues they share, the ledger of what was written
//! wsframe    the WebSocket frame format, read and written
//! ws/        the WebSocket over the stream: opening it and the hellos, our
//!            reading half (frames, then messages), tungstenite's writing half
//! envelope   our header inside each binary message: kinds, hello, batches
//! codec      payloads to bytes and back (bincode, or JSON), under limits
//! shared/    SharedBytes: buffers that travel as sealed memfds
//! inline     InlineBytes: bytes in the message, referenced, not copied
//! segments   a message as encoded: one buffer, or pieces (inline bytes
//!            between what the encoder wrote), written back to back
//! encode     a whole message made: its envelope, then its payload, checked
//! outbox     messages waiting to be written, and writer, the task that
//!            drains them into the WebSocket
//! trace      the trace context a traced request carries (W3C-shaped ids)
//! tls        certificates, and the worker's handshake, for remote workers
//!            (the `tls` feature)
//! ```

pub(crate) mod codec;
pub(crate) mod encode;
pub(crate) mod envelope;
pub(crate) mod inline;
pub(crate) mod outbox;
pub(crate) mod segments;
pub(crate) mod shared;
pub(crate) mod stream;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod trace;
pub(crate) mod writer;
pub(crate) mod ws;
pub(crate) mod wsframe;

/// The most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 64;
