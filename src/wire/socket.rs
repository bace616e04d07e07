//! The WebSocket over the inherited socket: set-up, the reading half that
//! turns WebSocket messages into [`Inbound`] frames, and the sending half the
//! writer task (`writer.rs`) drains an outbox into.
//!
//! No HTTP upgrade happens on a socketpair (`from_raw_socket`), and both ends
//! play the server role with unmasked frames accepted: a socketpair has no
//! proxy to confuse, so masking would only cost a pass over every byte.
//!
//! This is the only file that names `tungstenite`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::codec;
use super::fd::{FdQueues, FdStream, TooManyUnclaimed};
use super::frame::{self, Header, Kind, MAX_BATCH, PROTOCOL_VERSION};
use crate::error::WireError;

/// Room for the envelope header on top of the user's message size limit.
const HEADER_SLACK: usize = 64;

type Ws = WebSocketStream<FdStream>;

/// A received message: its header, its payload and its descriptors.
pub(crate) struct Inbound {
    pub header: Header,
    bytes: Bytes,
    offset: usize,
    pub fds: Vec<OwnedFd>,
}

impl Inbound {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }
}

/// An open connection, before it is split into reader and writer.
pub(crate) struct Connection {
    ws: Ws,
    fds: Arc<FdQueues>,
    /// The largest WebSocket message the peer takes (the same limit as
    /// ours: both sides are given one).
    max_ws_message: usize,
}

/// Opens the WebSocket over a connected UNIX stream socket. Must run inside a
/// tokio runtime.
pub(crate) async fn open(
    sock: std::os::unix::net::UnixStream,
    max_message_size: usize,
) -> Result<Connection, WireError> {
    let stream = FdStream::new(sock).map_err(|e| WireError::Transport(e.to_string()))?;
    let fds = stream.queues();
    let max = max_message_size.saturating_add(HEADER_SLACK);
    let config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(max.saturating_add(128 * 1024))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .accept_unmasked_frames(true);
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    Ok(Connection { ws, fds, max_ws_message: max })
}

impl Connection {
    /// Sends one message now (used for the hello, before the writer runs).
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), WireError> {
        self.ws.send(Message::Binary(bytes.into())).await.map_err(ws_error)
    }

    /// Receives the peer's hello and checks it against our protocol
    /// version and `fingerprint`; `Err(None)` when the peer went away first.
    pub(crate) async fn recv_hello(
        &mut self,
        fingerprint: u64,
    ) -> Result<frame::Hello, Option<WireError>> {
        let first = match next_inbound(&mut self.ws, &self.fds).await {
            None | Some(Err(WireError::CutOff)) => return Err(None),
            Some(r) => r.map_err(Some)?,
        };
        if first.header.kind == Kind::Refused {
            let refusal = codec::decode::<frame::EntryRefusal>(first.payload()).map_err(Some)?;
            return Err(Some(WireError::UnknownEntry {
                entry: refusal.entry,
                known: refusal.known,
            }));
        }
        if first.header.kind != Kind::Hello {
            return Err(Some(WireError::NotAHello));
        }
        let hello = frame::read_hello(first.payload()).map_err(Some)?;
        if hello.version != PROTOCOL_VERSION {
            return Err(Some(WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            }));
        }
        if hello.fingerprint != fingerprint {
            return Err(Some(WireError::FingerprintMismatch {
                ours: fingerprint,
                theirs: hello.fingerprint,
            }));
        }
        Ok(hello)
    }

    /// Splits into the reading half and the writing half.
    pub(crate) fn split(self) -> (Reader, SinkHalf) {
        let (sink, stream) = self.ws.split();
        (
            Reader { stream, fds: self.fds.clone(), batch: None },
            SinkHalf { sink, fds: self.fds, max_ws_message: self.max_ws_message },
        )
    }
}

/// The reading half.
pub(crate) struct Reader {
    stream: SplitStream<Ws>,
    fds: Arc<FdQueues>,
    /// A batch being read, and where its next message starts.
    batch: Option<(Bytes, usize)>,
}

impl Reader {
    /// The next message; `None` at the end of the connection.
    pub(crate) async fn next(&mut self) -> Option<Result<Inbound, WireError>> {
        loop {
            if let Some(item) = self.next_in_batch() {
                return Some(item);
            }
            let bytes = match next_message(&mut self.stream, &self.fds).await? {
                Ok(bytes) => bytes,
                Err(e) => return Some(Err(e)),
            };
            // Anything but a batch, a cut-short header included, is read
            // (or refused) as one message.
            if bytes.first() != Some(&(Kind::Batch as u8)) || bytes.len() < 2 {
                return Some(inbound(bytes, &self.fds));
            }
            // A batch's header is its kind and a descriptor count of 0.
            if bytes[1] != 0 {
                return Some(Err(WireError::Unexpected("descriptors on a batch")));
            }
            // No writer makes larger ones: one would only flood the reader
            // with messages, all at once.
            if bytes.len() > MAX_BATCH {
                return Some(Err(WireError::BatchTooLarge { size: bytes.len(), limit: MAX_BATCH }));
            }
            self.batch = Some((bytes, 2));
        }
    }

    /// The next message of the batch being read, if any.
    fn next_in_batch(&mut self) -> Option<Result<Inbound, WireError>> {
        let (bytes, pos) = self.batch.as_mut()?;
        match frame::batch_entry(bytes, *pos) {
            Ok(Some(range)) => {
                *pos = range.end;
                let msg = bytes.slice(range);
                if msg.first() == Some(&(Kind::Batch as u8)) {
                    self.batch = None;
                    return Some(Err(WireError::Unexpected("a batch inside a batch")));
                }
                Some(inbound(msg, &self.fds))
            }
            Ok(None) => {
                self.batch = None;
                None
            }
            Err(e) => {
                self.batch = None;
                Some(Err(e))
            }
        }
    }

    /// The next message if one is ready without waiting: `None` when the
    /// reader would have to wait (the caller then awaits [`next`](Self::next)
    /// again, which registers its waker).
    pub(crate) fn next_ready(&mut self) -> Option<Option<Result<Inbound, WireError>>> {
        self.next().now_or_never()
    }

    /// Descriptors that arrived but that no message claimed.
    pub(crate) fn unclaimed_fds(&self) -> usize {
        self.fds.unclaimed()
    }

    /// The descriptor queues and the ledger of the connection.
    pub(crate) fn queues(&self) -> Arc<FdQueues> {
        self.fds.clone()
    }
}

/// The next message, batches included, as read from the peer.
async fn next_inbound<S>(stream: &mut S, fds: &FdQueues) -> Option<Result<Inbound, WireError>>
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    Some(match next_message(stream, fds).await? {
        Ok(bytes) => inbound(bytes, fds),
        Err(e) => Err(e),
    })
}

/// The next WebSocket binary message's bytes.
async fn next_message<S>(stream: &mut S, fds: &FdQueues) -> Option<Result<Bytes, WireError>>
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        return Some(match stream.next().await? {
            Ok(Message::Binary(bytes)) => Ok(bytes),
            Ok(Message::Text(_)) => Err(WireError::TextFrame),
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue, // ping, pong: tungstenite answers pings itself
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return None,
            // The peer went away without a close frame: a process that died,
            // which its exit reports; or one that cut a message off. (A reset
            // rather than an end when it left our writes unread.)
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return fds.mid_frame().then_some(Err(WireError::CutOff));
            }
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return fds.mid_frame().then_some(Err(WireError::CutOff));
            }
            Err(e) => Err(ws_error(e)),
        });
    }
}

/// One unmasked binary WebSocket frame holding `payload`: a whole message,
/// written by hand where no connection runs (a worker's refusal, a
/// terminate when the parent's System stops).
pub(crate) fn binary_frame(payload: &[u8]) -> Vec<u8> {
    frame(2, payload)
}

/// One unmasked WebSocket frame with FIN set, of `opcode`.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// The header of an unmasked WebSocket frame with FIN set, of `opcode`,
/// whose payload is `len` bytes.
fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.push(0x80 | opcode);
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out
}

/// From this size on, a message is written from its own buffer rather than
/// copied into tungstenite's (see [`SinkHalf::feed_whole`]).
pub(crate) const WRITTEN_WHOLE: usize = 64 << 10;

/// Up to this size: a larger message held until written would make the
/// sender fault in fresh pages for the next one, where copied and let go
/// at once its buffer serves the next (16 MiB messages: 1.17 GiB/s copied,
/// 0.75 written whole).
pub(crate) const WRITTEN_WHOLE_MAX: usize = 4 << 20;

/// One message: its header read, its descriptors claimed.
fn inbound(bytes: Bytes, fds: &FdQueues) -> Result<Inbound, WireError> {
    let (header, offset) = match frame::decode(&bytes) {
        Ok((header, payload)) => (header, bytes.len() - payload.len()),
        Err(e) => return Err(e),
    };
    let wanted = usize::from(header.nfds);
    if wanted > super::MAX_FDS_PER_MESSAGE {
        return Err(WireError::TooManyFds { count: wanted, limit: super::MAX_FDS_PER_MESSAGE });
    }
    let Some(taken) = fds.take_incoming(wanted) else {
        return Err(WireError::MissingFds { claimed: wanted, available: fds.unclaimed() });
    };
    Ok(Inbound { header, bytes, offset, fds: taken })
}

fn ws_error(e: WsError) -> WireError {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            WireError::TooLarge { size, limit: max_size.saturating_sub(HEADER_SLACK) }
        }
        WsError::Io(e) if e.get_ref().is_some_and(|e| e.is::<TooManyUnclaimed>()) => {
            let count = e.into_inner().and_then(|e| e.downcast::<TooManyUnclaimed>().ok());
            WireError::UnclaimedFds { count: count.map_or(0, |c| c.0) }
        }
        other => WireError::Transport(other.to_string()),
    }
}

/// The writing half: whole WebSocket messages out, and the fd stream
/// under them (its descriptor queues and ledger). What is written when is
/// the writer's (`writer.rs`).
pub(crate) struct SinkHalf {
    sink: SplitSink<Ws, Message>,
    pub(crate) fds: Arc<FdQueues>,
    /// The largest WebSocket message the peer takes (the same limit as
    /// ours: both sides are given one).
    pub(crate) max_ws_message: usize,
}

impl SinkHalf {
    /// Hands one message to the WebSocket (buffered; see `flush`).
    pub(crate) async fn feed(&mut self, msg: Bytes) -> Result<(), WireError> {
        self.sink.feed(Message::Binary(msg)).await.map_err(ws_error)
    }

    /// Hands one large message to the stream under the WebSocket as a
    /// whole binary frame, written from `msg` itself: its header and its
    /// bytes in one vectored write, no copy on the way (tungstenite would
    /// copy it into its write buffer, and the stream what the socket did
    /// not take at once). Written at the next flush, after everything fed
    /// before it.
    pub(crate) async fn feed_whole(&mut self, msg: Bytes) -> Result<(), WireError> {
        // Between whole frames: what tungstenite holds goes first.
        self.flush().await?;
        self.fds.push_frame(frame_header(2, msg.len()).into(), msg);
        Ok(())
    }

    /// Writes out everything fed.
    pub(crate) async fn flush(&mut self) -> Result<(), WireError> {
        self.sink.flush().await.map_err(ws_error)
    }

    /// A close frame, then the socket's write side is shut.
    pub(crate) async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}
