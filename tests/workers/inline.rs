//! Inline bytes (`InlineBytes`): large payloads written from the sender's
//! own buffer, in pieces, and read back as slices of the message, both
//! ways, in posts, requests and answers; in order with small messages,
//! with descriptors, and over TLS.

use std::io::Read;

use actix::prelude::*;
use actix_webworker::{
    Entry, InlineBytes, Parent, Post, Protocol, Received, Requests, Worker, WorkerActor,
    WorkerAddrExt, WorkerBuilder, WorkerEvent,
};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::trials![
        inline::one_and_sixteen_mib_cross_both_ways_intact,
        inline::large_and_small_messages_keep_their_order,
        inline::a_large_message_carries_its_descriptor,
        inline::a_crash_mid_message_resends_what_never_left_whole_and_in_order,
        inline::the_json_codec_carries_them_as_bytes_do,
    ];
    tests.extend(crate::with_feature!(
        "tls",
        trials![inline::large_messages_cross_both_ways_over_tls]
    ));
    tests
}

/// What goes either way.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Carry {
    /// Bytes, numbered: the worker sends back `Sum` and then the same
    /// bytes (its own, as received) with the same number.
    Bytes(u64, InlineBytes),
    /// A small message, numbered: sent back as it is.
    Small(u64),
    /// Message `n`'s length, checksum, and the text of the descriptor that
    /// came with it (if one did).
    Sum { n: u64, len: usize, sum: u64, fd: Option<String> },
}

/// Answered with the checksum of the bytes.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Checksum(pub InlineBytes);

/// Answered with `len` bytes of [`pattern`] `seed`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "InlineBytes")]
pub struct Make(pub usize, pub u8);

/// Answered with the worker's pid.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct Pid;

pub struct Carried;

impl Protocol for Carried {
    type ToWorker = Carry;
    type FromWorker = Carry;
}

/// Bytes whose every byte depends on its place and on `seed`.
pub fn pattern(len: usize, seed: u8) -> InlineBytes {
    let bytes: Vec<u8> =
        (0..len).map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed).collect();
    InlineBytes::from(bytes)
}

/// A checksum that sees order.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| acc.wrapping_mul(31).wrapping_add(u64::from(b)))
}

pub struct Carrier {
    parent: Parent<Carried>,
}

impl Actor for Carrier {
    type Context = Context<Self>;
}

impl Handler<Received<Carry>> for Carrier {
    type Result = ();

    fn handle(&mut self, msg: Received<Carry>, _: &mut Context<Self>) {
        match msg.data {
            Carry::Bytes(n, bytes) => {
                let fd = msg.fds.into_iter().next().map(|fd| {
                    let mut text = String::new();
                    std::fs::File::from(fd).read_to_string(&mut text).expect("read");
                    text
                });
                let sum = checksum(&bytes);
                let len = bytes.len();
                self.parent.post(Carry::Sum { n, len, sum, fd }).expect("post");
                self.parent.post(Carry::Bytes(n, bytes)).expect("post");
            }
            small => self.parent.post(small).expect("post"),
        }
    }
}

impl Handler<Checksum> for Carrier {
    type Result = u64;

    fn handle(&mut self, msg: Checksum, _: &mut Context<Self>) -> u64 {
        checksum(&msg.0)
    }
}

impl Handler<Make> for Carrier {
    type Result = MessageResult<Make>;

    fn handle(&mut self, msg: Make, _: &mut Context<Self>) -> Self::Result {
        MessageResult(pattern(msg.0, msg.1))
    }
}

impl Handler<Pid> for Carrier {
    type Result = u32;

    fn handle(&mut self, _: Pid, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}

impl WorkerActor for Carrier {
    type Protocol = Carried;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Checksum>().answer::<Make>().answer::<Pid>();
    }
}

pub fn entries() -> Vec<Entry> {
    vec![Entry::new("inline", |parent: Parent<Carried>| Carrier { parent })]
}

fn carrier(events: Recipient<WorkerEvent<Carried>>) -> WorkerBuilder<Carried> {
    Worker::<Carried>::builder()
        .entry("inline")
        .env("RUST_BACKTRACE", "0")
        .restart(actix_webworker::RestartPolicy::never())
        .events(events)
}

/// Posts `bytes` as message `n` and checks what comes back: its sum, then
/// the bytes themselves, intact.
async fn round_trip(worker: &Addr<Worker<Carried>>, events: &mut Events<Carried>, n: u64) {
    let bytes = pattern((1 << 20) + n as usize, n as u8);
    worker.post(Carry::Bytes(n, bytes.clone()));
    let (len, sum) = (bytes.len(), checksum(&bytes));
    assert_eq!(events.message().await.data, Carry::Sum { n, len, sum, fd: None });
    assert_eq!(events.message().await.data, Carry::Bytes(n, bytes));
}

/// Both sizes each way: posted and posted back, asked and answered.
async fn both_ways(worker: &Addr<Worker<Carried>>, events: &mut Events<Carried>) {
    for (n, len) in [(1u64, 1usize << 20), (2, 16 << 20)] {
        let bytes = pattern(len, n as u8);
        worker.post(Carry::Bytes(n, bytes.clone()));
        let sum = checksum(&bytes);
        assert_eq!(events.message().await.data, Carry::Sum { n, len, sum, fd: None });
        let Carry::Bytes(m, back) = events.message().await.data else { panic!("expected Bytes") };
        assert_eq!((m, back.len(), checksum(&back)), (n, len, sum));
        assert!(back == bytes);
        assert_eq!(worker.ask(Checksum(bytes.clone())).await.unwrap(), sum);
        let made = worker.ask(Make(len, 9)).await.unwrap();
        assert_eq!(made, pattern(len, 9));
    }
}

pub fn one_and_sixteen_mib_cross_both_ways_intact() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let worker = carrier(rec).start().unwrap();
        both_ways(&worker, &mut events).await;
        round_trip(&worker, &mut events, 3).await;
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn large_and_small_messages_keep_their_order() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let worker = carrier(rec).start().unwrap();
        // Small and large, queued together: the large ones are written in
        // pieces between batches of small ones.
        let sizes = [100usize, 20 << 10, 3, 1 << 20, 16 << 10, 5, 4 << 20, 1];
        for (n, &len) in sizes.iter().enumerate() {
            worker.post(Carry::Small(n as u64 * 2));
            worker.post(Carry::Bytes(n as u64 * 2 + 1, pattern(len, n as u8)));
        }
        for (n, &len) in sizes.iter().enumerate() {
            let (n, bytes) = (n as u64 * 2, pattern(len, n as u8));
            assert_eq!(events.message().await.data, Carry::Small(n));
            let sum = checksum(&bytes);
            let sums = Carry::Sum { n: n + 1, len, sum, fd: None };
            assert_eq!(events.message().await.data, sums);
            assert_eq!(events.message().await.data, Carry::Bytes(n + 1, bytes));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_large_message_carries_its_descriptor() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let worker = carrier(rec).start().unwrap();
        for (n, len) in [(1u64, 1usize << 20), (2, 16 << 20)] {
            let (r, mut w) = std::io::pipe().unwrap();
            std::io::Write::write_all(&mut w, format!("pipe {n}").as_bytes()).unwrap();
            drop(w);
            let bytes = pattern(len, n as u8);
            worker.send(Post::with_fds(Carry::Bytes(n, bytes.clone()), vec![r.into()])).await
                .unwrap()
                .unwrap();
            let (sum, fd) = (checksum(&bytes), Some(format!("pipe {n}")));
            assert_eq!(events.message().await.data, Carry::Sum { n, len, sum, fd });
            assert_eq!(events.message().await.data, Carry::Bytes(n, bytes));
        }
        // And one without: the worker sees none.
        round_trip(&worker, &mut events, 3).await;
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

#[cfg(feature = "tls")]
pub fn large_messages_cross_both_ways_over_tls() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let tls = actix_webworker::Transport::tls("127.0.0.1:0".parse().unwrap());
        let worker = carrier(rec).transport(tls).start().unwrap();
        both_ways(&worker, &mut events).await;
        // Pieces and small messages, in order.
        let bytes = pattern(3 << 20, 11);
        worker.post(Carry::Small(10));
        worker.post(Carry::Bytes(11, bytes.clone()));
        worker.post(Carry::Small(12));
        assert_eq!(events.message().await.data, Carry::Small(10));
        let (len, sum) = (bytes.len(), checksum(&bytes));
        assert_eq!(events.message().await.data, Carry::Sum { n: 11, len, sum, fd: None });
        assert_eq!(events.message().await.data, Carry::Bytes(11, bytes));
        assert_eq!(events.message().await.data, Carry::Small(12));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A worker that reads nothing (stopped) is sent 1 MiB messages: the
/// first is written in part (the socket takes a fraction of it), the rest
/// wait. Killed, it comes back, and what never left goes to the new
/// process whole, in order, after the one cut off (counted, not resent).
pub fn a_crash_mid_message_resends_what_never_left_whole_and_in_order() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let policy = fast(actix_webworker::Restart::OnFailure);
        let worker = carrier(rec).restart(policy).start().unwrap();
        let pid = worker.ask(Pid).await.unwrap();
        assert!(kill(pid, Signal::SIGSTOP));
        const N: u64 = 24;
        for n in 0..N {
            worker.post(Carry::Bytes(n, pattern(1 << 20, n as u8)));
        }
        // Turns for the writer, to fill the socket (round trips to another
        // worker): the test holds whether it did or not.
        let (rec, mut other_events) = crate::common::events::<Carried>();
        let other = carrier(rec).start().unwrap();
        for _ in 0..3 {
            assert_eq!(other.ask(Checksum(InlineBytes::new())).await.unwrap(), 0);
        }
        other.terminate();
        other_events.exit().await;
        assert!(kill(pid, Signal::SIGKILL));
        let (mut got, mut maybe_lost) = (Vec::new(), 0);
        while got.last() != Some(&(N - 1)) {
            match events.next().await {
                actix_webworker::Event::Message(m) => match m.data {
                    Carry::Sum { n, len, sum, fd: None } => {
                        let bytes = pattern(1 << 20, n as u8);
                        assert_eq!((len, sum), (bytes.len(), checksum(&bytes)), "message {n}");
                    }
                    Carry::Bytes(n, bytes) => {
                        assert!(bytes == pattern(1 << 20, n as u8), "message {n} intact");
                        got.push(n);
                    }
                    other => panic!("unexpected {other:?}"),
                },
                actix_webworker::Event::MaybeLost(n) => maybe_lost += n,
                actix_webworker::Event::GaveUp(g) => panic!("gave up: {g:?}"),
                _ => {}
            }
        }
        let first = got[0];
        assert_eq!(got, (first..N).collect::<Vec<_>>());
        assert!((first as usize..=first as usize + 1).contains(&maybe_lost), "{maybe_lost}");
        println!("INLINE CRASH never_read={first} maybe_lost={maybe_lost} resent={}", N - first);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// With JSON (numbers on the wire, nothing referenced), the same bytes
/// arrive, both ways.
pub fn the_json_codec_carries_them_as_bytes_do() {
    run(async {
        let (rec, mut events) = events::<Carried>();
        let worker = carrier(rec).codec(actix_webworker::Codec::Json).start().unwrap();
        round_trip(&worker, &mut events, 4).await;
        let bytes = pattern(100 << 10, 5);
        assert_eq!(worker.ask(Checksum(bytes.clone())).await.unwrap(), checksum(&bytes));
        assert_eq!(worker.ask(Make(100 << 10, 6)).await.unwrap(), pattern(100 << 10, 6));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
