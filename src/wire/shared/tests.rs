//! The shared buffers' tests: sealing, descriptors that go with a message
//! and come back as buffers, what a receiver refuses, and what a panic
//! while encoding leaves behind.

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::uio::pwrite;
use serde::ser::Serializer;
use serde::Serialize;

use super::carry::{collecting, providing, tracing, NAME, OUTGOING};
use super::memfd::{memfd, SEALS};
use super::*;
use crate::held::Holds;

/// Seals `fd` against writing, shrinking and growing (not for good).
fn add_seals(fd: &OwnedFd) {
    fcntl(fd, FcntlArg::F_ADD_SEALS(SEALS)).expect("sealed");
}

#[test]
fn a_frozen_buffer_is_sealed_and_read_only() {
    let mut buf = SharedBytesMut::new(4096).unwrap();
    buf[..5].copy_from_slice(b"hello");
    let shared = buf.freeze().unwrap();
    assert_eq!(&shared[..5], b"hello");
    let Repr::Sealed(sealed) = &shared.0 else { panic!("mapped") };
    let seals = fcntl(&sealed.fd, FcntlArg::F_GET_SEALS).unwrap();
    assert!(SealFlag::from_bits_retain(seals).contains(SEALS));
    // Writing through the descriptor fails.
    assert!(pwrite(&sealed.fd, b"x", 0).is_err());
}

#[test]
fn descriptors_go_with_the_message_and_come_back_as_buffers() {
    let a = SharedBytes::copy_from_slice(b"first").unwrap();
    let b = SharedBytes::copy_from_slice(&[9u8; 100_000]).unwrap();
    let msg = (a.clone(), 7u32, b.clone(), SharedBytes::default());
    let (encoded, fds) = collecting(|| {
        let mut buf = Vec::new();
        crate::wire::codec::encode_into(&msg, &mut buf).unwrap();
        buf
    });
    assert_eq!(fds.len(), 2, "one descriptor per mapped buffer");
    assert!(encoded.len() < 64, "no bytes of the buffers inline: {}", encoded.len());
    let own = SharedBytesMut::new(1).unwrap().freeze().unwrap();
    let Repr::Sealed(own) = &own.0 else { panic!() };
    let mut all = fds;
    all.push(own.fd.try_clone().unwrap());
    let (back, rest, refused, taken) = providing(all, usize::MAX, || {
        crate::wire::codec::decode::<(SharedBytes, u32, SharedBytes, SharedBytes)>(&encoded)
    });
    let back = back.unwrap();
    assert!(refused.is_none());
    assert_eq!(back, msg);
    assert!(back.0.is_mapped() && back.2.is_mapped());
    assert_eq!(rest.len(), 1, "the message's own descriptor is left to it");
    assert_eq!(taken, Holds { bytes: 5 + 100_000, fds: 2 });
    // Without descriptors: inline, and read back as bytes.
    let mut inline = Vec::new();
    crate::wire::codec::encode_into(&a, &mut inline).unwrap();
    let back: SharedBytes = crate::wire::codec::decode(&inline).unwrap();
    assert_eq!(back, a);
    assert!(!back.is_mapped());
}

#[test]
fn unsealed_or_short_buffers_are_refused() {
    let fds = |len: usize, seal: bool| {
        let fd = memfd(len).unwrap();
        if seal {
            add_seals(&fd);
        }
        fd
    };
    let claim = |len: u64| {
        let mut buf = Vec::new();
        let s = serde_json_free::descriptor(0, len);
        buf.extend_from_slice(&s);
        buf
    };
    for (fd, len, why) in
        [(fds(4096, false), 4096, "not sealed"), (fds(4096, true), 8192, "were announced")]
    {
        let (res, _, refused, _) = providing(vec![fd], usize::MAX, || {
            crate::wire::codec::decode::<SharedBytes>(&claim(len))
        });
        assert!(res.is_err());
        assert!(refused.unwrap().contains(why));
    }
    let (res, _, refused, _) =
        providing(Vec::new(), usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim(10)));
    assert!(res.is_err() && refused.unwrap().contains("missing"));
}

#[test]
fn sparse_buffers_and_claims_without_descriptors_are_refused() {
    // Large and sealed, never written: the reader would pay for it.
    let fd = memfd(1 << 30).unwrap();
    add_seals(&fd);
    let claim = serde_json_free::descriptor(0, 1 << 30);
    let (res, _, refused, _) =
        providing(vec![fd], usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim));
    assert!(res.is_err());
    assert!(refused.unwrap().contains("sparse"));
    // A descriptor claimed by a message that came with none.
    let res = crate::wire::codec::decode::<SharedBytes>(&serde_json_free::descriptor(0, 10));
    assert!(res.is_err(), "{res:?}");
    // While a shape is traced: an empty buffer.
    let traced =
        tracing(|| crate::wire::codec::decode::<SharedBytes>(&serde_json_free::descriptor(0, 10)));
    assert!(traced.unwrap().is_empty());
}

/// A sealed memfd of `len` bytes of which only `written` are written.
fn partly_written(len: usize, written: std::ops::Range<usize>) -> OwnedFd {
    let fd = memfd(len).unwrap();
    let bytes = vec![7u8; written.len()];
    let n = pwrite(&fd, &bytes, written.start as i64).unwrap();
    assert_eq!(n, written.len());
    add_seals(&fd);
    fd
}

#[test]
fn a_hole_in_the_announced_range_is_refused_wherever_it_is() {
    // Half written, the hole first: as many blocks as the half
    // announced, but the reader would allocate them.
    let front = partly_written(2 << 20, (1 << 20)..(2 << 20));
    let claim = serde_json_free::descriptor(0, 1 << 20);
    let (res, _, refused, _) =
        providing(vec![front], usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim));
    assert!(res.is_err());
    assert!(refused.unwrap().contains("a hole at byte 0"));
    // The written half first: taken.
    let back = partly_written(2 << 20, 0..(1 << 20));
    let (res, _, refused, _) =
        providing(vec![back], usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim));
    assert!(refused.is_none(), "{refused:?}");
    assert_eq!(res.unwrap().len(), 1 << 20);
}

#[test]
fn a_file_named_again_is_one_buffer_and_the_bound_counts_it_once() {
    let buf = SharedBytes::copy_from_slice(&[3u8; 64 << 10]).unwrap();
    let many = vec![buf.clone(); 64];
    let (encoded, fds) = collecting(|| {
        let mut out = Vec::new();
        crate::wire::codec::encode_into(&many, &mut out).unwrap();
        out
    });
    assert_eq!(fds.len(), 64);
    // Within a bound of one buffer's size: the 63 others are the same.
    let (back, rest, refused, taken) =
        providing(fds, 64 << 10, || crate::wire::codec::decode::<Vec<SharedBytes>>(&encoded));
    assert!(refused.is_none(), "{refused:?}");
    assert!(rest.is_empty());
    assert_eq!(taken, Holds { bytes: 64 << 10, fds: 1 });
    let back = back.unwrap();
    let Repr::Sealed(first) = &back[0].0 else { panic!("mapped") };
    assert!(back.iter().all(|b| matches!(&b.0, Repr::Sealed(s) if Arc::ptr_eq(s, first))));
    // Two files over the bound: refused, named.
    let two = vec![buf.clone(), SharedBytes::copy_from_slice(&[4u8; 64 << 10]).unwrap()];
    let (encoded, fds) = collecting(|| {
        let mut out = Vec::new();
        crate::wire::codec::encode_into(&two, &mut out).unwrap();
        out
    });
    let (res, _, refused, _) =
        providing(fds, 100 << 10, || crate::wire::codec::decode::<Vec<SharedBytes>>(&encoded));
    assert!(res.is_err());
    assert!(refused.unwrap().contains("over the limit of 102400"));
}

#[test]
fn a_received_buffer_is_mapped_when_first_read() {
    let buf = SharedBytes::copy_from_slice(&[5u8; 8192]).unwrap();
    let (encoded, fds) = collecting(|| {
        let mut out = Vec::new();
        crate::wire::codec::encode_into(&buf, &mut out).unwrap();
        out
    });
    let (back, ..) =
        providing(fds, usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&encoded));
    let back = back.unwrap();
    let Repr::Sealed(sealed) = &back.0 else { panic!("mapped") };
    assert!(sealed.map.get().is_none(), "mapped on arrival");
    assert_eq!(back.try_as_slice().unwrap(), &[5u8; 8192][..]);
    assert!(sealed.map.get().is_some());
}

/// Panics as it is written, after the buffer before it.
struct Halfway(SharedBytes);

impl Serialize for Halfway {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        panic!("halfway");
    }
}

#[test]
fn a_panic_while_encoding_leaves_no_descriptor_behind() {
    let buf = SharedBytes::copy_from_slice(b"abc").unwrap();
    let panicked = std::panic::catch_unwind(|| {
        collecting(|| crate::wire::codec::encode_into(&Halfway(buf.clone()), &mut Vec::new()))
    });
    assert!(panicked.is_err());
    OUTGOING.with(|o| {
        let left = o.take();
        assert!(left.is_none(), "a list left behind: {left:?}");
    });
    // The next message takes only its own.
    let ((), fds) = collecting(|| {
        crate::wire::codec::encode_into(&buf, &mut Vec::new()).unwrap();
    });
    assert_eq!(fds.len(), 1);
}

/// The encoding of a `Descriptor` variant, by hand.
mod serde_json_free {
    pub fn descriptor(index: u32, len: u64) -> Vec<u8> {
        struct D(u32, u64);
        impl serde::Serialize for D {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_newtype_variant(super::NAME, 1, "Descriptor", &(self.0, self.1))
            }
        }
        let mut buf = Vec::new();
        crate::wire::codec::encode_into(&D(index, len), &mut buf).unwrap();
        buf
    }
}
