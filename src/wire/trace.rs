//! The trace context a request carries across the process boundary: what
//! the asking side's span is known by to whoever collects traces, so that
//! the answering side's span can be joined to it.
//!
//! Not a `tracing` span id: those are numbers a subscriber hands out in
//! one process and mean nothing in another. What travels is the pair of
//! ids of the W3C `traceparent` (a 16-byte trace id, the 8-byte id of the
//! asking span) and its flags byte: an OpenTelemetry user's context maps
//! onto it one to one (see docs/tracing.md), and with no OpenTelemetry the
//! crate makes its own ids of the same shape (`session/trace.rs`).
//!
//! ```text
//! bytes 0..16   trace id, not all zero
//! bytes 16..24  span id of the asking span, not all zero
//! byte  24      flags: bit 0 sampled; the other bits reserved, zero
//! ```
//!
//! The context sits between a traced request's id and tag and its
//! payload ([`begin_traced`], [`context_bytes`]).

use std::cell::Cell;

use bytes::BufMut;

pub(crate) use super::envelope::CONTEXT_LEN;
use super::envelope::{begin, Header, Kind};
use crate::error::WireError;

/// The flag bits this version defines: only "sampled".
const KNOWN_FLAGS: u8 = TraceContext::SAMPLED;

/// Where a request's asking span sits in a trace: the trace's id, the
/// asking span's id, and the W3C trace flags. It is what travels with a
/// request (see docs/tracing.md); a [`Propagator`](crate::Propagator)
/// makes it from a span and attaches a span to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id: the same on every span of one trace, in every
    /// process. Never all zero.
    pub trace_id: [u8; 16],
    /// The id of the span on the asking side. Never all zero.
    pub span_id: [u8; 8],
    /// W3C trace flags: [`TraceContext::SAMPLED`], or 0.
    pub flags: u8,
}

impl TraceContext {
    /// The W3C "sampled" flag.
    pub const SAMPLED: u8 = 1;

    /// A context of these ids and flags.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Self {
        TraceContext { trace_id, span_id, flags }
    }

    /// The trace id as 32 lower-case hex digits (as `traceparent` writes it).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// A context in the trace `trace_id` (a new one when `None`), for a
    /// span of the crate's own making: its id is fresh, it is sampled.
    pub(crate) fn fresh(trace_id: Option<[u8; 16]>) -> Self {
        let trace_id = trace_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&nonzero_random().to_le_bytes());
            id[8..].copy_from_slice(&nonzero_random().to_le_bytes());
            id
        });
        TraceContext { trace_id, span_id: nonzero_random().to_le_bytes(), flags: Self::SAMPLED }
    }

    /// Its bytes on the wire.
    pub(crate) fn to_bytes(self) -> [u8; CONTEXT_LEN] {
        let mut out = [0u8; CONTEXT_LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// A context read from the wire, checked: ids that are all zero (the
    /// W3C's "invalid") and reserved flag bits are refused.
    pub(crate) fn from_bytes(bytes: &[u8; CONTEXT_LEN]) -> Result<Self, WireError> {
        let mut cx = TraceContext { trace_id: [0; 16], span_id: [0; 8], flags: bytes[24] };
        cx.trace_id.copy_from_slice(&bytes[..16]);
        cx.span_id.copy_from_slice(&bytes[16..24]);
        if cx.trace_id == [0; 16] {
            return Err(WireError::BadTraceContext("a trace id of zeros"));
        }
        if cx.span_id == [0; 8] {
            return Err(WireError::BadTraceContext("a span id of zeros"));
        }
        if cx.flags & !KNOWN_FLAGS != 0 {
            return Err(WireError::BadTraceContext("reserved flag bits set"));
        }
        Ok(cx)
    }
}

/// The header of request `id` of type `tag`, traced: its context follows
/// (see [`begin_traced`]).
pub(crate) fn traced_request(id: u64, tag: u64) -> Header {
    Header { id, tag, ..Header::bare(Kind::TracedRequest) }
}

/// The header of streamed request `id` of type `tag` granting `window`,
/// traced: its context follows (see [`begin_traced`]).
pub(crate) fn traced_stream(id: u64, tag: u64, window: u64) -> Header {
    Header { id, tag, credit: window, ..Header::bare(Kind::TracedStream) }
}

/// Where a traced kind's context starts: after its common bytes and its
/// fixed fields.
fn context_at(kind: u8) -> Option<usize> {
    match kind {
        k if k == Kind::TracedRequest as u8 => Some(2 + 16),
        k if k == Kind::TracedStream as u8 => Some(2 + 24),
        _ => None,
    }
}

/// [`begin`], then, for a traced request (answered once or by a stream),
/// its context's bytes: what a request's header is when it travels with
/// one.
pub(crate) fn begin_traced(
    buf: &mut impl BufMut,
    header: Header,
    context: Option<&[u8; CONTEXT_LEN]>,
) {
    begin(buf, header);
    if let (Kind::TracedRequest | Kind::TracedStream, Some(context)) = (header.kind, context) {
        buf.put_slice(context);
    }
}

/// The context bytes of a traced request's message (its whole bytes, as
/// [`decode`] takes them); `None` for any other kind.
pub(crate) fn context_bytes(msg: &[u8]) -> Option<&[u8; CONTEXT_LEN]> {
    let at = context_at(*msg.first()?)?;
    msg.get(at..at + CONTEXT_LEN).and_then(|b| b.try_into().ok())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A random, non-zero 64-bit number: a per-thread xorshift, seeded from
/// the standard library's random hasher keys. Ids need to be unique, not
/// unguessable.
fn nonzero_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish() | 1
        });
    }
    STATE.with(|state| loop {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        if x != 0 {
            return x;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::decode;

    #[test]
    fn a_traced_request_carries_its_context_between_header_and_payload() {
        let context = [5u8; CONTEXT_LEN];
        let mut buf = Vec::new();
        begin_traced(&mut buf, traced_request(42, 7), Some(&context));
        buf.extend_from_slice(b"payload");
        assert_eq!(buf.len(), 2 + 16 + CONTEXT_LEN + 7);
        let (h, payload) = decode(&buf).unwrap();
        assert_eq!((h.kind, h.id, h.tag), (Kind::TracedRequest, 42, 7));
        assert_eq!(payload, b"payload");
        assert_eq!(context_bytes(&buf), Some(&context));
        // A plain request has none, and is written as before.
        let mut plain = Vec::new();
        begin_traced(&mut plain, Header::request(42, 7), Some(&context));
        assert_eq!(plain.len(), 18);
        assert_eq!(context_bytes(&plain), None);
        // Cut anywhere before its payload: truncated, never a short context.
        for cut in 2..2 + 16 + CONTEXT_LEN {
            assert!(matches!(decode(&buf[..cut]), Err(WireError::Truncated { .. })), "{cut}");
        }
    }

    #[test]
    fn a_traced_stream_request_carries_its_context_after_its_window() {
        let context = [6u8; CONTEXT_LEN];
        let mut buf = Vec::new();
        begin_traced(&mut buf, traced_stream(43, 8, 65536), Some(&context));
        buf.extend_from_slice(b"req");
        assert_eq!(buf.len(), 2 + 24 + CONTEXT_LEN + 3);
        let (h, payload) = decode(&buf).unwrap();
        assert_eq!((h.kind, h.id, h.tag, h.credit), (Kind::TracedStream, 43, 8, 65536));
        assert_eq!((payload, context_bytes(&buf)), (&b"req"[..], Some(&context)));
        let mut plain = Vec::new();
        begin_traced(&mut plain, Header::stream(43, 8, 65536), Some(&context));
        assert_eq!((plain.len(), context_bytes(&plain)), (26, None));
        for cut in 2..2 + 24 + CONTEXT_LEN {
            assert!(matches!(decode(&buf[..cut]), Err(WireError::Truncated { .. })), "{cut}");
        }
    }

    #[test]
    fn a_context_round_trips_and_a_fresh_one_is_valid() {
        let cx = TraceContext::new([7; 16], [9; 8], TraceContext::SAMPLED);
        assert_eq!(TraceContext::from_bytes(&cx.to_bytes()).unwrap(), cx);
        let fresh = TraceContext::fresh(None);
        assert_eq!(TraceContext::from_bytes(&fresh.to_bytes()).unwrap(), fresh);
        let child = TraceContext::fresh(Some(fresh.trace_id));
        assert_eq!(child.trace_id, fresh.trace_id);
        assert_ne!(child.span_id, fresh.span_id);
        assert_eq!(fresh.trace_id_hex().len(), 32);
        assert_eq!(TraceContext::new([0xab; 16], [1; 8], 0).span_id_hex(), "0101010101010101");
    }

    #[test]
    fn zero_ids_and_reserved_flags_are_typed_errors() {
        let good = TraceContext::new([7; 16], [9; 8], 1).to_bytes();
        let mut zero_trace = good;
        zero_trace[..16].fill(0);
        let mut zero_span = good;
        zero_span[16..24].fill(0);
        let mut flags = good;
        flags[24] = 0x80;
        for (bytes, why) in [(zero_trace, "trace"), (zero_span, "span"), (flags, "flag")] {
            match TraceContext::from_bytes(&bytes) {
                Err(WireError::BadTraceContext(said)) => assert!(said.contains(why), "{said}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }
}
