//! Shared buffers (`SharedBytes`): message fields that cross as sealed
//! memfds, both ways, in posts, requests and answers.

use actix_webworker::{Event, SharedBytes, SharedBytesMut, WireError, WorkerAddrExt, WorkerError};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        shared::buffers_cross_both_ways_intact_and_mapped,
        shared::requests_and_answers_carry_shared_buffers,
        shared::many_buffers_in_one_message_and_no_more_than_the_limit,
        shared::descriptors_and_mappings_are_released_with_the_messages,
        shared::a_buffer_not_sealed_is_refused_and_the_connection_goes_on,
        shared::a_buffer_shorter_than_announced_is_refused_and_the_connection_goes_on,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![shared::released_role]
}

/// A buffer of `len` bytes, byte `i` being `(i * 7 + seed) as u8`.
fn pattern(len: usize, seed: u8) -> SharedBytes {
    let mut buf = SharedBytesMut::new(len).unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
    buf.freeze().unwrap()
}

pub fn buffers_cross_both_ways_intact_and_mapped() {
    run(async {
        let (worker, mut events) = start();
        let sent = vec![pattern(1 << 20, 1), pattern(5, 2), SharedBytes::default()];
        worker.post(Cmd::Shared(sent.clone()));
        let Reply::Shared(back) = events.message().await.data else { panic!("expected Shared") };
        assert_eq!(back.len(), 4);
        // Ours, through the worker and back, and the worker's own.
        assert_eq!(back[..3], sent[..]);
        assert_eq!(&back[3][..], b"from the worker");
        for buf in back.iter().filter(|b| !b.is_empty()) {
            assert!(buf.is_mapped(), "{buf:?} came as bytes");
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn requests_and_answers_carry_shared_buffers() {
    run(async {
        let (worker, mut events) = start();
        let buf = pattern(3 << 20, 5);
        let expected: u64 = buf.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(worker.ask(Checksum(buf)).await.unwrap(), (expected, true));
        let made = worker.ask(MakeShared(4 << 20, 3)).await.unwrap();
        assert!(made.is_mapped());
        assert_eq!(made.len(), 4 << 20);
        assert!(made.iter().all(|&b| b == 3));
        // An empty one is no descriptor.
        let empty = worker.ask(MakeShared(0, 3)).await.unwrap();
        assert!(empty.is_empty());
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn many_buffers_in_one_message_and_no_more_than_the_limit() {
    run(async {
        let (worker, mut events) = start();
        // 63 of ours and the worker's own: 64 descriptors each way.
        let many: Vec<SharedBytes> = (0..63).map(|i| pattern(4096 + i, i as u8)).collect();
        worker.post(Cmd::Shared(many.clone()));
        let Reply::Shared(back) = events.message().await.data else { panic!("expected Shared") };
        assert_eq!(back[..63], many[..]);
        // One more than a message may carry: refused at once, typed.
        let too_many: Vec<SharedBytes> = (0..65).map(|i| pattern(10, i as u8)).collect();
        let res = worker.send(actix_webworker::Post::new(Cmd::Shared(too_many))).await.unwrap();
        assert!(
            matches!(res, Err(WorkerError::Wire(WireError::TooManyFds { count: 65, limit: 64 }))),
            "{res:?}"
        );
        assert!(matches!(events.next().await, Event::Refused(_)));
        // The worker's answer with 64 of ours and its own would be 65: the
        // worker is refused, and says so.
        let limit: Vec<SharedBytes> = (0..64).map(|i| pattern(10, i as u8)).collect();
        worker.post(Cmd::Shared(limit));
        let Reply::Refused(why) = events.message().await.data else { panic!("expected Refused") };
        assert!(why.contains("65"), "{why}");
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// Memfd mappings of this process.
fn memfd_maps() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.contains("memfd:actix-webworker")).count()
}

/// Run alone by `descriptors_and_mappings_are_released_with_the_messages`.
pub fn released_role() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::FdCount);
        let Reply::Count(theirs) = events.message().await.data else { panic!("expected Count") };
        let (fds, maps) = (open_fds(), memfd_maps());
        for round in 0..50u8 {
            let made = worker.ask(MakeShared(64 << 10, round)).await.unwrap();
            assert!(made.iter().all(|&b| b == round));
            worker.post(Cmd::Shared(vec![made, pattern(100, round)]));
            let Reply::Shared(back) = events.message().await.data else { panic!("Shared") };
            assert_eq!(back.len(), 3);
            // Mapped when first read, not on arrival: a worker's buffers
            // cost the parent no page table until it reads them.
            assert_eq!(memfd_maps(), maps, "mapped before being read");
            assert!(back.iter().all(|b| b.try_as_slice().is_ok()));
            assert!(open_fds() > fds && memfd_maps() > maps, "held while the message is");
        }
        // Every message dropped: every descriptor closed, every mapping
        // gone, on both sides.
        assert_eq!((open_fds(), memfd_maps()), (fds, maps));
        worker.post(Cmd::FdCount);
        assert_eq!(events.message().await.data, Reply::Count(theirs));
        worker.terminate();
        assert!(events.exit().await.success());
        println!("SHARED released: {fds} descriptors, {maps} memfd mappings before and after");
    });
}

pub fn descriptors_and_mappings_are_released_with_the_messages() {
    isolated("shared::released_role");
}

/// Raw worker `scenario` posts a buffer that must be refused, then
/// `Reply::Echo(7)`; the refusal is typed and the connection goes on.
fn refused(scenario: &str, why: &str) {
    run(async {
        let (rec, mut events) = events::<Test>();
        let grace = std::time::Duration::from_millis(100);
        let worker = builder(rec).by_exec().entry(format!("raw-{scenario}")).grace_period(grace).start();
        let worker = worker.unwrap();
        loop {
            match events.next().await {
                Event::Online => continue,
                Event::WireError(WireError::SharedBuffer { why: got }) => {
                    assert!(got.contains(why), "{got}");
                    break;
                }
                other => panic!("expected a refused buffer, got {other:?}"),
            }
        }
        assert_eq!(events.message().await.data, Reply::Echo(7));
        worker.terminate();
        events.exit().await;
    });
}

pub fn a_buffer_not_sealed_is_refused_and_the_connection_goes_on() {
    refused("shared-unsealed", "not sealed");
}

pub fn a_buffer_shorter_than_announced_is_refused_and_the_connection_goes_on() {
    refused("shared-short", "were announced");
}
