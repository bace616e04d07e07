//! `InlineBytes`: referenced, not copied, by our encoder and decoder, and
//! on the wire exactly what a `serde_bytes` vector is, in both codecs.

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{WireError, WorkerError};
use crate::protocol::Codec;
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::envelope::{self, Header};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Ours {
    before: String,
    data: InlineBytes,
    small: InlineBytes,
    after: u32,
}

/// The same message with plain vectors.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Plain {
    before: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    small: Vec<u8>,
    after: u32,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn ours(data: &InlineBytes) -> Ours {
    let small = InlineBytes::copy_from_slice(b"small, copied");
    Ours { before: "ahead".into(), data: data.clone(), small, after: 77 }
}

fn plain(data: &[u8]) -> Plain {
    Plain {
        before: "ahead".into(),
        data: data.to_vec(),
        small: b"small, copied".to_vec(),
        after: 77,
    }
}

const MAX: usize = 64 << 20;

#[test]
fn the_encoder_refers_to_the_buffer_and_writes_what_a_vector_would() {
    for len in [REFERENCED_FROM, 1 << 20, 16 << 20] {
        let data = InlineBytes::from(pattern(len));
        let header = || Header::post(0).unwrap();
        let msg = encode(Codec::Bincode, header(), &ours(&data), MAX).unwrap();
        // The buffer itself is a piece of the message: not copied.
        let pieces: Vec<_> = msg.pieces().collect();
        assert_eq!(pieces.len(), 3, "before, the buffer, after");
        assert_eq!(pieces[1].as_ptr(), data.as_ptr());
        assert_eq!(pieces[1].len(), len);
        // And the message is, byte for byte, the vector's.
        let vector = encode(Codec::Bincode, header(), &plain(&data), MAX).unwrap();
        assert!(vector.as_whole().is_some());
        assert_eq!(msg.contiguous(), vector.contiguous());
        assert_eq!(msg.len(), vector.len());
        // JSON writes bytes as numbers: nothing to refer to, the same text.
        let json = encode(Codec::Json, header(), &ours(&data), MAX).unwrap();
        assert!(json.as_whole().is_some());
        assert_eq!(
            json.contiguous(),
            encode(Codec::Json, header(), &plain(&data), MAX).unwrap().contiguous()
        );
    }
}

#[test]
fn below_the_threshold_and_outside_the_encoder_it_is_copied_as_bytes() {
    let small = InlineBytes::from(pattern(REFERENCED_FROM - 1));
    let msg = encode(Codec::Bincode, Header::post(0).unwrap(), &ours(&small), MAX).unwrap();
    assert!(msg.as_whole().is_some());
    // Other serializers copy it, as they would a vector, and leave no
    // offer behind.
    let large = InlineBytes::from(pattern(1 << 20));
    let json = serde_json::to_vec(&ours(&large)).unwrap();
    assert_eq!(json, serde_json::to_vec(&plain(&large)).unwrap());
    let mut vec = Vec::new();
    codec::encode_into(&ours(&large), &mut vec).unwrap();
    let mut expected = Vec::new();
    codec::encode_into(&plain(&large), &mut expected).unwrap();
    assert_eq!(vec, expected);
    assert!(offered(&large).is_none());
}

#[test]
fn the_size_limit_counts_the_referenced_bytes() {
    let data = InlineBytes::from(pattern(1 << 20));
    let refused = encode(Codec::Bincode, Header::post(0).unwrap(), &data, 1 << 20);
    match refused {
        Err(WorkerError::Wire(WireError::TooLarge { size, limit })) => {
            assert_eq!((size, limit), (5 + (1 << 20), 1 << 20));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A 5-byte length ahead of the bytes, and the envelope's 2.
    let taken = encode(Codec::Bincode, Header::post(0).unwrap(), &data, 5 + (1 << 20)).unwrap();
    assert_eq!(taken.len(), 2 + 5 + (1 << 20));
}

#[test]
fn decoded_from_a_frame_it_refers_to_the_frame() {
    let data = InlineBytes::from(pattern(1 << 20));
    let msg = encode(Codec::Bincode, Header::post(0).unwrap(), &ours(&data), MAX).unwrap();
    let frame = msg.contiguous();
    let (_, payload) = envelope::decode(&frame).unwrap();
    let back: Ours = decoding_from(&frame, || codec::decode(payload)).unwrap();
    assert_eq!(back, ours(&data));
    let start = frame.as_ptr() as usize;
    let at = back.data.as_ptr() as usize;
    assert!(at > start && at + back.data.len() <= start + frame.len(), "a slice of the frame");
    // Small ones, and any outside a frame's decoding, are copies.
    let outside = |b: &InlineBytes| {
        let at = b.as_ptr() as usize;
        at + b.len() <= start || at >= start + frame.len()
    };
    assert!(outside(&back.small));
    let copied: Ours = codec::decode(payload).unwrap();
    assert_eq!(copied, back);
    assert!(outside(&copied.data));
    // JSON (numbers) reads back the same.
    let json = encode(Codec::Json, Header::post(0).unwrap(), &ours(&data), MAX).unwrap();
    let json = json.contiguous();
    let (_, payload) = envelope::decode(&json).unwrap();
    let back: Ours = decoding_from(&json, || codec::decode_as(Codec::Json, payload)).unwrap();
    assert_eq!(back, ours(&data));
}

#[test]
fn the_same_buffer_twice_is_two_references() {
    let data = InlineBytes::from(pattern(64 << 10));
    let twice = vec![data.clone(), data.clone()];
    let msg = encode(Codec::Bincode, Header::post(0).unwrap(), &twice, MAX).unwrap();
    let referenced = msg.pieces().filter(|p| p.as_ptr() == data.as_ptr()).count();
    assert_eq!(referenced, 2);
    let frame = msg.contiguous();
    let (_, payload) = envelope::decode(&frame).unwrap();
    let back: Vec<InlineBytes> = codec::decode(payload).unwrap();
    assert_eq!(back, twice);
}

/// A hostile worker's large message with little `InlineBytes` in it: had
/// the buffer referred to the message, the application keeping 64 KiB
/// would keep the parent holding the whole 8 MiB. A copy, as is one from a
/// message too small to have a read buffer of its own.
#[test]
fn a_small_share_of_a_large_message_or_a_small_message_is_copied() {
    #[derive(Serialize, Deserialize)]
    struct Padded {
        #[serde(with = "serde_bytes")]
        padding: Vec<u8>,
        data: InlineBytes,
    }
    let inside = |b: &InlineBytes, frame: &bytes::Bytes| {
        let (start, at) = (frame.as_ptr() as usize, b.as_ptr() as usize);
        at >= start && at + b.len() <= start + frame.len()
    };
    let decoded = |padding: usize, data: usize| {
        let msg = Padded { padding: vec![1; padding], data: InlineBytes::from(pattern(data)) };
        let frame = encode(Codec::Bincode, Header::post(0).unwrap(), &msg, MAX).unwrap();
        let frame = frame.contiguous();
        let (_, payload) = envelope::decode(&frame).unwrap();
        let back: Padded = decoding_from(&frame, || codec::decode(payload)).unwrap();
        assert_eq!(&back.data[..], &pattern(data)[..]);
        inside(&back.data, &frame)
    };
    assert!(!decoded(8 << 20, 64 << 10), "64 KiB of an 8 MiB message is copied");
    assert!(!decoded(0, 256 << 10), "a 256 KiB message shares its read buffer: copied");
    assert!(decoded(2 << 20, 1 << 20), "a third of a 3 MiB message is referenced");
    assert!(!decoded(3 << 20, 1 << 20), "just under a quarter of a 4 MiB message is copied");
    assert!(decoded(0, 1 << 20), "a 1 MiB message's bytes are referenced");
}
