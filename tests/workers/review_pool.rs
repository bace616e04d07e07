//! From an adversarial review of what a worker makes the parent hold
//! through pools, shared buffers, descriptors, cancels and streams.

use std::time::Duration;

use actix_webworker::{AskStream, Entry, Streamed, WorkerAddrExt};
use futures_util::StreamExt;
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        review_pool::streamed_asks_whose_callers_went_leave_the_pools_queue,
    ]
}

pub fn roles() -> Vec<Trial> {
    Vec::new()
}

// ---- the tests ----------------------------------------------------------

pub fn entries() -> Vec<Entry> {
    Vec::new()
}

/// Guarantee 3 of "Pools and ports" (RELIABILITY.md): a caller that goes
/// leaves the pool within 100 ms, wherever its request waits; and the
/// queue's bound under `WhenFull::Fail` refuses only for requests someone
/// waits for. Here the callers of four streamed requests go while they
/// wait in a queue of 4.
pub fn streamed_asks_whose_callers_went_leave_the_pools_queue() {
    use crate::streams::{Count, Endless, Streams};
    use actix_webworker::{Stats, WhenFull, WorkerPool};
    use std::time::Instant;
    run(async {
        let pool = WorkerPool::<Streams>::builder()
            .entry("streamer")
            .size(1)
            .max_in_flight_per_worker(1)
            .queue(4, WhenFull::Fail)
            .serve_stream(|feed: crate::streams::Feed| Streamed::iter(0..feed.0))
            .start()
            .unwrap();
        // The one member busy with a stream held unread.
        let mut busy = pool.send(AskStream::new(Endless).window(64)).await.unwrap();
        let first = tokio::time::timeout(WAIT, busy.next()).await.expect("an item in time");
        assert!(first.unwrap().is_ok());
        // Four streamed asks queued, whose callers then go.
        let callers: Vec<_> =
            (0..4).map(|n| pool.send(AskStream::new(Count { n, pad: 0 }))).collect();
        let queued = || async { pool.send(Stats).await.unwrap().queued };
        assert_eq!(queued().await, 4, "handled in order, before Stats");
        drop(callers);
        let gone = Instant::now();
        let deadline = gone + Duration::from_secs(5);
        let mut seen = queued().await;
        while seen > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = queued().await;
        }
        let took = gone.elapsed();
        // Someone who waits is not refused for those who went.
        let live = pool.send(AskStream::new(Count { n: 3, pad: 0 }));
        drop(busy);
        let mut live = tokio::time::timeout(WAIT, live).await.expect("in time").unwrap();
        let first = tokio::time::timeout(WAIT, live.next()).await.expect("an item in time");
        println!("STREAMS_GONE {seen} still queued {took:?} after their callers went; then {first:?}");
        assert_eq!(seen, 0, "streamed asks whose callers went still queued after 5 s");
        assert_eq!(first.unwrap().unwrap().n, 0);
        for n in 1..3 {
            let row = tokio::time::timeout(WAIT, live.next()).await.expect("an item in time");
            assert_eq!(row.unwrap().unwrap().n, n);
        }
        pool.terminate();
    });
}
