//! The writing half of a connection: tungstenite's WebSocket over the
//! stream's writing half, which the writer task (`writer.rs`) feeds whole
//! messages; large ones go around it, written from their own buffers.
//!
//! This is the only file that names `tungstenite`.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::WireError;
use crate::wire::segments::Segments;
use crate::wire::stream::queues::FdQueues;
use crate::wire::stream::FdStream;
use crate::wire::wsframe::{self, BINARY};

type Ws = WebSocketStream<FdStream>;

/// From this size on, a message is written from its own buffer rather than
/// copied into tungstenite's (see [`SinkHalf::feed_whole`]).
pub(crate) const WRITTEN_WHOLE: usize = 64 << 10;

/// A failure of the writing half (tungstenite's): the connection's.
fn ws_error(e: WsError) -> WireError {
    WireError::Transport(e.to_string())
}

/// The writing half: whole WebSocket messages out, and the fd stream
/// under them (its descriptor queues and ledger). What is written when is
/// the writer's (`writer.rs`).
pub(crate) struct SinkHalf {
    sink: Ws,
    pub(crate) fds: Arc<FdQueues>,
    /// The largest WebSocket message the peer takes (the same limit as
    /// ours: both sides are given one).
    pub(crate) max_ws_message: usize,
}

impl SinkHalf {
    /// The WebSocket over `stream` (whose queues are `fds`), for messages
    /// of up to `max` bytes.
    pub(super) async fn open(stream: FdStream, fds: Arc<FdQueues>, max: usize) -> Self {
        // tungstenite only writes: the reading half is ours (`frames.rs`,
        // which enforces `max`), and its read buffer is never read into.
        let config = WebSocketConfig::default()
            .read_buffer_size(0)
            .write_buffer_size(64 * 1024)
            .max_write_buffer_size(max.saturating_add(128 * 1024));
        let sink = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        SinkHalf { sink, fds, max_ws_message: max }
    }

    /// Sends one message now (the hello, before the writer runs).
    pub(super) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), WireError> {
        self.sink.send(Message::Binary(bytes.into())).await.map_err(ws_error)
    }

    /// Hands one message to the WebSocket (buffered; see `flush`).
    pub(crate) async fn feed(&mut self, msg: Bytes) -> Result<(), WireError> {
        self.sink.feed(Message::Binary(msg)).await.map_err(ws_error)
    }

    /// Hands one large message (or one in pieces) to the stream under the
    /// WebSocket as a whole binary frame, written from `msg`'s own buffers:
    /// its header and its pieces in one vectored write, no copy on the way
    /// (tungstenite would copy it into its write buffer, and the stream
    /// what the socket did not take at once). Written at the next flush,
    /// after everything fed before it.
    pub(crate) async fn feed_whole(&mut self, msg: &Segments) -> Result<(), WireError> {
        // Between whole frames: what tungstenite holds goes first.
        self.flush().await?;
        let header = wsframe::frame_header(BINARY, msg.len()).into();
        self.fds.push_frame(header, msg.pieces().cloned());
        Ok(())
    }

    /// Writes out everything fed.
    pub(crate) async fn flush(&mut self) -> Result<(), WireError> {
        self.sink.flush().await.map_err(ws_error)
    }

    /// A close frame saying how much of the peer's stream this side took
    /// (`read N`: it reads no more), then the socket's write side is shut.
    pub(crate) async fn close(&mut self) {
        let reason = wsframe::close_reason(self.fds.taken());
        let frame = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = SinkExt::close(&mut self.sink).await;
    }
}
