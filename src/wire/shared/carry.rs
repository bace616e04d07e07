//! Shared buffers inside messages: serde's side of [`SharedBytes`]. A
//! message is encoded with its buffers' descriptors collected on the side
//! ([`collecting`]), to travel with it, and decoded with the descriptors it
//! came with there for its buffers to take ([`providing`]); elsewhere a
//! buffer is written inline, as bytes. Other values that can only travel
//! as a descriptor (a channel's end, `channel/end.rs`) go the same way
//! ([`send_descriptor`], [`take_descriptor`]), and are refused where the
//! peer takes none.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{memfd, Repr, SharedBytes, EVER};
use crate::error::WireError;
use crate::held::Holds;
use crate::protocol::Codec;
use crate::wire::codec;

thread_local! {
    /// While a message is encoded for a peer that takes descriptors: those
    /// of its shared buffers, in order.
    pub(super) static OUTGOING: Cell<Option<Vec<OwnedFd>>> = const { Cell::new(None) };
    /// While a message is decoded: its descriptors, taken by index by its
    /// shared buffers; and why one was refused.
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    refused: Option<String>,
    /// The most bytes the message's shared buffers may hold together.
    max: usize,
    /// What the buffers taken so far hold: bytes (each file once however
    /// often it is named) and descriptors.
    taken: Holds,
    /// The files taken so far, by device, inode and length: a file named
    /// again is the same buffer, counted and mapped once.
    seen: Vec<((u64, u64, usize), SharedBytes)>,
}

/// Runs `encode` with shared buffers sent as descriptors: the result, and
/// the descriptors to send ahead of any others of the message, in order.
#[inline]
pub(crate) fn collecting<R>(encode: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    if !EVER.load(Ordering::Relaxed) {
        return (encode(), Vec::new());
    }
    /// Puts back what was there before, also when `encode` panics (a
    /// user's `Serialize`): no stale list is left for the next message.
    struct Restore(Option<Option<Vec<OwnedFd>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                OUTGOING.with(|o| o.set(outer));
            }
        }
    }
    let mut restore = Restore(Some(OUTGOING.with(|o| o.replace(Some(Vec::new())))));
    let result = encode();
    let outer = restore.0.take().unwrap_or_default();
    let fds = OUTGOING.with(|o| o.replace(outer)).unwrap_or_default();
    (result, fds)
}

thread_local! {
    /// While a type's shape is traced (`session/shape.rs`): a buffer read
    /// by descriptor with no message there is an empty one.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `trace` with buffers read by descriptor, outside any message, as
/// empty ones: the shape's tracing makes up such values. A shape may be
/// traced in the middle of a message's decoding (a channel's end checks
/// its type's): the message's descriptors are put aside meanwhile.
pub(crate) fn tracing<R>(trace: impl FnOnce() -> R) -> R {
    struct Restore(bool, Option<Incoming>);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRACING.with(|t| t.set(self.0));
            let aside = self.1.take();
            INCOMING.with(|i| *i.borrow_mut() = aside);
        }
    }
    let aside = INCOMING.with(|i| i.borrow_mut().take());
    let _restore = Restore(TRACING.with(|t| t.replace(true)), aside);
    trace()
}

/// Runs `decode` with the message's descriptors `fds` there for its shared
/// buffers, which may hold `max` bytes together: the result, the
/// descriptors they did not take (in order: the message's own), why a
/// buffer was refused, if one was, and what they hold.
pub(crate) fn providing<R>(
    fds: Vec<OwnedFd>,
    max: usize,
    decode: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>, Option<String>, Holds) {
    let fds = fds.into_iter().map(Some).collect();
    /// Puts back what was there before, also when `decode` panics (a
    /// user's `Deserialize`): no stale descriptors are left for the next
    /// message to take.
    struct Restore(Option<Option<Incoming>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                INCOMING.with(|i| *i.borrow_mut() = outer);
            }
        }
    }
    let incoming = Incoming { fds, refused: None, max, taken: Holds::default(), seen: Vec::new() };
    let outer = INCOMING.with(|i| i.borrow_mut().replace(incoming));
    let mut restore = Restore(Some(outer));
    let result = decode();
    let outer = restore.0.take().unwrap_or(None);
    let ours = INCOMING.with(|i| std::mem::replace(&mut *i.borrow_mut(), outer));
    match ours {
        Some(Incoming { fds, refused, taken, .. }) => {
            (result, fds.into_iter().flatten().collect(), refused, taken)
        }
        None => (result, Vec::new(), None, Holds::default()),
    }
}

/// Decodes a whole payload whose message came with `fds`: its shared
/// buffers take theirs, holding at most `max_shared` bytes together; the
/// rest (the message's own, in order) are given back, with what the
/// buffers hold. A refused buffer is [`WireError::SharedBuffer`].
#[inline]
pub(crate) fn decode_with<T: serde::de::DeserializeOwned>(
    codec: Codec,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    max_shared: usize,
) -> (Result<T, WireError>, Vec<OwnedFd>, Holds) {
    // What its values take once decoded beyond its bytes counts where its
    // bytes do, and is held to `max_shared` too (see `codec::made_within`).
    let decode = || codec::made_within(max_shared, || codec::decode_as(codec, payload));
    if fds.is_empty() {
        let (result, made) = decode();
        return (result, fds, Holds { bytes: made, fds: 0 });
    }
    let ((result, made), rest, refused, mut taken) = providing(fds, max_shared, decode);
    taken.bytes += made;
    match refused {
        Some(why) if result.is_err() => (Err(WireError::SharedBuffer { why }), rest, taken),
        _ => (result, rest, taken),
    }
}

thread_local! {
    /// A value that can only travel as a descriptor was written for a
    /// peer that takes none (see [`send_descriptor`]).
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Sends a duplicate of `fd` with the message being encoded: its index
/// among the message's descriptors. Where the peer takes no descriptors
/// (a remote worker), or outside an encoding, an error; the encoder then
/// refuses the message with `WorkerError::NoDescriptors` (see
/// [`take_refused`]).
pub(crate) fn send_descriptor(fd: std::os::fd::BorrowedFd<'_>) -> Result<u32, String> {
    let sent = OUTGOING.with(|o| {
        let mut fds = o.take()?;
        let index = fd.try_clone_to_owned().map(|fd| {
            fds.push(fd);
            fds.len() - 1
        });
        o.set(Some(fds));
        Some(index)
    });
    match sent {
        Some(Ok(index)) => u32::try_from(index).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(format!("a descriptor cannot be duplicated: {e}")),
        None => {
            REFUSED.with(|r| r.set(true));
            Err("a descriptor cannot cross to a peer that takes none".into())
        }
    }
}

/// Whether the last encoding on this thread failed for a value that could
/// only travel as a descriptor; the flag is cleared.
pub(crate) fn take_refused() -> bool {
    REFUSED.with(|r| r.replace(false))
}

/// Descriptor `index` of the message being decoded, taken (counted among
/// what the message holds). Outside a message's decoding: an error, or
/// `Ok(None)` while a type's shape is traced.
pub(crate) fn take_descriptor(index: usize) -> Result<Option<OwnedFd>, String> {
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let Some(incoming) = i.as_mut() else {
            if TRACING.with(Cell::get) {
                return Ok(None);
            }
            return Err(format!("descriptor {index} claimed by a message that came with none"));
        };
        match incoming.fds.get_mut(index).and_then(Option::take) {
            None => {
                let why = format!("descriptor {index} of the message is missing or taken");
                incoming.refused.get_or_insert_with(|| why.clone());
                Err(why)
            }
            Some(fd) => {
                incoming.taken.fds += 1;
                Ok(Some(fd))
            }
        }
    })
}

/// Values that travel as descriptors may exist from now on: encoding must
/// look out for them (see [`collecting`]).
pub(crate) fn descriptors_in_values() {
    EVER.store(true, Ordering::Relaxed);
}

/// What a channel's end writes in a payload (`channel/end.rs`): a real
/// enum, so that the shape's tracing sees it (`session/shape.rs` traces it
/// whole, as it does [`SharedBytes`]).
#[derive(Serialize, Deserialize)]
#[serde(rename = "ChannelEnd")]
pub(crate) enum EndOnWire {
    /// (its descriptor's index among the message's, whether it speaks
    /// first, the fingerprint of its channel).
    Descriptor((u32, bool, u64)),
}

pub(super) const NAME: &str = "SharedBytes";

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Repr::Sealed(sealed) = &self.0 {
            let sent = OUTGOING.with(|o| {
                let mut fds = o.take()?;
                let index = sealed.fd.try_clone().map(|fd| {
                    fds.push(fd);
                    fds.len() - 1
                });
                o.set(Some(fds));
                Some(index)
            });
            if let Some(index) = sent {
                let index = index.map_err(|e| {
                    serde::ser::Error::custom(format!(
                        "a shared buffer's descriptor cannot be duplicated: {e}"
                    ))
                })?;
                return s.serialize_newtype_variant(
                    NAME,
                    1,
                    "Descriptor",
                    &(index as u32, sealed.len as u64),
                );
            }
        }
        s.serialize_newtype_variant(NAME, 0, "Inline", &AsBytes(self))
    }
}

/// Bytes, written as one block.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Bytes, read as one block.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What is written (see `Serialize`): a real enum, so that the
        /// shape's tracing tells its variants apart.
        #[derive(Deserialize)]
        #[serde(rename = "SharedBytes")]
        enum Wire {
            Inline(ByteBuf),
            Descriptor((u32, u64)),
        }
        match Wire::deserialize(d)? {
            Wire::Inline(ByteBuf(bytes)) => Ok(SharedBytes(Repr::Inline(bytes.into()))),
            Wire::Descriptor((index, len)) => {
                received(index as usize, len).map_err(de::Error::custom)
            }
        }
    }
}

/// The buffer that came as descriptor `index` of the message being
/// decoded. Outside a message's decoding: an error, or, while a type's
/// shape is traced, an empty buffer.
fn received(index: usize, len: u64) -> Result<SharedBytes, String> {
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let Some(incoming) = i.as_mut() else {
            if TRACING.with(Cell::get) {
                return Ok(SharedBytes::default());
            }
            return Err(format!("descriptor {index} claimed by a message that came with none"));
        };
        let result = match incoming.fds.get_mut(index).and_then(Option::take) {
            None => Err(format!("descriptor {index} of the message is missing or taken")),
            Some(fd) => usize::try_from(len)
                .map_err(|_| format!("{len} bytes cannot be mapped here"))
                .and_then(|len| take(incoming, fd, len)),
        };
        if let Err(why) = &result {
            incoming.refused.get_or_insert_with(|| why.clone());
        }
        result
    })
}

/// Takes descriptor `fd` of the message being decoded as a buffer of `len`
/// bytes: the same buffer as before if the message named its file already
/// (this duplicate closed), else a new one, within the message's bound.
fn take(incoming: &mut Incoming, fd: OwnedFd, len: usize) -> Result<SharedBytes, String> {
    let stat = memfd::stat(&fd)?;
    let key = (stat.st_dev, stat.st_ino, len);
    if let Some((_, buf)) = incoming.seen.iter().find(|(k, _)| *k == key) {
        return Ok(buf.clone());
    }
    let total = incoming.taken.bytes.saturating_add(len);
    if total > incoming.max {
        return Err(format!(
            "{total} bytes of shared buffers in one message, over the limit of {}",
            incoming.max
        ));
    }
    let buf = SharedBytes::adopt(fd, &stat, len)?;
    incoming.taken.bytes = total;
    incoming.taken.fds += 1;
    incoming.seen.push((key, buf.clone()));
    Ok(buf)
}
