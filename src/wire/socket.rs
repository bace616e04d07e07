//! The WebSocket over the inherited socket: set-up, the reading half that
//! turns WebSocket messages into [`Inbound`] frames, and the writer task that
//! drains an [`Outbox`](super::outbox::Outbox) in batches.
//!
//! No HTTP upgrade happens on a socketpair (`from_raw_socket`), and both ends
//! play the server role with unmasked frames accepted: a socketpair has no
//! proxy to confuse, so masking would only cost a pass over every byte.
//!
//! This is the only file that names `tungstenite`.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::codec;
use super::fd::{FdQueues, FdStream, TooManyUnclaimed, MAX_FDS_PER_SEND};
use super::frame::{self, Header, Kind, PROTOCOL_VERSION};
use super::ledger::Fate;
use super::outbox::{Outbox, Outgoing};
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

    /// Splits into the reading half and the writer.
    pub(crate) fn split(self) -> (Reader, Writer) {
        let (sink, stream) = self.ws.split();
        // What went before the writer (the hello) has its frame indices.
        let fed_base = self.fds.ledger().started();
        (
            Reader { stream, fds: self.fds.clone(), batch: None },
            Writer {
                sink,
                fds: self.fds,
                batch: VecDeque::new(),
                small: Vec::new(),
                small_bytes: 0,
                books: true,
                fed: VecDeque::new(),
                fed_base,
                fed_posts: 0,
                fed_cleared: 0,
                max_ws_message: self.max_ws_message,
            },
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
    let mut out = vec![0x80 | opcode];
    match payload.len() {
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
    out.extend_from_slice(payload);
    out
}

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

/// The writing half.
///
/// Every message it takes from the outbox stays on its books until the
/// ledger says what became of it (see `ledger.rs`): when the connection
/// fails or the writer is stopped, [`WriterEnd`] gives back, in order and
/// with their descriptors, the messages that never reached the kernel, and
/// counts the posts that reached it but may not have been read.
pub(crate) struct Writer {
    sink: SplitSink<Ws, Message>,
    fds: Arc<FdQueues>,
    /// Taken from the outbox, not yet fed.
    batch: VecDeque<Outgoing>,
    /// Small messages waiting to go out together as one batch.
    small: Vec<Lent>,
    /// Their size in a batch.
    small_bytes: usize,
    /// Whether it keeps books at all: a side with no next connection to
    /// give messages to (the worker's) does not.
    books: bool,
    /// WebSocket messages fed to tungstenite whose fate is not known yet;
    /// the first has frame index `fed_base`.
    fed: VecDeque<Fed>,
    fed_base: u64,
    /// Posts among them: only their fate is worth asking the kernel about
    /// (requests in doubt fail with the exit, whatever became of them).
    fed_posts: usize,
    /// How many of them (from the first) have started, their bytes dropped.
    fed_cleared: usize,
    /// The largest WebSocket message the peer takes: no batch is larger.
    max_ws_message: usize,
}

/// One message on the writer's books: its bytes, and how many descriptors
/// it carries (queued in the fd stream since it was fed).
struct Lent {
    bytes: Bytes,
    nfds: usize,
}

impl Lent {
    fn is_post(&self) -> bool {
        self.bytes.first() == Some(&(Kind::Post as u8))
    }
}

/// One WebSocket message fed: the messages it carries (dropped once it has
/// started to reach the kernel), and how many of them are posts.
struct Fed {
    msgs: Vec<Lent>,
    posts: usize,
}

/// What a writer leaves when it ends.
pub(crate) struct WriterEnd {
    /// Why it ended: `Ok` when stopped, or after the outbox's end went out.
    pub result: Result<(), WireError>,
    /// Messages that never reached the kernel, oldest first, with their
    /// descriptors: they can go to another connection.
    pub unsent: Vec<Outgoing>,
    /// Posts that reached the kernel (or whose descriptors did) and that
    /// the peer may not have read.
    pub in_doubt: usize,
}

/// Messages up to this size are batched with those written beside them.
const BATCH_MESSAGE_MAX: usize = 4 * 1024;
/// How many times the writer lets others run before it flushes.
const YIELD_ROUNDS: usize = 2;
/// A batch's own header.
const BATCH_HEADER: usize = 2;
/// A batch is sent once it is this large.
const BATCH_TARGET: usize = 64 * 1024;
/// The largest batch this writer produces, and so the largest a reader
/// takes: the target, plus one more small message.
pub(crate) const MAX_BATCH: usize =
    BATCH_HEADER + BATCH_TARGET + frame::BATCH_ENTRY_HEADER + BATCH_MESSAGE_MAX;
/// While idle with messages whose fate is unknown, the writer asks the
/// kernel after this long, then four times longer each time, up to
/// [`CONFIRM_MAX`].
const CONFIRM_FIRST: Duration = Duration::from_millis(1);
const CONFIRM_MAX: Duration = Duration::from_secs(1);
/// Beyond this many messages of unknown fate, the writer asks after a flush.
const CONFIRM_TRACKED: usize = 256;

impl Writer {
    /// A writer that keeps no books: its [`WriterEnd`] gives nothing back.
    pub(crate) fn without_books(mut self) -> Self {
        self.books = false;
        self
    }

    /// Whether asking the kernel what the peer has read may tell something
    /// worth knowing.
    fn worth_confirming(&self) -> bool {
        self.fed_posts > 0 && self.fds.ledger().unconfirmed()
    }

    /// Drains `outbox` until it is ended, the connection fails, or `stop`
    /// fires (or is dropped); then says what became of what it took.
    pub(crate) async fn run(
        mut self,
        outbox: Arc<Outbox>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> WriterEnd {
        let result = tokio::select! {
            result = self.drive(&outbox) => result,
            _ = stop => Ok(()),
        };
        self.end(result)
    }

    /// What the books say, once the writer no longer runs.
    fn end(mut self, result: Result<(), WireError>) -> WriterEnd {
        let ledger = self.fds.ledger();
        let mut in_doubt = 0;
        // Lent messages that never left, oldest first.
        let mut lent = Vec::new();
        for (i, fed) in self.fed.drain(..).enumerate() {
            match ledger.fate(self.fed_base + i as u64) {
                Fate::Read => {}
                Fate::InDoubt => in_doubt += fed.posts,
                Fate::Unsent => lent.extend(fed.msgs),
            }
        }
        drop(ledger);
        lent.append(&mut self.small);
        // Their descriptors are the newest not yet sent. One that rode
        // ahead on an earlier message's bytes went with it: that message
        // cannot be sent again whole, and counts as in doubt.
        let wanted = lent.iter().map(|m| m.nfds).sum();
        let mut back = self.fds.take_back_outgoing(wanted);
        let mut unsent = VecDeque::with_capacity(lent.len() + self.batch.len());
        for msg in lent.into_iter().rev() {
            if back.len() < msg.nfds {
                back.clear();
                if msg.is_post() {
                    in_doubt += 1;
                }
                continue;
            }
            let fds = back.split_off(back.len() - msg.nfds);
            unsent.push_front(Outgoing::Frame { bytes: msg.bytes, fds });
        }
        unsent.extend(self.batch.drain(..));
        WriterEnd { result, unsent: unsent.into(), in_doubt }
    }

    /// The writing loop: what the outbox holds is taken at once, small
    /// messages are put together in batches, everything is fed to the
    /// WebSocket and flushed once. Every await leaves the books whole: a
    /// message is either still in `batch`, or in `small` or `fed`.
    async fn drive(&mut self, outbox: &Outbox) -> Result<(), WireError> {
        loop {
            self.wait_for_work(outbox).await;
            let mut rounds = 0;
            loop {
                let taken = self.batch.len();
                while !self.batch.is_empty() {
                    if self.feed_next().await? {
                        return Ok(());
                    }
                }
                // Before the flush, while messages come several at a time,
                // a turn for whoever else is ready to run: what they queue
                // goes in the same write. A lone message (a round trip)
                // goes at once.
                rounds += 1;
                if taken < 2 || rounds > YIELD_ROUNDS {
                    break;
                }
                tokio::task::yield_now().await;
                if !outbox.try_take_batch(&mut self.batch) {
                    break;
                }
            }
            self.feed_small().await?;
            self.sink.flush().await.map_err(ws_error)?;
            if self.fed_posts > 0 && self.fds.ledger().tracked() > CONFIRM_TRACKED {
                self.fds.confirm();
            }
            self.settle();
        }
    }

    /// Waits for the outbox to hold something; meanwhile, and when work
    /// comes after a wait, asks the kernel what the peer has read of what
    /// was written (a peer answering a message has read it: before the next
    /// is written, the books say so).
    async fn wait_for_work(&mut self, outbox: &Outbox) {
        if outbox.try_take_batch(&mut self.batch) {
            return;
        }
        let mut after = CONFIRM_FIRST;
        loop {
            let unconfirmed = self.worth_confirming();
            tokio::select! {
                biased;
                _ = outbox.take_batch(&mut self.batch) => break,
                _ = tokio::time::sleep(after), if unconfirmed => {
                    self.fds.confirm();
                    self.settle();
                    after = (after * 4).min(CONFIRM_MAX);
                }
            }
        }
        if self.worth_confirming() {
            self.fds.confirm();
            self.settle();
        }
    }

    /// Drops from the books what has started to reach the kernel (its
    /// bytes are no longer needed) and what the peer has read.
    fn settle(&mut self) {
        let ledger = self.fds.ledger();
        while let Some(fed) = self.fed.front() {
            if ledger.fate(self.fed_base) != Fate::Read {
                break;
            }
            self.fed_posts -= fed.posts;
            self.fed.pop_front();
            self.fed_base += 1;
            self.fed_cleared = self.fed_cleared.saturating_sub(1);
        }
        // Those that started since the last look.
        while let Some(fed) = self.fed.get_mut(self.fed_cleared) {
            if ledger.fate(self.fed_base + self.fed_cleared as u64) == Fate::Unsent {
                break;
            }
            fed.msgs = Vec::new();
            self.fed_cleared += 1;
        }
    }

    /// Feeds the next item of `batch`, or holds it back to go with others
    /// in a batch; true once the outbox's end has gone out.
    async fn feed_next(&mut self) -> Result<bool, WireError> {
        let (len, nfds) = match self.batch.front() {
            Some(Outgoing::Frame { bytes, fds }) => (bytes.len(), fds.len()),
            Some(Outgoing::End) => {
                self.feed_small().await?;
                self.sink.flush().await.map_err(ws_error)?;
                self.batch.pop_front();
                // A close frame, then the socket's write side is shut.
                let _ = self.sink.close().await;
                return Ok(true);
            }
            None => return Ok(false),
        };
        // Keep every sendmsg within the kernel's limit: flush what rides
        // ahead before queueing more.
        if nfds > 0 && self.fds.outgoing_len() + nfds > MAX_FDS_PER_SEND {
            self.feed_small().await?;
            self.sink.flush().await.map_err(ws_error)?;
        }
        let entry = frame::BATCH_ENTRY_HEADER + len;
        let alone = len > BATCH_MESSAGE_MAX || BATCH_HEADER + entry > self.max_ws_message;
        if alone || BATCH_HEADER + self.small_bytes + entry > self.max_ws_message {
            self.feed_small().await?;
        }
        let Some(Outgoing::Frame { bytes, fds }) = self.batch.pop_front() else {
            unreachable!("the front was a frame");
        };
        self.fds.push_outgoing(fds);
        let msg = Lent { bytes, nfds };
        if alone {
            let bytes = msg.bytes.clone();
            self.lend(vec![msg]);
            self.sink.feed(Message::Binary(bytes)).await.map_err(ws_error)?;
            return Ok(false);
        }
        self.small_bytes += entry;
        self.small.push(msg);
        if self.small_bytes >= BATCH_TARGET {
            self.feed_small().await?;
        }
        Ok(false)
    }

    /// Puts one WebSocket message's worth on the books, as fed.
    fn lend(&mut self, msgs: Vec<Lent>) {
        if !self.books {
            return;
        }
        let posts = msgs.iter().filter(|m| m.is_post()).count();
        self.fed_posts += posts;
        self.fed.push_back(Fed { msgs, posts });
    }

    /// Feeds the small messages held back: one alone as itself, several as
    /// a batch.
    async fn feed_small(&mut self) -> Result<(), WireError> {
        let msg = match self.small.len() {
            0 => return Ok(()),
            1 => self.small[0].bytes.clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(BATCH_HEADER + self.small_bytes);
                frame::begin(&mut buf, Kind::Batch, 0, 0, 0);
                for msg in &self.small {
                    frame::push_batch_entry(&mut buf, &msg.bytes);
                }
                buf.freeze()
            }
        };
        self.small_bytes = 0;
        let small = std::mem::take(&mut self.small);
        self.lend(small);
        self.sink.feed(Message::Binary(msg)).await.map_err(ws_error)
    }
}
