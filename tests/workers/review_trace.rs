//! From a review, as a hostile worker: requests and streams under ids the
//! parent is still answering, cancels and credits in odd orders. A
//! hand-written peer (PROTOCOL.md, sections 5 and 9) that breaks the
//! rules; each test says what the parent must still hold to.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_webworker::{Event, Streamed, WireError, Worker, WorkerAddrExt, WorkerBuilder};
use futures_util::stream;
use libtest_mimic::Trial;

use crate::common::*;
use crate::hostile_streams::note;
use crate::streams::{Feed, Note, Streams};

pub fn trials() -> Vec<Trial> {
    crate::trials![
        review_trace::a_stream_asked_twice_under_one_id_leaves_no_producer_behind,
        review_trace::decoded_posts_are_held_to_the_window_in_the_memory_they_take,
        review_trace::terminate_ends_a_worker_that_said_closing_and_lingers,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![review_trace::lines_flood_role]
}

/// Entries of this module's raw peers start with this.
const PREFIX: &str = "review-trace-";

/// How many streamed requests the peer sends under one id.
const TWICE: usize = 100;

/// The id they all have.
const ID: u64 = 7;

/// A streamed request `Feed(u64::MAX)` (kind 19) under `id`, granting no
/// window: the parent's producer waits for credit that never comes.
fn endless_feed(id: u64) -> Vec<u8> {
    let mut ask = vec![19, 0];
    ask.extend_from_slice(&id.to_le_bytes());
    ask.extend_from_slice(&tag_of("streams.feed"));
    ask.extend_from_slice(&0u64.to_le_bytes());
    ask.push(253);
    ask.extend_from_slice(&u64::MAX.to_le_bytes());
    ws_frame(2, &ask)
}

/// The raw peers, when this process is one: answers the hello, then
/// misbehaves as its entry says, then reads until the parent goes.
pub fn run_if_raw() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else { return };
    let Some(scenario) = entry.strip_prefix(PREFIX) else { return };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    crate::hostile::handshake(&mut sock, None, None);
    match scenario {
        "lines" => {
            // A post (kind 2) of `Reply::Lines` (variant 12) of 2 Mi empty
            // strings: bincode writes each as one byte (its length, 0);
            // each is a `String` of 24 bytes once decoded.
            let mut msg = vec![2, 0, 12, 252];
            msg.extend_from_slice(&(LINES as u32).to_le_bytes());
            msg.resize(msg.len() + LINES, 0);
            crate::hostile::flood(&sock, &ws_frame(2, &msg), 48)
        }
        "one-id" => {
            for _ in 0..TWICE {
                sock.write_all(&endless_feed(ID)).unwrap();
            }
            sock.write_all(&note(1)).unwrap();
        }
        "closing-lingers" => {
            // Says it closes itself (kind 8), posts `Reply::Echo(1)`, and
            // goes on: it never closes, whatever it reads.
            sock.write_all(&ws_frame(2, &[8, 0])).unwrap();
            sock.write_all(&note(1)).unwrap();
        }
        other => panic!("no raw peer {other}"),
    }
    while read_frame(&mut sock).is_some() {}
    std::process::exit(0);
}

/// A raw peer, the parent serving `Feed` with producers that count
/// themselves: made, and dropped.
fn counted(scenario: &str, made: Arc<AtomicUsize>, dropped: Arc<AtomicUsize>) -> WorkerBuilder<Streams> {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    Worker::<Streams>::builder()
        .by_exec()
        .entry(format!("{PREFIX}{scenario}"))
        .restart(actix_webworker::RestartPolicy::never())
        .grace_period(Duration::from_millis(100))
        .serve_stream(move |_: Feed| {
            made.fetch_add(1, Ordering::SeqCst);
            let counted = Counted(dropped.clone());
            Streamed::new(stream::unfold(0u64, move |n| {
                let _ = &counted;
                async move { Some((n, n + 1)) }
            }))
        })
}

/// PROTOCOL.md section 5: ids are "unique on a connection"; a worker that
/// breaks that asks the parent for a stream 100 times under one id, granting
/// no window, and is then terminated. Answering's own promise (session/
/// answers.rs): "the streamed answers still owed are cancelled [when its
/// session ends], as if their askers had, for no asker is left to read
/// them (a producer would otherwise run on for ever, waiting for credit
/// that never comes)". Every producer the parent made must be dropped
/// once the worker has gone.
pub fn a_stream_asked_twice_under_one_id_leaves_no_producer_behind() {
    run(async {
        let (made, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (rec, mut events) = events::<Streams>();
        let worker = counted("one-id", made.clone(), dropped.clone()).events(rec).start().unwrap();
        // The post after the requests: all of them were read.
        let mut said = Vec::new();
        loop {
            match events.next().await {
                Event::Online => {}
                Event::WireError(e) => said.push(e),
                Event::Message(m) => {
                    assert_eq!(m.data, Note::Dropped(1));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        worker.terminate();
        events.exit().await;
        // Until every producer made is dropped, or for 10 s.
        let started = Instant::now();
        while dropped.load(Ordering::SeqCst) < made.load(Ordering::SeqCst)
            && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (made, dropped) = (made.load(Ordering::SeqCst), dropped.load(Ordering::SeqCst));
        let duplicates = said.iter().filter(|e| **e == WireError::DuplicateId(ID)).count();
        println!(
            "{TWICE} streams under id {ID}: {made} producers made, {dropped} dropped {:?} after \
             the exit; {duplicates} told as DuplicateId, {} other wire errors",
            started.elapsed(),
            said.len() - duplicates,
        );
        let left = made - dropped;
        assert_eq!(left, 0, "{left} producers left running for a worker that has gone");
        assert_eq!((duplicates, said.len()), (TWICE - 1, TWICE - 1), "{said:?}");
    });
}

/// The empty strings of each post of the "lines" peer.
const LINES: usize = 2 << 20;

/// Run alone by `decoded_posts_are_held_to_the_window_in_the_memory_they_take`.
pub fn lines_flood_role() {
    use actix_webworker::{Codec, Limits, RestartPolicy};
    run(async {
        // A worker of the test protocol first: what any start costs.
        let (good, mut good_events) = start();
        assert_eq!(good.ask(Sum(vec![20, 22])).await.unwrap(), 42);
        good.terminate();
        good_events.exit().await;
        let before = status_kib("VmRSS:");
        let window = 8 << 20;
        let (_worker, mut events) = Worker::<Test>::builder()
            .by_exec()
            .entry(format!("{PREFIX}lines"))
            .restart(RestartPolicy::never())
            .codec(Codec::Bincode)
            .limits(Limits::default().event_window_bytes(window))
            .start_with_events()
            .unwrap();
        let online = events.next().await.unwrap();
        assert!(matches!(online.kind, Event::Online), "{:?}", online.kind);
        let pid = online.pid;
        let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
        assert!(gone, "the flood never ended");
        let grew = status_kib("VmHWM:").saturating_sub(before);
        let (mut posts, mut strings) = (0, 0);
        let status = loop {
            match events.next().await.unwrap().kind {
                Event::Message(m) => match m.data {
                    Reply::Lines(lines) => (posts, strings) = (posts + 1, strings + lines.len()),
                    other => panic!("unexpected {other:?}"),
                },
                // Held back, it exits mid-frame.
                Event::WireError(WireError::CutOff) => {}
                Event::Exit(status) => break status,
                other => panic!("unexpected {other:?}"),
            }
        };
        println!(
            "{posts} posts of {} MiB on the wire ({strings} empty strings) read under a window of \
             {} MiB, never handled: the parent's peak +{grew} KiB; worker {status}",
            (LINES + 8) >> 20,
            window >> 20
        );
        // What one post takes once decoded (48 MiB) fills the window: it is
        // the one event past it, and nothing more is read.
        assert_eq!(posts, 1, "{posts} posts read under a window of 8 MiB");
        // That post, and the frames being read: not 24 times the window.
        assert!(grew < 64 << 10, "the parent grew by {grew} KiB for events of {} MiB", posts * 2);
    });
}

/// RELIABILITY, guarantee 4: "unhandled events hold at most
/// `event_window_bytes` (64 MiB) of payloads [...], and one event past it".
/// A worker posts `Reply::Lines` of 2 Mi empty strings: 2 MiB on the wire,
/// 48 MiB of `String`s once decoded. The window counts what a post takes
/// once decoded: under a window of 8 MiB, one post is read and the worker
/// held back (before: 4 read, counted 2 MiB each, the parent +198,912 KiB).
pub fn decoded_posts_are_held_to_the_window_in_the_memory_they_take() {
    print!("{}", isolated("review_trace::lines_flood_role"));
}

/// README and RELIABILITY (guarantee 1): `terminate` starts its grace
/// period at once, then SIGTERM and SIGKILL to the group if the worker
/// lingers. A worker that sends `Closing` (PROTOCOL.md section 7: "a clean
/// exit follows") and then lingers, reading all and closing nothing: the
/// parent's `terminate()` must still end it, within its grace (100 ms)
/// and kill delay.
pub fn terminate_ends_a_worker_that_said_closing_and_lingers() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = Worker::<Test>::builder()
            .by_exec()
            .entry(format!("{PREFIX}closing-lingers"))
            .restart(actix_webworker::RestartPolicy::never())
            .grace_period(Duration::from_millis(100))
            .kill_delay(Duration::from_millis(100))
            .events(rec)
            .start()
            .unwrap();
        // The post behind its Closing: that was read.
        assert_eq!(events.message().await.data, Reply::Echo(1));
        let asked = Instant::now();
        worker.terminate();
        let exit = tokio::time::timeout(Duration::from_secs(10), events.exit()).await;
        println!("terminate() after the worker's Closing: {exit:?} {:?} after", asked.elapsed());
        let status = exit.expect("the worker still runs 10 s after terminate()");
        assert_eq!(status.signal, Some(15), "{status}");
    });
}
