//! The encoder's tests: sizes and descriptor counts checked before
//! anything is queued, and the arena's buffers reused, spilled and let go.

use super::*;
use crate::wire::envelope::{self, Kind};

/// `super::encode`, its message in one piece (as every message here is).
fn encode<M: Serialize + ?Sized>(
    codec: Codec,
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Bytes, WorkerError> {
    let encoded = super::encode(codec, header, data, max_message_size);
    encoded.map(|msg| msg.as_whole().cloned().expect("in one piece"))
}

/// `super::encode_in`, in one piece as [`encode`].
fn encode_in<M: Serialize + ?Sized>(
    arena: &mut Arena,
    codec: Codec,
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Bytes, WorkerError> {
    let encoded = super::encode_in(arena, codec, header, data, max_message_size);
    encoded.map(|msg| msg.as_whole().cloned().expect("in one piece"))
}

fn post(data: &impl Serialize) -> Bytes {
    encode(Codec::Bincode, Header::post(0).unwrap(), data, 1 << 20).unwrap()
}

#[test]
fn arena_slices_stay_intact_and_large_messages_do_not_stay() {
    let msgs: Vec<Bytes> = (0..5_000u32).map(|i| post(&format!("m{i}"))).collect();
    for (i, msg) in msgs.iter().enumerate() {
        let (header, payload) = envelope::decode(msg).unwrap();
        assert_eq!(header.kind, Kind::Post);
        assert_eq!(codec::decode::<String>(payload).unwrap(), format!("m{i}"));
    }
    let big = post(&serde_bytes::ByteBuf::from(vec![1u8; 100_000]));
    // Header, a 5-byte varint length, the bytes as one block.
    assert_eq!(big.len(), 2 + 5 + 100_000);
    // It went to a buffer of its own, not into the arena's.
    ARENA.with(|arena| assert!(arena.borrow().buf.capacity() <= ARENA_CHUNK));
    // Over the limit: an error, and the arena is left clean, whatever
    // the failed message grew it to.
    let refused = encode(Codec::Bincode, Header::post(0).unwrap(), &vec![0u8; 64], 8);
    assert!(matches!(refused, Err(WorkerError::Wire(WireError::TooLarge { .. }))));
    let huge = serde_bytes::ByteBuf::from(vec![1u8; 8 << 20]);
    assert!(encode(Codec::Bincode, Header::post(0).unwrap(), &huge, 1 << 20).is_err());
    ARENA.with(|arena| {
        let arena = arena.borrow();
        assert!(arena.buf.capacity() <= ARENA_CHUNK);
        assert_eq!(arena.big.capacity(), 0, "8 MiB are not kept");
    });
    assert_eq!(&post(&7u8)[..], &[Kind::Post as u8, 0, 7]);
}

#[test]
fn a_lean_arena_keeps_no_large_message_buffer() {
    let big = serde_bytes::ByteBuf::from(vec![1u8; 1 << 20]);
    let header = || Header::post(0).unwrap();
    let mut kept = Arena::default();
    drop(encode_in(&mut kept, Codec::Bincode, header(), &big, 8 << 20).unwrap());
    // The message written and dropped, its buffer is the arena's again.
    assert!(kept.big.try_reclaim(1 << 20), "a default arena keeps it for the next");
    let mut lean = Arena::lean();
    let bytes = encode_in(&mut lean, Codec::Bincode, header(), &big, 8 << 20).unwrap();
    assert_eq!(bytes.len(), 2 + 5 + (1 << 20));
    drop(bytes);
    assert!(!lean.big.try_reclaim(1 << 20), "the message's buffer went with it");
}

#[test]
fn an_arena_goes_round_its_buffers_once_their_messages_are_dropped() {
    let mut arena = Arena::default();
    // Where each buffer starts: the messages that do not follow on
    // from the one before.
    let mut end = std::ptr::null::<u8>();
    let mut starts = |arena: &mut Arena, n: usize, keep: &mut Vec<Bytes>| {
        let mut found = std::collections::HashSet::new();
        for _ in 0..n {
            let header = Header::post(0).unwrap();
            let msg = encode_in(arena, Codec::Bincode, header, &[7u8; 1000][..], 1 << 20).unwrap();
            if msg.as_ptr() != end {
                found.insert(msg.as_ptr() as usize);
            }
            end = msg.as_ptr().wrapping_add(msg.len());
            keep.push(msg);
        }
        found
    };
    // Held, as a deep queue holds them: each full buffer is given up,
    // and a fresh one taken, one more than the spares kept.
    let mut held = Vec::new();
    let first = starts(&mut arena, (ARENA_SPARES + 1) * 60, &mut held);
    assert_eq!(first.len(), ARENA_SPARES + 1);
    for msg in &held {
        let (_, payload) = envelope::decode(msg).unwrap();
        assert_eq!(codec::decode::<Vec<u8>>(payload).unwrap(), vec![7u8; 1000]);
    }
    // Written and dropped (none freed: each buffer still kept): from
    // now on, only those buffers, again and again.
    drop(held);
    for _ in 0..5 {
        let mut dropped_at_once = Vec::new();
        let again = starts(&mut arena, 200, &mut dropped_at_once);
        assert!(again.is_subset(&first), "a fresh buffer: {again:?} not in {first:?}");
    }
}

#[test]
fn a_large_message_takes_the_last_ones_buffer_once_that_is_dropped() {
    let mut arena = Arena::default();
    let big = |n: u8| serde_bytes::ByteBuf::from(vec![n; 1 << 20]);
    let header = || Header::post(0).unwrap();
    let small = encode_in(&mut arena, Codec::Bincode, header(), &1u8, 1 << 30).unwrap();
    let first = encode_in(&mut arena, Codec::Bincode, header(), &big(1), 1 << 30).unwrap();
    // Still held (queued, being written): the next needs its own.
    let second = encode_in(&mut arena, Codec::Bincode, header(), &big(2), 1 << 30).unwrap();
    assert_ne!(first.as_ptr(), second.as_ptr());
    let at = second.as_ptr();
    drop((first, second));
    let third = encode_in(&mut arena, Codec::Bincode, header(), &big(3), 1 << 30).unwrap();
    assert_eq!(third.as_ptr(), at, "the dropped one's memory, again");
    let (_, payload) = envelope::decode(&third).unwrap();
    assert_eq!(codec::decode::<serde_bytes::ByteBuf>(payload).unwrap(), big(3));
    // The small ones go on in the arena, untouched by the large.
    let next = encode_in(&mut arena, Codec::Bincode, header(), &2u8, 1 << 30).unwrap();
    assert_eq!(next.as_ptr(), small.as_ptr().wrapping_add(small.len()));
    assert_eq!(&next[..], &[Kind::Post as u8, 0, 2]);
    // Past the size kept, a buffer is not kept.
    drop(third);
    let huge = serde_bytes::ByteBuf::from(vec![4u8; BIG_KEEP]);
    drop(encode_in(&mut arena, Codec::Bincode, header(), &huge, 1 << 30).unwrap());
    assert_eq!(arena.big.capacity(), 0);
}

/// Writes a field, then panics.
struct Halfway;

impl Serialize for Halfway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&[9u8; 32])?;
        panic!("halfway");
    }
}

#[test]
fn a_panic_part_way_leaves_nothing_in_the_next_message() {
    assert!(std::panic::catch_unwind(|| post(&Halfway)).is_err());
    assert_eq!(&post(&7u8)[..], &[Kind::Post as u8, 0, 7]);
}

/// A `Serialize` impl that encodes a message of its own.
struct Nested;

impl Serialize for Nested {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&post(&"inner"))
    }
}

#[test]
fn encoding_inside_encoding_uses_a_buffer_of_its_own() {
    let outer = post(&Nested);
    let (_, payload) = envelope::decode(&outer).unwrap();
    let inner: serde_bytes::ByteBuf = codec::decode(payload).unwrap();
    let (_, inner_payload) = envelope::decode(&inner).unwrap();
    assert_eq!(codec::decode::<String>(inner_payload).unwrap(), "inner");
}
