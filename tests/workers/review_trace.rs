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
use crate::streams::{Feed, Note, Streams};

pub fn trials() -> Vec<Trial> {
    crate::trials![review_trace::a_stream_asked_twice_under_one_id_leaves_no_producer_behind,]
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

/// A post of `Note::Dropped(n)`.
fn note(n: u8) -> Vec<u8> {
    ws_frame(2, &[2, 0, 0, n])
}

/// The raw peers, when this process is one: answers the hello, then
/// misbehaves as its entry says, then reads until the parent goes.
pub fn run_if_raw() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else { return };
    let Some(scenario) = entry.strip_prefix(PREFIX) else { return };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    let hello = read_frame(&mut sock).unwrap();
    let mut ours = hello.clone();
    ours[18..22].copy_from_slice(&std::process::id().to_le_bytes());
    sock.write_all(&ws_frame(2, &ours)).unwrap();
    match scenario {
        "one-id" => {
            for _ in 0..TWICE {
                sock.write_all(&endless_feed(ID)).unwrap();
            }
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
