//! The reading half against hand-written frames.

use std::io::Write;

use super::*;
use crate::wire::stream::FdStream;
use crate::wire::wsframe::binary_frame;

/// A reading half taking messages of up to `max` bytes from a
/// socketpair, its writing half (kept open), and the pair's other end.
/// Inside a runtime.
fn over_a_pair(max: usize) -> (Frames, FdStream, std::os::unix::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (writing, reading) = FdStream::new(ours, None).unwrap();
    (Frames::new(reading, max), writing, theirs)
}

/// The frames `bytes` written raw, as the reading half takes them.
fn read_all(bytes: &[u8]) -> Vec<Result<Bytes, WireError>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut frames, _writing, mut theirs) = over_a_pair(1 << 20);
        theirs.write_all(bytes).unwrap();
        drop(theirs);
        let mut out = Vec::new();
        while let Some(item) = frames.next().await {
            let failed = item.is_err();
            out.push(item);
            if failed {
                break;
            }
        }
        out
    })
}

#[test]
fn frames_whole_fragmented_masked_and_control() {
    let mut bytes = binary_frame(b"one");
    // "two" in two fragments, a ping between them.
    bytes.extend_from_slice(&[0x02, 2, b't', b'w']);
    bytes.extend_from_slice(&[0x89, 0]);
    bytes.extend_from_slice(&[0x80, 1, b'o']);
    // "three", masked.
    let mask = [1u8, 2, 3, 4];
    let masked: Vec<u8> = b"three".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    bytes.extend_from_slice(&[0x82, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend_from_slice(&masked);
    // A close frame ends it; what follows is not read.
    bytes.extend_from_slice(&[0x88, 0]);
    bytes.extend_from_slice(&binary_frame(b"after"));
    let got: Vec<Bytes> = read_all(&bytes).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, [&b"one"[..], b"two", b"three"]);
}

#[test]
fn a_large_frame_is_read_into_the_last_ones_buffer_once_that_is_dropped() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut frames, _writing, mut theirs) = over_a_pair(4 << 20);
        let writer = std::thread::spawn(move || {
            for n in 0..4u8 {
                theirs.write_all(&binary_frame(&vec![n; 1 << 20])).unwrap();
                theirs.write_all(&binary_frame(b"small")).unwrap();
            }
        });
        macro_rules! next {
            () => {
                frames.next().await.unwrap().unwrap()
            };
        }
        let first = next!();
        assert_eq!(&next!()[..], b"small");
        // The first held: the next large one needs a buffer of its own.
        let second = next!();
        let (at, other) = (second.as_ptr(), first.as_ptr());
        assert_ne!(at, other);
        assert!(first.iter().all(|&b| b == 0) && second.iter().all(|&b| b == 1));
        drop((first, second));
        assert_eq!(&next!()[..], b"small");
        // Both dropped: one of their buffers is read into again.
        let third = next!();
        assert!([at, other].contains(&third.as_ptr()), "read into one of theirs");
        assert!(third.iter().all(|&b| b == 2));
        assert_eq!(&next!()[..], b"small");
        let fourth = next!();
        assert_ne!(fourth.as_ptr(), third.as_ptr(), "the third is held");
        assert!(fourth.iter().all(|&b| b == 3));
        writer.join().unwrap();
    });
}

/// A buffer over `SPARE_KEEP` is read into again while large frames
/// keep coming (the last one given up, while a message read from
/// another is still held), and let go, as the one read into is, once
/// no large frame has begun for `SPARE_IDLE`, the reader waiting.
#[test]
fn a_buffer_over_four_mib_is_reused_then_let_go_when_idle() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut frames, _writing, mut theirs) = over_a_pair(16 << 20);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            for n in 0..3u8 {
                theirs.write_all(&binary_frame(&vec![n; 6 << 20])).unwrap();
            }
            // Then nothing until the reader has idled; then one more.
            wait.recv().unwrap();
            theirs.write_all(&binary_frame(&[8; 6 << 20])).unwrap();
            theirs
        });
        let first = frames.next().await.unwrap().unwrap();
        // The first held: the second needs a buffer of its own.
        let second = frames.next().await.unwrap().unwrap();
        let at = first.as_ptr();
        drop(first);
        // The second held: the third is read into the first's.
        let third = frames.next().await.unwrap().unwrap();
        assert!(third.iter().all(|&b| b == 2));
        assert_eq!(third.as_ptr(), at, "the first's buffer, read into again");
        drop((second, third));
        assert!(frames.holds_big(), "the first's buffer, the third read from it, kept");
        // Idle: nothing to read for three times SPARE_IDLE.
        let idle = tokio::time::timeout(3 * SPARE_IDLE, frames.next()).await;
        assert!(idle.is_err(), "nothing was written");
        assert!(frames.spare.is_none(), "the spare let go");
        assert_eq!(frames.large, 0, "the buffer read into let go too");
        let room = frames.buf.capacity();
        assert!((1..=READ_CHUNK).contains(&room), "a small buffer in its place: {room}");
        go.send(()).unwrap();
        let fourth = frames.next().await.unwrap().unwrap();
        assert!(fourth.iter().all(|&b| b == 8));
        drop(writer.join().unwrap());
    });
}

#[test]
fn broken_frames_are_typed_errors() {
    let last = |bytes: &[u8]| read_all(bytes).pop();
    assert!(matches!(last(&[0xff; 8]), Some(Err(WireError::Transport(_)))));
    assert!(matches!(last(&[0x81, 1, b'x']), Some(Err(WireError::TextFrame))));
    assert!(matches!(last(&[0x80, 1, b'x']), Some(Err(WireError::Transport(_)))));
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&(4u64 << 30).to_be_bytes());
    assert!(matches!(last(&huge), Some(Err(WireError::TooLarge { size, .. })) if size == 4 << 30));
    // Cut off inside a frame, and ended between two.
    assert!(matches!(last(&[0x82, 10, 1, 2]), Some(Err(WireError::CutOff))));
    assert_eq!(read_all(&binary_frame(b"x")).len(), 1);
}

/// How many times `next` lets other tasks run before it gives the message
/// after `idle` (all of it read already, so no wait for the socket is
/// among them), and that message: one future polled until ready, as a
/// task polls it.
fn yields_before<F: std::future::Future>(next: F) -> (usize, F::Output) {
    let mut next = std::pin::pin!(next);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    let mut yields = 0;
    loop {
        match next.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(got) => return (yields, got),
            std::task::Poll::Pending => yields += 1,
        }
    }
}

/// 5,000 pings (or empty continuations of a fragmented message) between
/// two messages, all read already: the reading lets other tasks run after
/// each 1,024 (before: it took them all in one go; a worker writing pings
/// held the parent's thread 157 ms at a time, release build).
#[test]
fn frames_that_make_no_message_are_taken_a_thousand_at_a_time() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pings: Vec<u8> = [0x89u8, 0].repeat(5000);
        let mut fragments = vec![0x02, 1, b'f'];
        fragments.extend_from_slice(&[0x00, 0].repeat(5000));
        fragments.extend_from_slice(&[0x80, 1, b'g']);
        for (idle, after) in [(pings, &b"after"[..]), (fragments, b"fg")] {
            let (mut frames, _writing, mut theirs) = over_a_pair(1 << 20);
            let mut bytes = binary_frame(b"first");
            bytes.extend_from_slice(&idle);
            if after == b"after" {
                bytes.extend_from_slice(&binary_frame(after));
            }
            theirs.write_all(&bytes).unwrap();
            assert_eq!(&frames.next().await.unwrap().unwrap()[..], b"first");
            let (yields, got) = yields_before(frames.next());
            assert_eq!(&got.unwrap().unwrap()[..], after);
            assert_eq!(yields, 4, "5,000 taken 1,024 at a time");
        }
    });
}

/// The same for empty batches, which the reader takes apart: 5,000
/// between two posts (before: taken in one go, 300 ms at a time).
#[test]
fn empty_batches_are_taken_a_thousand_at_a_time() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut reader, _sink) = crate::wire::ws::open(ours, 1 << 20).await.unwrap().split();
        let mut bytes = binary_frame(&[2, 0, 0, 7]);
        bytes.extend_from_slice(&binary_frame(&[9, 0]).repeat(5000));
        bytes.extend_from_slice(&binary_frame(&[2, 0, 0, 8]));
        theirs.write_all(&bytes).unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().payload(), [0, 7]);
        let (yields, got) = yields_before(reader.next());
        assert_eq!(got.unwrap().unwrap().payload(), [0, 8]);
        assert_eq!(yields, 4, "5,000 taken 1,024 at a time");
    });
}

/// Under a 64-byte limit, a continuation of a post (kind 2) announcing
/// 60,000 bytes is refused at its header: only a batch may pass the
/// limit (before, from a review: read and held whole, 68 KiB, first).
#[test]
fn a_fragmented_post_over_the_limit_is_refused_at_the_fragment_that_passes_it() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut frames, _writing, mut theirs) = over_a_pair(64 + HEADER_SLACK);
        let mut first = vec![0x02, 100, 2, 0];
        first.extend_from_slice(&[0; 98]);
        theirs.write_all(&first).unwrap();
        theirs.write_all(&[0x00, 126, (60_000u16 >> 8) as u8, 60_000u16 as u8]).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), frames.next()).await;
        match got {
            Ok(Some(Err(WireError::TooLarge { size: 60_100, limit: 64 }))) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => panic!("still waiting for the 60,000 bytes of a post over the limit"),
        }
    });
}

/// A batch larger than any writer makes is `BatchTooLarge` whatever the
/// limit, as soon as its first byte says it is a batch (before, from a
/// review: `TooLarge { limit: 64 }` under a 64-byte limit).
#[test]
fn a_batch_over_the_largest_is_batch_too_large_under_any_limit() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut batch = vec![9, 0];
        while batch.len() + 8 <= 70_002 {
            batch.extend_from_slice(&4u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 7]);
        }
        for limit in [64 << 20, 64] {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let (mut reader, _sink) = crate::wire::ws::open(ours, limit).await.unwrap().split();
            // Its header and first byte only: refused without the rest.
            theirs.write_all(&binary_frame(&batch)[..11]).unwrap();
            let got = reader.next().await.unwrap();
            assert!(
                matches!(got, Err(WireError::BatchTooLarge { size: 70_002, limit: MAX_BATCH })),
                "under a limit of {limit}: {:?}",
                got.map(|m| m.header.kind)
            );
        }
    });
}
