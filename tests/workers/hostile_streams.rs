//! Streamed answers from a worker that breaks the rules: a hand-written
//! peer (from PROTOCOL.md, section 9) that sends items past the window,
//! for requests never asked, after the end, and credits for streams the
//! parent does not answer. Each gives the caller a typed
//! error (or nothing, for what nobody waits for), and the connection and
//! the parent go on.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use actix_webworker::{AskStream, Event, WireError, WorkerAddrExt, WorkerError};
use futures_util::StreamExt;
use libtest_mimic::Trial;

use crate::common::*;
use crate::streams::{Count, Note, Row, Streams};

pub fn trials() -> Vec<Trial> {
    crate::trials![
        hostile_streams::items_past_the_window_fail_the_stream_and_cancel_it,
        hostile_streams::items_never_asked_are_reported_and_those_after_the_end_dropped,
        hostile_streams::an_asker_that_never_reads_is_held_to_the_queues_bound,
    ]
}

/// Entries of the raw streaming peers start with this.
const PREFIX: &str = "rawstream-";

/// The messages of the next frame: itself, or a batch's entries.
fn read_messages(sock: &mut UnixStream) -> Option<Vec<Vec<u8>>> {
    read_frame(sock).map(|frame| messages(&frame))
}

fn le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Waits for the parent's streamed request (kind 19): its id and window.
fn stream_request(sock: &mut UnixStream) -> (u64, u64) {
    loop {
        for msg in read_messages(sock).expect("the parent's request") {
            if msg[0] == 19 {
                return (le(&msg[2..]), le(&msg[18..]));
            }
        }
    }
}

/// An item of stream `id`: `Row { n, pad: [] }` in bincode.
fn item(id: u64, n: u8) -> Vec<u8> {
    let mut msg = vec![16, 0];
    msg.extend_from_slice(&id.to_le_bytes());
    msg.extend_from_slice(&[n, 0]);
    ws_frame(2, &msg)
}

/// A post of `Note::Dropped(n)`.
pub fn note(n: u8) -> Vec<u8> {
    ws_frame(2, &[2, 0, 0, n])
}

/// The raw peers, when this process is one: answers the hello, then
/// misbehaves as its entry says, then waits for the parent to go.
pub fn run_if_raw_streamer() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else { return };
    let Some(scenario) = entry.strip_prefix(PREFIX) else { return };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    crate::hostile::handshake(&mut sock, None, None);
    if scenario == "greedy" {
        // Asks the parent for 4 billion numbers with a window of 1 GiB,
        // and never reads again.
        let mut ask = vec![19, 0];
        ask.extend_from_slice(&1u64.to_le_bytes());
        ask.extend_from_slice(&tag_of("streams.feed"));
        ask.extend_from_slice(&(1u64 << 30).to_le_bytes());
        ask.extend_from_slice(&[252, 0, 0x28, 0x6b, 0xee]);
        sock.write_all(&ws_frame(2, &ask)).unwrap();
        loop {
            std::thread::park();
        }
    }
    let (id, window) = stream_request(&mut sock);
    match scenario {
        "past-window" => {
            // Items of 12 bytes each, twice the window's worth, unasked.
            for n in 0..(2 * window / 12 + 2) {
                sock.write_all(&item(id, (n % 200) as u8)).unwrap();
            }
            // The parent cancels the stream: say so, by a post.
            loop {
                let msgs = read_messages(&mut sock).unwrap();
                if msgs.iter().any(|m| m[0] == 11 && le(&m[2..]) == id) {
                    sock.write_all(&note(1)).unwrap();
                    break;
                }
            }
        }
        "stray" => {
            for n in 0..3 {
                sock.write_all(&item(id, n)).unwrap();
            }
            let mut end = vec![17, 0];
            end.extend_from_slice(&id.to_le_bytes());
            sock.write_all(&ws_frame(2, &end)).unwrap();
            // After the end, and for requests never asked.
            sock.write_all(&item(id, 9)).unwrap();
            sock.write_all(&item(1 << 40, 9)).unwrap();
            let mut end = vec![17, 0];
            end.extend_from_slice(&(1u64 << 41).to_le_bytes());
            sock.write_all(&ws_frame(2, &end)).unwrap();
            // Credits for streams the parent is not answering, one of
            // them as large as a credit can be: ignored.
            for (id, bytes) in [(77u64, u64::MAX), (id, 1 << 20)] {
                let mut credit = vec![18, 0];
                credit.extend_from_slice(&id.to_le_bytes());
                credit.extend_from_slice(&bytes.to_le_bytes());
                sock.write_all(&ws_frame(2, &credit)).unwrap();
            }
            sock.write_all(&note(2)).unwrap();
        }
        other => panic!("no raw streamer {other}"),
    }
    // Until the parent goes.
    while read_frame(&mut sock).is_some() {}
    std::process::exit(0);
}

fn raw(scenario: &str) -> actix_webworker::WorkerBuilder<Streams> {
    unserved(scenario)
        .serve_stream(|feed: crate::streams::Feed| actix_webworker::Streamed::iter(0..feed.0))
}

/// A raw peer whose streamed requests the test serves itself.
fn unserved(scenario: &str) -> actix_webworker::WorkerBuilder<Streams> {
    actix_webworker::Worker::<Streams>::builder()
        .by_exec().entry(format!("{PREFIX}{scenario}"))
        .restart(actix_webworker::RestartPolicy::never())
        .grace_period(std::time::Duration::from_millis(100))
}

async fn next_item(
    rows: &mut actix_webworker::AnswerStream<Row>,
) -> Option<Result<Row, WorkerError>> {
    tokio::time::timeout(WAIT, rows.next()).await.expect("an item in time")
}

pub fn items_past_the_window_fail_the_stream_and_cancel_it() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = raw("past-window").events(rec).start().unwrap();
        let window = 120;
        let mut rows =
            worker.send(AskStream::new(Count { n: 0, pad: 0 }).window(window)).await.unwrap();
        // Nothing read, so nothing granted beyond the window, until the
        // peer has seen the cancel and said so (the connection goes on).
        assert_eq!(events.message().await.data, Note::Dropped(1));
        // Ten items filled the window (12 bytes each); the eleventh was
        // past it: the stream failed with that, after the ten.
        let mut got = 0;
        let last = loop {
            match next_item(&mut rows).await {
                Some(Ok(row)) => {
                    assert_eq!(row.n, got);
                    got += 1;
                }
                other => break other,
            }
        };
        assert_eq!(got, 10, "the window's worth and no more");
        match last {
            Some(Err(WorkerError::Wire(WireError::PastWindow { granted, received }))) => {
                assert_eq!((granted, received), (120, 120));
            }
            other => panic!("expected PastWindow, got {other:?}"),
        }
        assert!(next_item(&mut rows).await.is_none());
        worker.terminate();
        events.exit().await;
    });
}

pub fn items_never_asked_are_reported_and_those_after_the_end_dropped() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = raw("stray").events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(Count { n: 0, pad: 0 })).await.unwrap();
        for n in 0..3 {
            assert_eq!(next_item(&mut rows).await.unwrap().unwrap().n, n);
        }
        assert!(next_item(&mut rows).await.is_none() && rows.is_complete());
        // The item for a request never asked is reported; the one after
        // the end, the end never asked and the credits for streams the
        // parent does not answer are dropped; the post after them arrives.
        let mut said = Vec::new();
        loop {
            match events.next().await {
                Event::Online => {}
                Event::WireError(e) => said.push(e),
                Event::Message(m) => {
                    assert_eq!(m.data, Note::Dropped(2));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(said, [WireError::UnknownStream(1 << 40)]);
        worker.terminate();
        events.exit().await;
    });
}

/// A worker that asks the parent for a stream with the largest window (1
/// GiB) and never reads its socket: the parent's producer waits for room
/// in the worker's queue (here 1 MiB), so what it makes stops near that,
/// not at the window. Before, the items went into the queue past its
/// bound, up to the window.
pub fn an_asker_that_never_reads_is_held_to_the_queues_bound() {
    use std::sync::atomic::{AtomicU64, Ordering};
    run(async {
        let made = std::sync::Arc::new(AtomicU64::new(0));
        let counted = made.clone();
        let (rec, mut events) = events::<Streams>();
        let limits = actix_webworker::Limits::default().max_queued_bytes(1 << 20);
        let worker = unserved("greedy")
            .limits(limits)
            .serve_stream(move |feed: crate::streams::Feed| {
                let counted = counted.clone();
                let numbers = (0..feed.0).inspect(move |_| {
                    counted.fetch_add(1, Ordering::Relaxed);
                });
                actix_webworker::Streamed::iter(numbers)
            })
            .events(rec)
            .start()
            .unwrap();
        // Until the producer has stood still for half a second.
        let (mut last, started) = (0, std::time::Instant::now());
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = made.load(Ordering::Relaxed);
            if now == last && now > 0 {
                break;
            }
            assert!(started.elapsed() < WAIT, "still making items after {WAIT:?}: {now}");
            last = now;
        }
        // Each item is 11 to 15 bytes on the wire.
        let bytes = last * 15;
        println!("made {last} items (at most {} KiB) for a peer that never reads", bytes >> 10);
        assert!(bytes < 8 << 20, "{last} items made");
        worker.terminate();
        events.exit().await;
    });
}
