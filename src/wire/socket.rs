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

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::codec::{self, Codec};
use super::envelope::{self, Header, Kind, MAX_BATCH, PROTOCOL_VERSION};
use super::stream::queues::{FdQueues, TooManyUnclaimed};
use super::stream::reader::FdReader;
use super::stream::secure::Tls;
use super::stream::FdStream;
use super::wsframe::{self, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
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
    /// How its payload is written: its connection's codec.
    pub codec: Codec,
    /// Whether its connection carries descriptors (not TCP): an answer to
    /// it sends shared buffers as descriptors, or inline.
    pub descriptors: bool,
    /// The most bytes its shared buffers may hold together (see
    /// `Limits::max_shared_bytes`).
    pub max_shared: usize,
}

impl Inbound {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }

    /// Its payload decoded (one without shared buffers: see
    /// `shared::decode_with` for those).
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, WireError> {
        codec::decode_as(self.codec, self.payload())
    }
}

/// An open connection, before it is split into reader and writer.
pub(crate) struct Connection {
    ws: Ws,
    frames: Frames,
    fds: Arc<FdQueues>,
    /// The largest WebSocket message the peer takes (the same limit as
    /// ours: both sides are given one).
    max_ws_message: usize,
}

/// A connected stream socket (UNIX, or TCP for a remote worker), and the
/// TLS it speaks, its handshake done, if any.
pub(crate) struct Socket {
    pub fd: OwnedFd,
    pub tls: Option<Tls>,
}

impl Socket {
    /// A TCP socket that speaks `tls`.
    pub(crate) fn tls(fd: impl Into<OwnedFd>, tls: impl Into<Tls>) -> Self {
        Socket { fd: fd.into(), tls: Some(tls.into()) }
    }
}

impl From<OwnedFd> for Socket {
    fn from(fd: OwnedFd) -> Self {
        Socket { fd, tls: None }
    }
}

impl From<std::os::unix::net::UnixStream> for Socket {
    fn from(sock: std::os::unix::net::UnixStream) -> Self {
        OwnedFd::from(sock).into()
    }
}

/// Opens the WebSocket over a connected socket. Must run inside a tokio
/// runtime.
pub(crate) async fn open(
    sock: impl Into<Socket>,
    max_message_size: usize,
) -> Result<Connection, WireError> {
    let Socket { fd, tls } = sock.into();
    let (stream, reader) =
        FdStream::new(fd, tls).map_err(|e| WireError::Transport(e.to_string()))?;
    let fds = reader.queues();
    let max = max_message_size.saturating_add(HEADER_SLACK);
    // tungstenite only writes: the reading half is ours (`Frames`, which
    // enforces `max`), and its read buffer is never read into.
    let config = WebSocketConfig::default()
        .read_buffer_size(0)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(max.saturating_add(128 * 1024));
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let frames = Frames::new(reader, max);
    Ok(Connection { ws, frames, fds, max_ws_message: max })
}

impl Connection {
    /// Sends one message now (used for the hello, before the writer runs).
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), WireError> {
        self.ws.send(Message::Binary(bytes.into())).await.map_err(ws_error)
    }

    /// Receives the peer's hello and checks it against our protocol
    /// version and `fingerprint`; `Err(None)` when the peer went away first.
    /// A worker that refuses writes its refusal with `codec`, the one our
    /// hello named.
    pub(crate) async fn recv_hello(
        &mut self,
        fingerprint: u64,
        codec: Codec,
    ) -> Result<envelope::Hello, Option<WireError>> {
        let first = match next_inbound(&mut self.frames, &self.fds).await {
            None | Some(Err(WireError::CutOff)) => return Err(None),
            Some(r) => r.map_err(Some)?,
        };
        if first.header.kind == Kind::Refused {
            let refusal =
                codec::decode_as::<envelope::EntryRefusal>(codec, first.payload()).map_err(Some)?;
            return Err(Some(WireError::UnknownEntry {
                entry: refusal.entry,
                known: refusal.known,
            }));
        }
        if first.header.kind != Kind::Hello {
            return Err(Some(WireError::NotAHello));
        }
        let hello = envelope::read_hello(first.payload()).map_err(Some)?;
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
        (
            Reader {
                frames: self.frames,
                fds: self.fds.clone(),
                batch: None,
                codec: Codec::default(),
                descriptors: true,
                max_shared: usize::MAX,
                flood_told: false,
            },
            SinkHalf { sink: self.ws, fds: self.fds, max_ws_message: self.max_ws_message },
        )
    }
}

/// The codec named by a parent's hello as read raw off the socket (one
/// unfragmented WebSocket frame); bincode if it cannot be read. For a
/// worker that refuses before it runs a session.
pub(crate) fn codec_of_hello(raw: &[u8]) -> Codec {
    // Unmasked, its length in the header's short form (a hello is far
    // under 126 bytes).
    let hello = match wsframe::read(raw) {
        Some(head) if head.len == 2 => raw.get(2..2 + head.payload as usize),
        _ => None,
    };
    let Some(hello) = hello else { return Codec::default() };
    envelope::decode(hello)
        .ok()
        .filter(|(header, _)| header.kind == Kind::Hello)
        .and_then(|(_, fields)| envelope::read_hello(fields).ok())
        .map_or(Codec::default(), |hello| hello.codec)
}

/// The reading half.
pub(crate) struct Reader {
    frames: Frames,
    fds: Arc<FdQueues>,
    /// A batch being read, and where its next message starts.
    batch: Option<(Bytes, usize)>,
    codec: Codec,
    descriptors: bool,
    /// The most bytes a message's shared buffers may hold together.
    max_shared: usize,
    /// A flood of descriptors was told ([`WireError::UnclaimedFds`]): they
    /// are not told again when the reader closes them.
    flood_told: bool,
}

impl Reader {
    /// How the connection's payloads are written, once the hellos said.
    pub(crate) fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// The shared buffers of one message may hold at most `max` bytes
    /// together (the parent's bound on what a worker makes it hold).
    pub(crate) fn set_max_shared(&mut self, max: usize) {
        self.max_shared = max;
    }

    /// The connection carries no descriptors (TCP).
    pub(crate) fn without_descriptors(&mut self) {
        self.descriptors = false;
    }

    /// The next message; `None` at the end of the connection.
    pub(crate) async fn next(&mut self) -> Option<Result<Inbound, WireError>> {
        loop {
            if let Some(item) = self.next_in_batch() {
                return Some(item);
            }
            let next = self.frames.next().await;
            self.fds.note_taken(self.frames.taken);
            let bytes = match next? {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.flood_told |= matches!(e, WireError::UnclaimedFds { .. });
                    return Some(Err(e));
                }
            };
            // Anything but a batch, a cut-short header included, is read
            // (or refused) as one message.
            if bytes.first() != Some(&(Kind::Batch as u8)) || bytes.len() < 2 {
                return Some(inbound(
                    bytes,
                    &self.fds,
                    self.codec,
                    self.descriptors,
                    self.max_shared,
                ));
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
        match envelope::batch_entry(bytes, *pos) {
            Ok(Some(range)) => {
                *pos = range.end;
                let msg = bytes.slice(range);
                if msg.first() == Some(&(Kind::Batch as u8)) {
                    self.batch = None;
                    return Some(Err(WireError::Unexpected("a batch inside a batch")));
                }
                Some(inbound(msg, &self.fds, self.codec, self.descriptors, self.max_shared))
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

    /// Whether the peer ended the connection with its close frame (not
    /// merely by the end of the stream).
    pub(crate) fn closed_by_peer(&self) -> bool {
        self.frames.closed
    }

    /// What the peer's close frame said it took of our stream, in bytes
    /// (whole frames), if it said.
    pub(crate) fn peer_took(&self) -> Option<u64> {
        self.frames.peer_took.filter(|_| self.frames.closed)
    }

    /// Descriptors that arrived but that no message claimed.
    pub(crate) fn unclaimed_fds(&self) -> usize {
        match self.flood_told {
            true => 0,
            false => self.fds.unclaimed(),
        }
    }

    /// The descriptor queues and the ledger of the connection.
    pub(crate) fn queues(&self) -> Arc<FdQueues> {
        self.fds.clone()
    }
}

/// The next message, batches included, as read from the peer.
async fn next_inbound(frames: &mut Frames, fds: &FdQueues) -> Option<Result<Inbound, WireError>> {
    Some(match frames.next().await? {
        Ok(bytes) => inbound(bytes, fds, Codec::default(), true, 0),
        Err(e) => Err(e),
    })
}

/// The reading half of the WebSocket: frames read straight from the
/// socket into a buffer of ours, without zero-filling it first (as
/// tungstenite does, up to its whole read buffer, before every read).
///
/// Takes binary messages (whole, or in fragments), masked or not; a text
/// message is an error; pings and pongs are skipped (no peer of ours sends
/// them, and this side does not answer them); a close frame ends the
/// connection.
struct Frames {
    io: FdReader,
    buf: BytesMut,
    /// A message in fragments, so far.
    partial: Option<BytesMut>,
    /// The largest message taken.
    max: usize,
    /// The peer's close frame came.
    closed: bool,
    /// Bytes of whole frames taken so far.
    taken: u64,
    /// What the peer's close said it took of ours (`read N`), if it did.
    peer_took: Option<u64>,
}

/// How much room a read is given at least.
const READ_CHUNK: usize = 64 << 10;

impl Frames {
    fn new(io: FdReader, max: usize) -> Self {
        Frames {
            io,
            buf: BytesMut::new(),
            partial: None,
            max,
            closed: false,
            taken: 0,
            peer_took: None,
        }
    }

    /// The next binary message's bytes; `None` at the end of the
    /// connection (a close frame, or the end of the stream between frames).
    async fn next(&mut self) -> Option<Result<Bytes, WireError>> {
        loop {
            match self.parse() {
                Ok(Parsed::Message(bytes)) => return Some(Ok(bytes)),
                Ok(Parsed::Closed) => {
                    self.closed = true;
                    return None;
                }
                Ok(Parsed::More(wanted)) => {
                    if self.buf.capacity() - self.buf.len() < wanted.max(1) {
                        self.buf.reserve(wanted.max(READ_CHUNK));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
            let read = std::future::poll_fn(|cx| self.io.poll_recv(cx, &mut self.buf)).await;
            match read {
                Ok(0) => return self.ended(),
                Ok(_) => {}
                Err(e) if e.get_ref().is_some_and(|e| e.is::<TooManyUnclaimed>()) => {
                    let count = e.into_inner().and_then(|e| e.downcast::<TooManyUnclaimed>().ok());
                    return Some(Err(WireError::UnclaimedFds { count: count.map_or(0, |c| c.0) }));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return self.ended();
                }
                Err(e) => return Some(Err(WireError::Transport(e.to_string()))),
            }
        }
    }

    /// The stream ended (only ever after `parse` asked for more, so what
    /// the buffer holds is part of a frame): cleanly between frames, or
    /// cutting a frame or a fragmented message off.
    fn ended(&self) -> Option<Result<Bytes, WireError>> {
        let cut = !self.buf.is_empty() || self.partial.is_some();
        cut.then_some(Err(WireError::CutOff))
    }

    /// Takes the frames the buffer holds, up to the first message.
    fn parse(&mut self) -> Result<Parsed, WireError> {
        loop {
            // Reserved bits are refused as soon as the first byte is there.
            if self.buf.first().is_some_and(|&first| wsframe::reserved(first)) {
                return Err(WireError::Transport("reserved bits are non-zero".into()));
            }
            let Some(head) = wsframe::read(&self.buf) else {
                return Ok(Parsed::More(wsframe::MAX_HEADER));
            };
            let (fin, opcode) = (head.fin, head.opcode);
            if wsframe::is_control(opcode) && (!fin || head.payload > wsframe::MAX_CONTROL_PAYLOAD)
            {
                return Err(WireError::Transport("a control frame fragmented or too long".into()));
            }
            let so_far = self.partial.as_ref().map_or(0, BytesMut::len) as u64;
            if head.payload.saturating_add(so_far) > self.max as u64 {
                let size = usize::try_from(head.payload + so_far).unwrap_or(usize::MAX);
                let limit = self.max.saturating_sub(HEADER_SLACK);
                return Err(WireError::TooLarge { size, limit });
            }
            let (header_len, payload_len) = (head.len, head.payload as usize);
            if self.buf.len() < header_len + payload_len {
                return Ok(Parsed::More(header_len + payload_len - self.buf.len()));
            }
            bytes::Buf::advance(&mut self.buf, header_len);
            let mut payload = self.buf.split_to(payload_len);
            self.taken += (header_len + payload_len) as u64;
            if let Some(mask) = head.mask {
                wsframe::unmask(&mut payload, mask);
            }
            match opcode {
                BINARY if self.partial.is_some() => {
                    return Err(WireError::Transport(
                        "a new message inside a fragmented one".into(),
                    ));
                }
                BINARY if fin => return Ok(Parsed::Message(payload.freeze())),
                BINARY => self.partial = Some(payload),
                CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(WireError::Transport("a continuation of nothing".into()));
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        let whole = self.partial.take().unwrap_or_default();
                        return Ok(Parsed::Message(whole.freeze()));
                    }
                }
                TEXT => return Err(WireError::TextFrame),
                CLOSE => {
                    self.peer_took = wsframe::close_reason_read(&payload);
                    return Ok(Parsed::Closed);
                }
                PING | PONG => {}
                other => {
                    return Err(WireError::Transport(format!("unknown WebSocket opcode {other}")))
                }
            }
        }
    }
}

/// What the buffer holds.
enum Parsed {
    Message(Bytes),
    Closed,
    /// At least this many more bytes are needed.
    More(usize),
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
fn inbound(
    bytes: Bytes,
    fds: &FdQueues,
    codec: Codec,
    descriptors: bool,
    max_shared: usize,
) -> Result<Inbound, WireError> {
    let (header, offset) = match envelope::decode(&bytes) {
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
    Ok(Inbound { header, bytes, offset, fds: taken, codec, descriptors, max_shared })
}

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
        self.fds.push_frame(wsframe::frame_header(BINARY, msg.len()).into(), msg);
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::wire::wsframe::binary_frame;

    /// The frames `bytes` written raw, as the reading half takes them.
    fn read_all(bytes: &[u8]) -> Vec<Result<Bytes, WireError>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let (_writing, reading) = FdStream::new(ours, None).unwrap();
            let mut frames = Frames::new(reading, 1 << 20);
            theirs.write_all(bytes).unwrap();
            drop(theirs);
            let mut out = Vec::new();
            while let Some(item) = frames.next().await {
                let failed = item.is_err();
                out.push(item);
                if failed {
                    break;
                }
            }
            out
        })
    }

    #[test]
    fn frames_whole_fragmented_masked_and_control() {
        let mut bytes = binary_frame(b"one");
        // "two" in two fragments, a ping between them.
        bytes.extend_from_slice(&[0x02, 2, b't', b'w']);
        bytes.extend_from_slice(&[0x89, 0]);
        bytes.extend_from_slice(&[0x80, 1, b'o']);
        // "three", masked.
        let mask = [1u8, 2, 3, 4];
        let masked: Vec<u8> = b"three".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        bytes.extend_from_slice(&[0x82, 0x80 | 5]);
        bytes.extend_from_slice(&mask);
        bytes.extend_from_slice(&masked);
        // A close frame ends it; what follows is not read.
        bytes.extend_from_slice(&[0x88, 0]);
        bytes.extend_from_slice(&binary_frame(b"after"));
        let got: Vec<Bytes> = read_all(&bytes).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn broken_frames_are_typed_errors() {
        let last = |bytes: &[u8]| read_all(bytes).pop();
        assert!(matches!(last(&[0xff; 8]), Some(Err(WireError::Transport(_)))));
        assert!(matches!(last(&[0x81, 1, b'x']), Some(Err(WireError::TextFrame))));
        assert!(matches!(last(&[0x80, 1, b'x']), Some(Err(WireError::Transport(_)))));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(4u64 << 30).to_be_bytes());
        assert!(
            matches!(last(&huge), Some(Err(WireError::TooLarge { size, .. })) if size == 4 << 30)
        );
        // Cut off inside a frame, and ended between two.
        assert!(matches!(last(&[0x82, 10, 1, 2]), Some(Err(WireError::CutOff))));
        assert_eq!(read_all(&binary_frame(b"x")).len(), 1);
    }
}
