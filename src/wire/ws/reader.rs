//! The reading half of a connection: WebSocket messages (from
//! `frames.rs`) as [`Inbound`] messages, batches taken apart, each with
//! the descriptors its envelope claims.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use super::frames::Frames;
use crate::error::WireError;
use crate::protocol::Codec;
use crate::wire::codec;
use crate::wire::envelope::{self, Header, Kind};
use crate::wire::inline;
use crate::wire::stream::queues::FdQueues;
use crate::wire::trace::{context_bytes, TraceContext};

/// A received message: its header, its payload and its descriptors.
pub(crate) struct Inbound {
    pub header: Header,
    bytes: Bytes,
    offset: usize,
    pub fds: Vec<OwnedFd>,
    /// How its payload is written: its connection's codec.
    pub codec: Codec,
    /// The most bytes its shared buffers may hold together (see
    /// `Limits::max_shared_bytes`).
    pub max_shared: usize,
}

impl Inbound {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }

    /// The trace context of a traced request, checked; `None` for any
    /// other message.
    pub(crate) fn trace_context(&self) -> Option<Result<TraceContext, WireError>> {
        context_bytes(&self.bytes[..self.offset]).map(TraceContext::from_bytes)
    }

    /// Its payload decoded (one without shared buffers: see
    /// `shared::carry::decode_with` for those).
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, WireError> {
        self.decoding(|payload| codec::decode_as(self.codec, payload))
    }

    /// `decode` of its payload, during which large inline bytes decoded
    /// refer to the message as received rather than copy it (see
    /// `inline.rs`).
    pub(crate) fn decoding<R>(&self, decode: impl FnOnce(&[u8]) -> R) -> R {
        // A message too small for its buffers to be referenced (see
        // `inline::referenced`) decodes as it is.
        if self.bytes.len() < inline::REFERENCED_MESSAGE_FROM {
            return decode(self.payload());
        }
        inline::decoding_from(&self.bytes, || decode(self.payload()))
    }
}

/// The reading half.
pub(crate) struct Reader {
    frames: Frames,
    fds: Arc<FdQueues>,
    /// A batch being read, and where its next message starts.
    batch: Option<(Bytes, usize)>,
    codec: Codec,
    /// The most bytes a message's shared buffers may hold together.
    max_shared: usize,
    /// A flood of descriptors was told ([`WireError::UnclaimedFds`]): they
    /// are not told again when the reader closes them.
    flood_told: bool,
}

impl Reader {
    /// The reading half of a connection: `frames` as read, the
    /// descriptors in `fds`; bincode until the hellos say otherwise.
    pub(super) fn new(frames: Frames, fds: Arc<FdQueues>) -> Self {
        Reader {
            frames,
            fds,
            batch: None,
            codec: Codec::default(),
            max_shared: usize::MAX,
            flood_told: false,
        }
    }

    /// How the connection's payloads are written, once the hellos said.
    pub(crate) fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// The shared buffers of one message may hold at most `max` bytes
    /// together (the parent's bound on what a worker makes it hold).
    pub(crate) fn set_max_shared(&mut self, max: usize) {
        self.max_shared = max;
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
                return Some(inbound(bytes, &self.fds, self.codec, self.max_shared));
            }
            // A batch's header is its kind and a descriptor count of 0.
            if bytes[1] != 0 {
                return Some(Err(WireError::Unexpected("descriptors on a batch")));
            }
            // No writer makes one larger than `MAX_BATCH` (it would only
            // flood the reader with messages, all at once): `Frames`
            // refused it as soon as its first byte said it was a batch.
            // An empty batch makes no message: counted with the frames
            // that make none, which are taken so many at a time.
            if bytes.len() == 2 {
                self.frames.made_nothing();
            }
            self.batch = Some((bytes, 2));
        }
    }

    /// The next message of the batch being read, if any.
    fn next_in_batch(&mut self) -> Option<Result<Inbound, WireError>> {
        let (bytes, pos) = self.batch.as_mut()?;
        match envelope::batch_entry(bytes, *pos) {
            Ok(Some(range)) if self.frames.over(range.len()) => {
                self.batch = None;
                Some(Err(self.frames.too_large(range.len())))
            }
            Ok(Some(range)) => {
                *pos = range.end;
                let msg = bytes.slice(range);
                if msg.first() == Some(&(Kind::Batch as u8)) {
                    self.batch = None;
                    return Some(Err(WireError::Unexpected("a batch inside a batch")));
                }
                Some(inbound(msg, &self.fds, self.codec, self.max_shared))
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
        // The rest of a batch, without a future made and polled for each.
        if let Some(item) = self.next_in_batch() {
            return Some(Some(item));
        }
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
pub(super) async fn next_inbound(
    frames: &mut Frames,
    fds: &FdQueues,
) -> Option<Result<Inbound, WireError>> {
    Some(match frames.next().await? {
        Ok(bytes) => inbound(bytes, fds, Codec::default(), 0),
        Err(e) => Err(e),
    })
}

/// One message: its header read, its descriptors claimed.
fn inbound(
    bytes: Bytes,
    fds: &FdQueues,
    codec: Codec,
    max_shared: usize,
) -> Result<Inbound, WireError> {
    let (header, offset) = match envelope::decode(&bytes) {
        Ok((header, payload)) => (header, bytes.len() - payload.len()),
        Err(e) => return Err(e),
    };
    let wanted = usize::from(header.nfds);
    if wanted > crate::wire::MAX_FDS_PER_MESSAGE {
        return Err(WireError::TooManyFds {
            count: wanted,
            limit: crate::wire::MAX_FDS_PER_MESSAGE,
        });
    }
    let Some(taken) = fds.take_incoming(wanted) else {
        return Err(WireError::MissingFds { claimed: wanted, available: fds.unclaimed() });
    };
    Ok(Inbound { header, bytes, offset, fds: taken, codec, max_shared })
}
