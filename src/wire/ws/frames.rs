//! Our reading half of the WebSocket ([`Frames`]), kept beside
//! tungstenite's writing half (`sink.rs`): tungstenite's reader zero-fills
//! its whole read buffer before every read, and this one does not. Frame
//! headers are read through `wsframe.rs`.

use bytes::{Bytes, BytesMut};

use crate::error::WireError;
use crate::wire::envelope::{Kind, MAX_BATCH};
use crate::wire::stream::queues::TooManyUnclaimed;
use crate::wire::stream::reader::FdReader;
use crate::wire::wsframe::{self, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};

/// Room for the envelope header on top of the user's message size limit.
pub(super) const HEADER_SLACK: usize = 64;

/// The reading half of the WebSocket: frames read straight from the
/// socket into a buffer of ours, without zero-filling it first (as
/// tungstenite does, up to its whole read buffer, before every read).
///
/// Takes binary messages (whole, or in fragments), masked or not; a text
/// message is an error; pings and pongs are skipped (no peer of ours sends
/// them, and this side does not answer them); a close frame ends the
/// connection.
pub(super) struct Frames {
    io: FdReader,
    buf: BytesMut,
    /// The size of `buf`'s allocation when it was made for a large frame,
    /// else 0 (see [`room`](Self::room)).
    large: usize,
    /// The last large frame's buffer, once given up, and the size of its
    /// allocation.
    spare: Option<BytesMut>,
    spare_size: usize,
    /// When the last large frame began: a buffer over [`SPARE_KEEP`], kept
    /// or read into, goes [`SPARE_IDLE`] after.
    large_at: Option<tokio::time::Instant>,
    /// A message in fragments, so far.
    partial: Option<BytesMut>,
    /// The largest message taken, a batch apart: a batch is taken up to
    /// [`MAX_BATCH`] whatever this is (a writer batches small messages up
    /// to its own limit, which may be larger than ours), each of its
    /// messages held to this by the reader, and never beyond.
    max: usize,
    /// The peer's close frame came.
    pub(super) closed: bool,
    /// Bytes of whole frames taken so far.
    pub(super) taken: u64,
    /// What the peer's close said it took of ours (`read N`), if it did.
    pub(super) peer_took: Option<u64>,
    /// Frames taken that made no message (pings, pongs, fragments, empty
    /// batches), since the reading last let other tasks run.
    idle: usize,
}

/// How much room a read is given at least.
const READ_CHUNK: usize = 64 << 10;
/// A large frame's buffer is kept for the next one up to this size (the
/// encoder keeps the last large message's as much, `encode.rs`); a larger
/// one (up to the message size bound) only while large frames keep coming:
/// it goes when no large frame has come for [`SPARE_IDLE`].
const SPARE_KEEP: usize = 4 << 20;
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_millis(100);
/// A frame is large, read into a buffer of its own, when this much more of
/// it is still to come: more than a batch of small messages (up to 68
/// KiB), which are read as before.
const LARGE_FRAME: usize = 256 << 10;

impl Frames {
    pub(super) fn new(io: FdReader, max: usize) -> Self {
        Frames {
            io,
            buf: BytesMut::new(),
            large: 0,
            spare: None,
            spare_size: 0,
            large_at: None,
            partial: None,
            max,
            closed: false,
            taken: 0,
            peer_took: None,
            idle: 0,
        }
    }

    /// The next binary message's bytes; `None` at the end of the
    /// connection (a close frame, or the end of the stream between frames).
    pub(super) async fn next(&mut self) -> Option<Result<Bytes, WireError>> {
        loop {
            match self.parse() {
                Ok(Parsed::Message(bytes)) => return Some(Ok(bytes)),
                Ok(Parsed::Closed) => {
                    self.closed = true;
                    return None;
                }
                Ok(Parsed::More(wanted)) => self.room(wanted),
                Ok(Parsed::Idle) => {
                    self.let_others_run().await;
                    continue;
                }
                Err(e) => return Some(Err(e)),
            }
            let read = self.read().await;
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

    /// Room in the buffer for `wanted` more bytes. A large frame (see
    /// [`LARGE_FRAME`]) is read into a buffer of its own, its exact size; the last one given up
    /// (up to [`SPARE_KEEP`]) is kept, and read into again once every
    /// message read from it has been dropped. Fresh memory costs a page
    /// fault per page as the kernel copies into it: with the messages'
    /// bytes no longer copied out of the frame (`InlineBytes`), the frame
    /// is the only buffer they are written to, and its faults were a
    /// quarter of a worker's time taking 1 MiB messages. A buffer nothing
    /// read from it holds any more is read into again in place, whatever
    /// its size (as `reserve` does).
    fn room(&mut self, wanted: usize) {
        if self.buf.capacity() - self.buf.len() >= wanted.max(1) {
            return;
        }
        let large = wanted > LARGE_FRAME;
        if large {
            self.large_at = Some(tokio::time::Instant::now());
        }
        if !large && self.large == 0 {
            self.buf.reserve(wanted.max(READ_CHUNK));
            return;
        }
        let needed = self.buf.len() + wanted.max(READ_CHUNK);
        if self.buf.try_reclaim(needed - self.buf.len()) {
            return;
        }
        // A spare still held by a message read from it stays for the next.
        let reused = large && self.spare_reclaims(needed);
        let mut next = match reused {
            true => self.spare.take().unwrap_or_default(),
            false => BytesMut::with_capacity(needed),
        };
        let size = if large { next.capacity() } else { 0 };
        next.extend_from_slice(&self.buf);
        let given_up = std::mem::replace(&mut self.buf, next);
        let was = std::mem::replace(&mut self.large, size);
        // The buffer given up becomes the spare, unless the spare is free
        // already (nothing read from it is held): the one given up is
        // still held by the message just read from it.
        if was != 0 && !self.spare_reclaims(self.spare_size) {
            (self.spare, self.spare_size) = (Some(given_up), was);
        }
    }

    /// Whether the spare, emptied, has room for `n` bytes: nothing read
    /// from it is held any more (and it is large enough).
    fn spare_reclaims(&mut self, n: usize) -> bool {
        self.spare.as_mut().is_some_and(|spare| {
            spare.clear();
            spare.try_reclaim(n)
        })
    }

    /// One read into the buffer. A buffer over [`SPARE_KEEP`], the spare
    /// or the one read into (between frames), is let go when no large frame
    /// has begun for [`SPARE_IDLE`]: while the reader waits, or as soon as
    /// it reads again.
    async fn read(&mut self) -> std::io::Result<usize> {
        let mut until = self.large_at.filter(|_| self.holds_big()).map(|at| at + SPARE_IDLE);
        if until.is_some_and(|until| until <= tokio::time::Instant::now()) {
            self.let_big_go();
            until = None;
        }
        let read = std::future::poll_fn(|cx| self.io.poll_recv(cx, &mut self.buf));
        let Some(until) = until else {
            return read.await;
        };
        match tokio::time::timeout_at(until, read).await {
            Ok(read) => read,
            Err(_) => {
                self.let_big_go();
                std::future::poll_fn(|cx| self.io.poll_recv(cx, &mut self.buf)).await
            }
        }
    }

    /// Whether a buffer over [`SPARE_KEEP`] is kept that could be let go.
    fn holds_big(&self) -> bool {
        let spare = self.spare.is_some() && self.spare_size > SPARE_KEEP;
        spare || (self.large > SPARE_KEEP && self.buf.is_empty())
    }

    fn let_big_go(&mut self) {
        if self.spare_size > SPARE_KEEP {
            (self.spare, self.spare_size) = (None, 0);
        }
        // Empty, the buffer waits for the next frame's header: the read
        // it was given room for gets a small buffer's room instead (with
        // none, a TLS read took 0 bytes for the end of the connection).
        if self.large > SPARE_KEEP && self.buf.is_empty() {
            (self.buf, self.large) = (BytesMut::with_capacity(READ_CHUNK), 0);
        }
        self.large_at = None;
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
            // Frames that make no message are taken 1,024 at a time: a
            // peer sending nothing else would hold the thread for as long
            // as it kept writing.
            if self.idle >= IDLE_FRAMES {
                return Ok(Parsed::Idle);
            }
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
            if let Some(wanted) = self.over_the_limit(&head, opcode)? {
                return Ok(Parsed::More(wanted));
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
            self.idle += 1;
        }
    }
}

impl Frames {
    /// A message the reader took made none of its own (an empty batch):
    /// counted with the frames that made none.
    pub(super) fn made_nothing(&mut self) {
        self.idle += 1;
    }

    /// Lets other tasks run, once [`IDLE_FRAMES`] frames made no message.
    /// The count starts again only once they have: a future dropped at the
    /// yield (`Reader::next_ready`'s `now_or_never`, a `select!`) let
    /// nothing run, and the next one yields again at once.
    async fn let_others_run(&mut self) {
        tokio::task::yield_now().await;
        self.idle = 0;
    }

    /// Refuses a frame of header `head` that makes its message too large:
    /// over the limit only a batch may go, up to the largest. Its kind is
    /// the message's first byte, waited for (`Some` of the bytes wanted)
    /// when the size alone does not refuse it.
    fn over_the_limit(&self, head: &wsframe::Head, opcode: u8) -> Result<Option<usize>, WireError> {
        let so_far = self.partial.as_ref().map_or(0, BytesMut::len) as u64;
        let total = head.payload.saturating_add(so_far);
        if total <= self.max.min(MAX_BATCH) as u64 || wsframe::is_control(opcode) {
            return Ok(None);
        }
        let size = usize::try_from(total).unwrap_or(usize::MAX);
        let over_all = size > self.max.max(MAX_BATCH);
        match self.kind_of(head) {
            None if over_all => Err(self.too_large(size)),
            None => Ok(Some(head.len + 1 - self.buf.len())),
            Some(kind) if kind == Kind::Batch as u8 && size > MAX_BATCH => {
                Err(WireError::BatchTooLarge { size, limit: MAX_BATCH })
            }
            Some(kind) if kind != Kind::Batch as u8 && self.over(size) => Err(self.too_large(size)),
            Some(_) => Ok(None),
        }
    }

    /// The kind (first byte) of the message a frame of header `head`
    /// begins or goes on, once it has come.
    fn kind_of(&self, head: &wsframe::Head) -> Option<u8> {
        if let Some(&first) = self.partial.as_ref().and_then(|partial| partial.first()) {
            return Some(first);
        }
        let first = *self.buf.get(head.len)?;
        Some(first ^ head.mask.map_or(0, |mask| mask[0]))
    }

    /// A message of `size` bytes is over the limit.
    pub(super) fn too_large(&self, size: usize) -> WireError {
        WireError::TooLarge { size, limit: self.max.saturating_sub(HEADER_SLACK) }
    }

    /// Whether one message of `size` bytes (in a batch) is over the limit.
    pub(super) fn over(&self, size: usize) -> bool {
        size > self.max
    }
}

/// Frames that make no message taken before the reading lets other tasks
/// run (a message taken lets the session count it: `endpoint.rs`).
const IDLE_FRAMES: usize = 1024;

/// What the buffer holds.
enum Parsed {
    /// [`IDLE_FRAMES`] frames made no message.
    Idle,
    Message(Bytes),
    Closed,
    /// At least this many more bytes are needed.
    More(usize),
}

#[cfg(test)]
mod tests;
