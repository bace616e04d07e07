//! [`InlineBytes`]: bytes that travel inside the message, as serde bytes,
//! without a copy of ours on the way out, nor (with bincode) on the way in.
//!
//! On the way out, a buffer of at least [`REFERENCED_FROM`] bytes offers
//! itself to the encoder as it is written ([`offered`]): the encoder's
//! buffer (`encode.rs`), handed that very slice, takes a reference to it
//! instead of copying it, and the message goes to the writer in pieces
//! (`segments.rs`), written by one vectored `sendmsg`. Any other serializer
//! is handed the same slice and copies it, as it would a
//! `serde_bytes::ByteBuf`: the bytes on the wire are the same either way,
//! for every codec.
//!
//! On the way in, a message is decoded from its frame as received; while
//! it is ([`decoding_from`]), a buffer read as a slice of that frame (what
//! bincode hands over) becomes a reference into it rather than a copy.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// Buffers from this size on are referenced, not copied, by our encoder
/// and decoder. Below it a copy costs less than the pieces it saves. More
/// than a batch entry's largest (`envelope/batch.rs`): a message with a
/// referenced piece is always written alone.
pub(crate) const REFERENCED_FROM: usize = 16 << 10;

/// Bytes carried inline in a message, as a field of any message type: a
/// large payload (an image, a file's contents, a tensor) sent without being
/// copied on its way to the socket. Cheap to clone (clones share the
/// buffer), dereferences to `[u8]`.
///
/// Serialized, it is a byte string, exactly as a `Vec<u8>` marked
/// `#[serde(with = "serde_bytes")]`: the message on the wire is the same,
/// for every codec and for workers in other languages. What differs is
/// what this crate's encoder does with it: one of 16 KiB or more is not
/// copied into the message, but written to the socket from its own buffer,
/// in the same write as the rest of the message. Received with bincode
/// (the default codec), it is a slice of the message as it was read, not a
/// copy either.
///
/// Which to use for large data:
///
/// - `InlineBytes`: the bytes go through the socket (once), with no copy
///   of ours on either side. Works over every transport (TCP and TLS
///   included) and codec, and with workers that are not written in Rust.
/// - [`SharedBytes`](crate::SharedBytes): no byte goes through the socket
///   at all (a sealed memfd's descriptor does): the fastest for large
///   buffers to a local worker, and the only way to send the same buffer
///   many times for free, but a memfd per buffer (made, sealed, mapped).
///
/// Received, it holds the message it came in (its whole frame) for as
/// long as it lives; [`InlineBytes::copy_from_slice`] makes a copy of its
/// own, to keep a small part of a large message.
///
/// ```
/// use actix_webworker::{InlineBytes, Protocol};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Job {
///     Compress { level: u32, data: InlineBytes },
/// }
///
/// struct Compressor;
/// impl Protocol for Compressor {
///     type ToWorker = Job;
///     type FromWorker = InlineBytes;
/// }
///
/// let data = InlineBytes::from(vec![7u8; 1 << 20]);
/// // Each message refers to the same buffer: no copy here, nor as it is
/// // written to the worker.
/// let jobs: Vec<Job> =
///     (0..3).map(|level| Job::Compress { level, data: data.clone() }).collect();
/// assert_eq!(data.len(), 1 << 20);
/// # let _ = jobs;
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InlineBytes(Bytes);

impl InlineBytes {
    /// No bytes.
    pub const fn new() -> Self {
        InlineBytes(Bytes::new())
    }

    /// Bytes of the program's own, referenced, never copied or freed.
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        InlineBytes(Bytes::from_static(bytes))
    }

    /// A copy of `bytes`, in a buffer of its own.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        InlineBytes(Bytes::copy_from_slice(bytes))
    }

    /// The bytes as a `bytes::Bytes` (the same buffer, no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<Vec<u8>> for InlineBytes {
    /// Takes the vector's buffer, no copy.
    fn from(bytes: Vec<u8>) -> Self {
        InlineBytes(bytes.into())
    }
}

impl From<Bytes> for InlineBytes {
    fn from(bytes: Bytes) -> Self {
        InlineBytes(bytes)
    }
}

impl From<&'static [u8]> for InlineBytes {
    fn from(bytes: &'static [u8]) -> Self {
        InlineBytes::from_static(bytes)
    }
}

impl From<InlineBytes> for Bytes {
    fn from(bytes: InlineBytes) -> Self {
        bytes.0
    }
}

impl Deref for InlineBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for InlineBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for InlineBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineBytes({} bytes)", self.0.len())
    }
}

thread_local! {
    /// The buffer being written, while it is (see [`offered`]).
    static OFFERED: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// The message being decoded, while it is (see [`decoding_from`]).
    static RECEIVED: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

impl Serialize for InlineBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() < REFERENCED_FROM {
            return serializer.serialize_bytes(&self.0);
        }
        // Offered for as long as the serializer writes it: whatever writes
        // this very slice may take the buffer instead (`offered`).
        let previous = OFFERED.with(|offer| offer.replace(Some(self.0.clone())));
        let _restore = Restore(&OFFERED, previous);
        serializer.serialize_bytes(&self.0)
    }
}

/// The buffer `src` is, if it is the one an [`InlineBytes`] is being
/// written from: taken (once), for the caller to refer to instead of
/// copying `src`. Costs a length comparison for anything smaller.
#[inline(always)]
pub(crate) fn offered(src: &[u8]) -> Option<Bytes> {
    if src.len() < REFERENCED_FROM {
        return None;
    }
    take_offer(src)
}

/// [`offered`], for a slice large enough to be one.
#[inline(never)]
fn take_offer(src: &[u8]) -> Option<Bytes> {
    OFFERED.with(|offer| {
        let mut offer = offer.borrow_mut();
        let same = offer.as_ref().is_some_and(|bytes| {
            std::ptr::eq(bytes.as_ptr(), src.as_ptr()) && bytes.len() == src.len()
        });
        if same {
            offer.take()
        } else {
            None
        }
    })
}

/// `decode` run with `message` (the frame, as received) as what buffers
/// decoded from slices of it refer to, rather than copy.
pub(crate) fn decoding_from<R>(message: &Bytes, decode: impl FnOnce() -> R) -> R {
    let previous = RECEIVED.with(|received| received.replace(Some(message.clone())));
    let _restore = Restore(&RECEIVED, previous);
    decode()
}

/// Puts back what one of the thread-locals held before, also when a
/// serializer or a `Deserialize` panics: no buffer is held past its
/// message's encoding or decoding.
struct Restore(&'static std::thread::LocalKey<RefCell<Option<Bytes>>>, Option<Bytes>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.1.take();
        let _ = self.0.try_with(|slot| *slot.borrow_mut() = previous);
    }
}

/// A received buffer refers to its message only in a message of at least
/// this size: one read into a buffer of its own (`ws/frames.rs` does so
/// for a frame with more than 256 KiB to come; smaller ones share a read
/// buffer with others, which a reference would keep whole).
pub(crate) const REFERENCED_MESSAGE_FROM: usize = 512 << 10;

/// A received buffer refers to its message only if it is at least this
/// share of it (a quarter): what a reference keeps alive is then at most
/// four times what its holder sees. A worker's message of 64 MiB with 16
/// KiB of `InlineBytes` in it would otherwise leave the parent holding 64
/// MiB for as long as the application keeps those 16 KiB.
const REFERENCED_SHARE: usize = 4;

/// Whether a buffer of `len` bytes in a message of `message` bytes is
/// referenced, rather than copied.
fn referenced(len: usize, message: usize) -> bool {
    len >= REFERENCED_FROM
        && message >= REFERENCED_MESSAGE_FROM
        && len.saturating_mul(REFERENCED_SHARE) >= message
}

/// `bytes` as a reference into the message being decoded, if it is a
/// large enough slice of a large enough message (see [`referenced`]); else
/// a copy.
fn received(bytes: &[u8]) -> InlineBytes {
    if bytes.len() >= REFERENCED_FROM {
        let within = RECEIVED.with(|received| {
            let received = received.borrow();
            let message = received.as_ref()?;
            let start = message.as_ptr() as usize;
            let at = bytes.as_ptr() as usize;
            let inside = at >= start && at + bytes.len() <= start + message.len();
            let referenced = inside && referenced(bytes.len(), message.len());
            referenced.then(|| message.slice_ref(bytes))
        });
        if let Some(slice) = within {
            return InlineBytes(slice);
        }
    }
    InlineBytes::copy_from_slice(bytes)
}

impl<'de> Deserialize<'de> for InlineBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Takes a byte string in any form a format gives one: borrowed, owned, a
/// string, or a sequence of numbers (JSON).
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = InlineBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<InlineBytes, E> {
        Ok(received(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<InlineBytes, E> {
        Ok(InlineBytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<InlineBytes, E> {
        Ok(InlineBytes::from(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InlineBytes, E> {
        Ok(InlineBytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<InlineBytes, E> {
        Ok(InlineBytes::from(v.into_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InlineBytes, A::Error> {
        // What the format says it holds, believed only up to a bound.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 << 10));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(InlineBytes::from(out))
    }
}

#[cfg(test)]
mod tests;
