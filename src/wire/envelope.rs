//! The envelope: a small fixed header in front of every WebSocket message.
//!
//! ```text
//! byte 0      kind (see Kind)
//! byte 1      how many descriptors belong to this message
//! bytes 2..   kind-specific fixed fields (little endian), then the payload
//! ```
//!
//! The header is written by hand, not by serde: it is flat by construction,
//! decoding it cannot allocate, and its layout (the hello in particular) stays
//! readable by builds of other versions, so a mismatch is reported as such
//! rather than as garbage.

use bytes::BufMut;

use crate::error::WireError;
use crate::protocol::Codec;

/// The protocol version this build speaks; bumped on any change to this file
/// or to how payloads are encoded.
pub(crate) const PROTOCOL_VERSION: u32 = 8;

/// The first bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"AWW\x01";

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// First message each way: magic, version, fingerprint, pid.
    Hello = 1,
    /// A posted message; payload is the user's message.
    Post = 2,
    /// A request: id, type tag; payload is the request.
    Request = 3,
    /// The answer to request `id`; payload is the answer.
    Answer = 4,
    /// Request `id` failed on the other side; payload is a `Failure`.
    Failed = 5,
    /// An uncaught error in the worker; payload is an `ErrorReport`.
    Error = 6,
    /// Parent → worker: run `on_close` and exit.
    Terminate = 7,
    /// Worker → parent: the worker closes itself (`close()`), a clean exit follows.
    Closing = 8,
    /// Several messages in one: after the header, each as a 4-byte little
    /// endian length and the message (header and payload). Small messages
    /// written together travel this way, so the WebSocket's per-message
    /// cost is paid once per batch. Never nested; carries no descriptors
    /// of its own (its messages do).
    Batch = 9,
    /// Worker → parent, instead of its hello: it cannot run what it was
    /// started for; payload is an `EntryRefusal`. It exits after.
    Refused = 10,
    /// The asker of request `id` no longer waits for it (its timeout fired,
    /// or its caller went away): the answering side stops working on it if
    /// it can, and sends nothing back. No payload.
    Cancel = 11,
    /// Worker → parent, first on a TCP connection, before any hello: the
    /// one-time token of this launch (its payload, ASCII). Nothing is
    /// served before it has been checked.
    Auth = 12,
    /// Parent → worker: are you there? (see `heartbeat` on the builder).
    /// The worker answers with a Pong at once. No payload.
    Ping = 13,
    /// Worker → parent: the answer to a Ping. No payload.
    Pong = 14,
    /// Parent → worker, first after the hellos when the parent's hello
    /// says so: the worker's data (`workerData`); its fixed field is the
    /// shape of the value's type, its payload the value.
    Data = 15,
    /// One item of the streamed answer to request `id`; payload is the
    /// item. Sent only while the asker's window has room (see `Credit`).
    Item = 16,
    /// The streamed answer to request `id` is complete: no more items.
    /// No payload. (A stream that fails ends with `Failed` instead.)
    End = 17,
    /// The asker of stream `id` has room for `tag` more bytes of items:
    /// what it has read since it last said. Fixed fields: id u64, bytes
    /// u64. No payload.
    Credit = 18,
    /// A request answered by a stream of items: id u64, tag u64, and the
    /// asker's window u64 (the bytes of items it takes before its first
    /// credit); payload is the request.
    Stream = 19,
    /// A `Request` with its asker's trace context after id and tag (`trace.rs`).
    TracedRequest = 24,
    /// A `Stream` with its asker's trace context after id, tag and window.
    TracedStream = 25,
}

/// Bytes of a traced request's context, after its id and tag (`trace.rs`).
pub(crate) const CONTEXT_LEN: usize = 16 + 8 + 1;

/// The hello's flag saying that a `Data` message follows the hellos.
pub(crate) const HELLO_DATA_FOLLOWS: u8 = 1;

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Post,
            3 => Kind::Request,
            4 => Kind::Answer,
            5 => Kind::Failed,
            6 => Kind::Error,
            7 => Kind::Terminate,
            8 => Kind::Closing,
            9 => Kind::Batch,
            10 => Kind::Refused,
            11 => Kind::Cancel,
            12 => Kind::Auth,
            13 => Kind::Ping,
            14 => Kind::Pong,
            15 => Kind::Data,
            16 => Kind::Item,
            17 => Kind::End,
            18 => Kind::Credit,
            19 => Kind::Stream,
            24 => Kind::TracedRequest,
            25 => Kind::TracedStream,
            _ => return None,
        })
    }

    /// What a message of this kind is, in an error that names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Post => "post",
            Kind::Request => "request",
            Kind::Answer => "answer",
            Kind::Failed => "failure",
            Kind::Error => "error report",
            Kind::Terminate => "terminate",
            Kind::Closing => "closing",
            Kind::Batch => "batch",
            Kind::Refused => "refusal",
            Kind::Cancel => "cancel",
            Kind::Auth => "token",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::Data => "worker data",
            Kind::Item => "stream item",
            Kind::End => "stream end",
            Kind::Credit => "stream credit",
            Kind::Stream => "stream request",
            Kind::TracedRequest => "traced request",
            Kind::TracedStream => "traced stream request",
        }
    }

    /// Bytes of fixed fields after the two common bytes.
    fn fixed_len(self) -> usize {
        match self {
            Kind::Hello => 4 + 4 + 8 + 4,
            Kind::Stream => 8 + 8 + 8,
            Kind::Request | Kind::Credit => 8 + 8,
            Kind::TracedRequest => 8 + 8 + CONTEXT_LEN,
            Kind::TracedStream => 8 + 8 + 8 + CONTEXT_LEN,
            Kind::Answer | Kind::Failed | Kind::Cancel | Kind::Data | Kind::Item | Kind::End => 8,
            Kind::Post
            | Kind::Error
            | Kind::Terminate
            | Kind::Closing
            | Kind::Batch
            | Kind::Refused
            | Kind::Auth
            | Kind::Ping
            | Kind::Pong => 0,
        }
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub nfds: u8,
    /// Correlation id (requests, answers, failures), else 0.
    pub id: u64,
    /// Request type tag (requests), the data's shape (`Data`), else 0.
    pub tag: u64,
    /// Bytes of stream items: the window (`Stream`), the bytes granted
    /// (`Credit`); else 0.
    pub credit: u64,
}

/// The hello's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u32,
    pub fingerprint: u64,
    pub pid: u32,
    /// How payloads are written on this connection: the parent's choice,
    /// echoed by the worker (from version 5; bincode before).
    pub codec: Codec,
    /// From version 6: [`HELLO_DATA_FOLLOWS`], or 0.
    pub flags: u8,
}

impl Header {
    /// A header of `kind` with no descriptors, id or tag.
    pub(crate) fn bare(kind: Kind) -> Header {
        Header { kind, nfds: 0, id: 0, tag: 0, credit: 0 }
    }

    /// A post carrying `nfds` descriptors (at most
    /// [`MAX_FDS_PER_MESSAGE`](super::MAX_FDS_PER_MESSAGE)).
    pub(crate) fn post(nfds: usize) -> Result<Header, WireError> {
        let limit = super::MAX_FDS_PER_MESSAGE;
        if nfds > limit {
            return Err(WireError::TooManyFds { count: nfds, limit });
        }
        Ok(Header { nfds: nfds as u8, ..Header::bare(Kind::Post) })
    }

    /// Request `id`, of the type `tag` names.
    pub(crate) fn request(id: u64, tag: u64) -> Header {
        Header { id, tag, ..Header::bare(Kind::Request) }
    }

    /// The header of the answer to request `id`.
    pub(crate) fn reply_to(id: u64) -> Header {
        Header { id, ..Header::bare(Kind::Answer) }
    }

    /// Request `id` failed.
    pub(crate) fn failed(id: u64) -> Header {
        Header { id, ..Header::bare(Kind::Failed) }
    }

    /// Request `id` is no longer waited for.
    pub(crate) fn cancel(id: u64) -> Header {
        Header { id, ..Header::bare(Kind::Cancel) }
    }

    /// Request `id`, of the type `tag` names, answered by a stream of
    /// items of which the asker takes `window` bytes before its first
    /// credit.
    pub(crate) fn stream(id: u64, tag: u64, window: u64) -> Header {
        Header { id, tag, credit: window, ..Header::bare(Kind::Stream) }
    }

    /// An item of the stream that answers request `id`.
    pub(crate) fn item(id: u64) -> Header {
        Header { id, ..Header::bare(Kind::Item) }
    }

    /// A worker's data, of the type whose shape is `shape`.
    pub(crate) fn data(shape: u64) -> Header {
        Header { tag: shape, ..Header::bare(Kind::Data) }
    }
}

/// Appends `header` to `buf` (empty: a message starts there); the payload
/// is appended after it.
pub(crate) fn begin(buf: &mut impl BufMut, header: Header) {
    buf.put_u8(header.kind as u8);
    buf.put_u8(header.nfds);
    match header.kind {
        Kind::Request | Kind::TracedRequest => {
            buf.put_u64_le(header.id);
            buf.put_u64_le(header.tag);
        }
        Kind::Stream | Kind::TracedStream => {
            buf.put_u64_le(header.id);
            buf.put_u64_le(header.tag);
            buf.put_u64_le(header.credit);
        }
        Kind::Credit => {
            buf.put_u64_le(header.id);
            buf.put_u64_le(header.credit);
        }
        Kind::Answer | Kind::Failed | Kind::Cancel | Kind::Item | Kind::End => {
            buf.put_u64_le(header.id)
        }
        Kind::Data => buf.put_u64_le(header.tag),
        _ => {}
    }
}

/// A whole message of a kind that has no fields and no payload
/// (terminate, closing).
pub(crate) fn bare(kind: Kind) -> bytes::Bytes {
    debug_assert_eq!(kind.fixed_len(), 0);
    bytes::Bytes::from(vec![kind as u8, 0])
}

/// A whole `Cancel` message for request `id`.
pub(crate) fn cancel(id: u64) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::with_capacity(10);
    begin(&mut buf, Header::cancel(id));
    buf.freeze()
}

/// A whole `End` message for stream `id`.
pub(crate) fn end(id: u64) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::with_capacity(10);
    begin(&mut buf, Header { id, ..Header::bare(Kind::End) });
    buf.freeze()
}

/// A whole `Credit` message: stream `id` may send `bytes` more.
pub(crate) fn credit(id: u64, bytes: u64) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::with_capacity(18);
    begin(&mut buf, Header { id, credit: bytes, ..Header::bare(Kind::Credit) });
    buf.freeze()
}

/// A complete hello message; `flags` says what follows it (see
/// [`HELLO_DATA_FOLLOWS`]).
pub(crate) fn hello(fingerprint: u64, codec: Codec, flags: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + Kind::Hello.fixed_len() + 2);
    buf.push(Kind::Hello as u8);
    buf.push(0);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    buf.extend_from_slice(&fingerprint.to_le_bytes());
    buf.extend_from_slice(&std::process::id().to_le_bytes());
    buf.push(codec.to_wire());
    buf.push(flags);
    buf
}

/// Splits a message into its header and payload.
pub(crate) fn decode(msg: &[u8]) -> Result<(Header, &[u8]), WireError> {
    let (&kind, rest) = msg.split_first().ok_or(WireError::Truncated { needed: 2, got: 0 })?;
    let kind = Kind::from_u8(kind).ok_or(WireError::UnknownKind(kind))?;
    let (&nfds, rest) = rest.split_first().ok_or(WireError::Truncated { needed: 2, got: 1 })?;
    let fixed = kind.fixed_len();
    if rest.len() < fixed {
        return Err(WireError::Truncated { needed: 2 + fixed, got: msg.len() });
    }
    let (fields, payload) = rest.split_at(fixed);
    let (id, tag, credit) = match kind {
        Kind::Request | Kind::TracedRequest => (le_u64(&fields[..8]), le_u64(&fields[8..16]), 0),
        Kind::Stream | Kind::TracedStream => {
            (le_u64(&fields[..8]), le_u64(&fields[8..16]), le_u64(&fields[16..24]))
        }
        Kind::Credit => (le_u64(&fields[..8]), 0, le_u64(&fields[8..16])),
        Kind::Answer | Kind::Failed | Kind::Cancel | Kind::Item | Kind::End => {
            (le_u64(fields), 0, 0)
        }
        Kind::Data => (0, le_u64(fields), 0),
        _ => (0, 0, 0),
    };
    let header = Header { kind, nfds, id, tag, credit };
    if kind == Kind::Hello {
        // Its fixed fields, then what later versions added (read by
        // `read_hello` once it knows the version).
        return Ok((header, rest));
    }
    Ok((header, payload))
}

mod batch;
pub(crate) use batch::*;

/// Why a worker refused to run: the payload of a `Refused` message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct EntryRefusal {
    /// The entry it was started for.
    pub entry: String,
    /// The entries it knows.
    pub known: Vec<String>,
    /// From version 6: the requests its protocol declares that the entry
    /// does not answer, by their Rust paths; when there are any, the entry
    /// exists and this is why it refused. (Missing in JSON: none.)
    #[serde(default)]
    pub unanswered: Vec<String>,
}

/// Reads a hello's fields (the slice [`decode`] returns for `Kind::Hello`).
pub(crate) fn read_hello(fields: &[u8]) -> Result<Hello, WireError> {
    let fixed = Kind::Hello.fixed_len();
    if fields.len() < fixed || fields[..4] != MAGIC {
        return Err(WireError::NotAHello);
    }
    let version = le_u32(&fields[4..8]);
    // Up to version 4 the hello ends here; in 5 a codec byte follows, in 6
    // the codec and the flags. A hello of another version is read as far
    // as its version, so that the mismatch can be told as such.
    let codec = |n: u8| Codec::from_wire(n).ok_or(WireError::UnknownCodec(n));
    let (codec, flags) = match (version, &fields[fixed..]) {
        (..=4, _) => (Codec::Bincode, 0),
        (5, [n]) => (codec(*n)?, 0),
        (6 | 7 | PROTOCOL_VERSION, [n, flags]) => (codec(*n)?, *flags),
        (5..=PROTOCOL_VERSION, _) => return Err(WireError::NotAHello),
        (_, [n, ..]) => (codec(*n)?, 0),
        _ => (Codec::Bincode, 0),
    };
    let (fingerprint, pid) = (le_u64(&fields[8..16]), le_u32(&fields[16..20]));
    Ok(Hello { version, fingerprint, pid, codec, flags })
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
