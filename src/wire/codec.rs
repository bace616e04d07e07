//! Payload encoding: serde values to bytes and back, with bincode 2.
//!
//! This is the only file that names `bincode` (frozen upstream, pinned at
//! `=2.0.1`; see the crate README for the advisory) or `serde_json`, so the
//! formats can be swapped without touching anything else. A connection
//! uses one [`Codec`], chosen by the parent and told in its hello: bincode,
//! the default, or JSON for workers written without our Rust types.
//!
//! Decoding always runs on a complete, size-checked message slice, with the
//! codec's own allocation limit set, under a nesting guard (see `depth.rs`),
//! and must consume every byte.
//!
//! Byte strings: a `Vec<u8>` field is a sequence of integers to serde. Mark
//! it `#[serde(with = "serde_bytes")]` (or use `serde_bytes::ByteBuf`) so it
//! is written and read as one block of bytes.

mod depth;

pub(crate) use self::depth::made_within;
mod skips;

use bincode::config::{Configuration, Limit};
use bincode::enc::write::Writer;
use bytes::BufMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use self::depth::DepthLimited;
use crate::error::WireError;
use crate::protocol::Codec;

/// The most any single decode may claim to allocate, whatever the configured
/// message size (which is checked before decoding starts).
pub(crate) const DECODE_LIMIT: usize = 1 << 30;

type Config =
    Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<DECODE_LIMIT>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Appends the encoding of `value` to `buf`, written with `codec`.
#[inline]
pub(crate) fn encode_into_as<T: Serialize + ?Sized, B: BufMut>(
    codec: Codec,
    value: &T,
    buf: &mut B,
) -> Result<(), WireError> {
    match codec {
        Codec::Bincode => encode_into(value, buf),
        Codec::Json => {
            serde_json::to_writer(buf.writer(), value).map_err(|e| WireError::Encode(e.to_string()))
        }
    }
}

/// Whether `value`, written with `codec`, would be read back as another
/// value because it skips a field: bincode writes no names, so a field
/// skipped as it is written has the reader take the next field's bytes
/// for it. JSON names its fields, and reads a skipped one as missing.
pub(crate) fn check_faithful<T: Serialize + ?Sized>(
    codec: Codec,
    value: &T,
) -> Result<(), WireError> {
    match (codec, skips::first_skipped(value)) {
        (Codec::Bincode, Some((strukt, field))) => {
            Err(WireError::SkippedField { ty: std::any::type_name::<T>(), strukt, field })
        }
        _ => Ok(()),
    }
}

/// Decodes a whole payload written with `codec`; trailing bytes are an
/// error.
#[inline]
pub(crate) fn decode_as<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<T, WireError> {
    match codec {
        Codec::Bincode => decode(bytes),
        // serde_json refuses trailing bytes and nests at most 128 deep.
        Codec::Json => serde_json::from_slice(bytes).map_err(undecodable),
    }
}

/// Appends the bincode encoding of `value` to `buf`.
pub(crate) fn encode_into<T: Serialize + ?Sized, B: BufMut>(
    value: &T,
    buf: &mut B,
) -> Result<(), WireError> {
    bincode::serde::encode_into_writer(value, Appender(buf), config())
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Appends to a growable buffer (bincode's own std-writer goes through
/// `io::Write`).
struct Appender<'a, B>(&'a mut B);

impl<B: BufMut> Writer for Appender<'_, B> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.put_slice(bytes);
        Ok(())
    }
}

/// Decodes a whole bincode payload; trailing bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (DepthLimited(value), used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(undecodable)?;
    if used != bytes.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Why bytes do not decode, in at most 1 KiB: a decoder's error may quote
/// what it read (serde_json names an unknown variant whole), which a peer
/// chose, and the error is kept as an event.
fn undecodable(e: impl std::fmt::Display) -> WireError {
    WireError::Decode(crate::report::cut(e.to_string(), 1 << 10))
}

/// The value of `T` whose encoding is all zero bytes: every option `None`,
/// every sequence, map and string empty, every number 0, every enum its
/// first variant. `None` when `T` has no such value (one that checks what
/// it reads, or recursion without end).
pub(crate) fn zero<T: DeserializeOwned>() -> Option<T> {
    let zeros = [0u8; 4096];
    bincode::serde::decode_from_slice::<DepthLimited<T>, _>(&zeros, config()).ok().map(|(v, _)| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Msg {
        Hello { foo: String },
        Numbers(Vec<u64>),
    }

    #[test]
    fn round_trip() {
        let mut buf = vec![9u8];
        encode_into(&Msg::Hello { foo: "bar".into() }, &mut buf).unwrap();
        assert_eq!(decode::<Msg>(&buf[1..]).unwrap(), Msg::Hello { foo: "bar".into() });
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(decode::<Msg>(&[7, 7, 7]).is_err());
        let mut buf = Vec::new();
        encode_into(&Msg::Numbers(vec![1, 2]), &mut buf).unwrap();
        buf.push(0);
        assert!(matches!(decode::<Msg>(&buf), Err(WireError::Decode(_))));
    }

    #[derive(Serialize, Deserialize, Debug)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    #[test]
    fn nesting_bomb_is_refused_not_a_stack_overflow() {
        // A million nested nodes: one byte each, a few hundred KiB of stack
        // frames each if decoded naively.
        let mut bomb = vec![1u8; 1_000_000];
        bomb.push(0);
        let err = decode::<Tree>(&bomb).unwrap_err();
        assert!(err.to_string().contains("nest deeper"), "{err}");
        // Shallow trees still decode.
        let mut ok = vec![1u8; 100];
        ok.push(0);
        assert!(decode::<Tree>(&ok).is_ok());
    }

    #[test]
    fn string_length_bomb_allocates_nothing_it_cannot_fill() {
        // A String claiming 1 GiB in a few bytes fails on the missing bytes,
        // before any allocation of the claimed size.
        let mut buf = vec![0u8]; // variant 0: Hello { foo: String }
        buf.push(252); // varint: a u32 follows
        buf.extend_from_slice(&(1u32 << 30).to_le_bytes());
        buf.extend_from_slice(b"abc");
        assert!(decode::<Msg>(&buf).is_err());
    }

    #[test]
    fn length_bomb_is_refused_without_allocating_it() {
        // A string that claims u64::MAX bytes in a 10-byte message.
        let mut buf = vec![0u8]; // variant 0
        buf.push(255); // varint u64 marker
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Msg>(&buf).is_err());
    }

    #[test]
    fn what_values_take_beyond_their_bytes_is_counted_and_held_to_a_limit() {
        // 1,000 empty strings: 1 byte each on the wire, 24 once decoded.
        let mut buf = Vec::new();
        encode_into(&vec![String::new(); 1000], &mut buf).unwrap();
        let (decoded, made) = made_within(usize::MAX, || decode::<Vec<String>>(&buf));
        assert_eq!(decoded.unwrap().len(), 1000);
        // Each element's 23 beyond its byte.
        assert_eq!(made, 23_000);
        let (refused, _) = made_within(10_000, || decode::<Vec<String>>(&buf));
        let why = refused.unwrap_err().to_string();
        assert!(why.contains("more than 10000 bytes beyond their encoding"), "{why}");
        // Bytes cost what they take; the fields of a tuple are counted in
        // its own size, once.
        buf.clear();
        encode_into(&vec![7u8; 1000], &mut buf).unwrap();
        assert_eq!(made_within(usize::MAX, || decode::<Vec<u8>>(&buf)).1, 0);
        buf.clear();
        encode_into(&vec![(1u64, 2u64); 100], &mut buf).unwrap();
        let made = made_within(usize::MAX, || decode::<Vec<(u64, u64)>>(&buf)).1;
        assert_eq!(made, 1500);
    }

    /// A record whose samples (4 KiB each) are most often none.
    #[derive(Serialize, Deserialize)]
    struct Record {
        samples: Vec<[[f32; 32]; 32]>,
    }

    #[test]
    fn an_empty_sequence_counts_nothing_for_the_element_it_does_not_hold() {
        // 40,000 records, each with no sample: 40 KB on the wire, 24 bytes
        // each decoded. Under the default max_shared_bytes (128 MiB).
        let mut buf = Vec::new();
        let records: Vec<Record> = (0..40_000).map(|_| Record { samples: Vec::new() }).collect();
        encode_into(&records, &mut buf).unwrap();
        let (decoded, made) = made_within(128 << 20, || decode::<Vec<Record>>(&buf));
        assert_eq!(decoded.map(|r| r.len()).map_err(|e| e.to_string()), Ok(40_000));
        assert_eq!(made, 40_000 * 23);
    }

    #[test]
    fn what_a_boxed_element_holds_is_counted_too() {
        // 10,000 boxed `None`s of a 4 KiB array: 1 byte each on the wire,
        // 8 in the vector and 4,104 on the heap once decoded (41 MB).
        type Big = Option<[[u64; 32]; 16]>;
        let mut buf = Vec::new();
        let boxed: Vec<Box<Big>> = (0..10_000).map(|_| Box::new(None)).collect();
        encode_into(&boxed, &mut buf).unwrap();
        assert_eq!(buf.len(), 10_000 + 3);
        let made = made_within(usize::MAX, || decode::<Vec<Box<Big>>>(&buf)).1;
        let heap = 10_000 * (std::mem::size_of::<Big>() + 7);
        assert!(made >= heap, "counted {made} bytes beyond the encoding of {heap}");
        let (refused, _) = made_within(1 << 20, || decode::<Vec<Box<Big>>>(&buf));
        assert!(refused.is_err());
        // A value held in its place is not counted again.
        assert_eq!(made_within(usize::MAX, || decode::<Vec<Big>>(&buf)).1, 10_000 * 4103);
    }
}
