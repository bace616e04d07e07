//! From an adversarial review of what a worker makes the parent hold
//! through pools, shared buffers, descriptors, cancels and streams.

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    AskStream, Declare, Entry, NoPosts, Parent, Protocol, Requests, SharedBytes, Streamed,
    Worker, WorkerActor, WorkerAddrExt, WorkerBuilder,
};
use futures_util::{stream, StreamExt};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        review_pool::unread_stream_items_hold_descriptors_to_a_bound,
        review_pool::streamed_asks_whose_callers_went_leave_the_pools_queue,
        review_pool::requests_being_answered_hold_descriptors_to_a_bound,
        review_pool::a_timed_ask_whose_caller_went_is_cancelled_in_the_worker,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![review_pool::unread_buffers_role, review_pool::owed_buffers_role,]
}

// ---- the protocol and the worker ---------------------------------------

/// `n` items, each the same sealed one-byte buffer; the worker posts `n`
/// when its producer is dropped (all sent, or cancelled).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<SharedBytes>")]
pub struct Buffers(pub u64);

pub struct Review;

impl Protocol for Review {
    type ToWorker = NoPosts;
    type FromWorker = u64;
    fn requests(declare: &mut Declare) {
        declare.stream::<Buffers>().named("review.buffers");
        declare.request::<AskKeep>().named("review.ask_keep");
        declare.request_to_parent::<Keep>().named("review.keep");
    }
}

pub struct Hoarder {
    parent: Parent<Review>,
}

impl Actor for Hoarder {
    type Context = Context<Self>;
}

actix_webworker::no_posts!(Hoarder);

/// Posts its number when dropped: the producer went.
struct Told(Parent<Review>, u64);

impl Drop for Told {
    fn drop(&mut self) {
        let _ = self.0.post(self.1);
    }
}

impl Handler<Buffers> for Hoarder {
    type Result = Streamed<SharedBytes>;

    fn handle(&mut self, msg: Buffers, _: &mut Context<Self>) -> Streamed<SharedBytes> {
        let buffer = SharedBytes::copy_from_slice(b"x").expect("a memfd");
        let told = Told(self.parent.clone(), msg.0);
        Streamed::new(stream::iter(0..msg.0).map(move |_| {
            let _ = &told;
            buffer.clone()
        }))
    }
}

/// The worker asks the parent `Keep` `n` times at once, each with the
/// same sealed one-byte buffer, and answers at once.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct AskKeep(pub u64);

/// Asked of the parent, which keeps it unanswered.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Keep(pub SharedBytes);

impl Handler<AskKeep> for Hoarder {
    type Result = ();

    fn handle(&mut self, msg: AskKeep, _: &mut Context<Self>) {
        let buffer = SharedBytes::copy_from_slice(b"x").expect("a memfd");
        for _ in 0..msg.0 {
            let asked = self.parent.ask(Keep(buffer.clone()));
            actix::spawn(async move {
                let _ = asked.await;
            });
        }
    }
}

impl WorkerActor for Hoarder {
    type Protocol = Review;

    fn requests(requests: &mut Requests<Self>) {
        requests.stream::<Buffers>().answer::<AskKeep>();
    }
}

pub fn entries() -> Vec<Entry> {
    vec![Entry::new("review-hoarder", |parent| Hoarder { parent })]
}

fn hoarder() -> WorkerBuilder<Review> {
    Worker::<Review>::builder()
        .entry("review-hoarder")
        .restart(actix_webworker::RestartPolicy::never())
        .grace_period(Duration::from_millis(300))
}

// ---- the tests ----------------------------------------------------------

/// Run alone by `unread_stream_items_hold_descriptors_to_a_bound`.
pub fn unread_buffers_role() {
    use std::time::Instant;
    run(async {
        // Its lazily made things in the baseline.
        let (rec, mut events) = events::<Review>();
        let keeper = Keeper(Default::default(), Vec::new()).start();
        let worker = hoarder().events(rec).serve(keeper.recipient::<Keep>()).start().unwrap();
        let mut items = worker.send(AskStream::new(Buffers(1))).await.unwrap();
        assert!(items.next().await.unwrap().is_ok());
        assert_eq!(events.message().await.data, 1);
        let baseline = open_fds();
        // 1,000 items of one buffer each: 15 bytes on the wire apiece, all
        // within a window of 64 KiB unless their descriptors weigh in it.
        // The caller reads one, and waits.
        let n = 1000;
        let mut items =
            worker.send(AskStream::new(Buffers(n)).window(64 << 10)).await.unwrap();
        assert!(items.next().await.unwrap().is_ok());
        // Watched until the producer went (all sent: nothing paced it),
        // or for 10 s.
        let watched = Instant::now();
        let (mut held, mut went) = (0, false);
        while !went && watched.elapsed() < Duration::from_secs(10) {
            held = held.max(open_fds().saturating_sub(baseline));
            went = tokio::time::timeout(Duration::from_millis(10), events.message()).await.is_ok();
        }
        held = held.max(open_fds().saturating_sub(baseline));
        println!("UNREAD_BUFFERS {n} items asked, the producer done: {went}; the parent holds +{held} descriptors");
        // A worker's events may hold 256 descriptors (`event_window_fds`),
        // and all workers' 4,096 (`events_total_fds`): a stream left
        // unread is held to no less.
        assert!(held <= 256 + 64, "an unread stream holds +{held} descriptors of the parent");
        // Paced, not lost: read on, every item comes, and the producer ends.
        let mut read = 1;
        while let Some(item) = tokio::time::timeout(WAIT, items.next()).await.expect("an item") {
            item.unwrap();
            read += 1;
        }
        assert_eq!(read, n);
        assert!(items.is_complete());
        if !went {
            assert_eq!(events.message().await.data, n);
        }
        worker.terminate();
        events.exit().await;
    });
}

/// A worker answering a stream with items that each carry a shared buffer
/// (15 bytes on the wire) makes the parent hold a descriptor per item
/// unread: the window counts the items' bytes, not their descriptors.
pub fn unread_stream_items_hold_descriptors_to_a_bound() {
    print!("{}", isolated("review_pool::unread_buffers_role"));
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

/// Serves `Keep`: counts it, keeps it, never answers.
struct Keeper(std::sync::Arc<std::sync::atomic::AtomicUsize>, Vec<Keep>);

impl Actor for Keeper {
    type Context = Context<Self>;
}

impl Handler<Keep> for Keeper {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, keep: Keep, _: &mut Context<Self>) -> Self::Result {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.1.push(keep);
        Box::pin(std::future::pending())
    }
}

/// Run alone by `requests_being_answered_hold_descriptors_to_a_bound`.
pub fn owed_buffers_role() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    run(async {
        let served = Arc::new(AtomicUsize::new(0));
        let keeper = Keeper(served.clone(), Vec::new()).start();
        let (rec, mut events) = events::<Review>();
        let worker = hoarder().events(rec).serve(keeper.recipient::<Keep>()).start().unwrap();
        // Its lazily made things in the baseline.
        worker.ask(AskKeep(1)).await.unwrap();
        let deadline = Instant::now() + WAIT;
        while served.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let baseline = open_fds();
        // 4,000 requests of one buffer each (a few bytes apiece), all
        // within the bounds of requests being answered (65,536 of them,
        // 16 MiB), which count their bytes but not their descriptors.
        let n = 4000;
        // Its answer is not awaited: a parent that holds the worker back
        // reads it only once its requests are answered.
        let _asking = worker.send(actix_webworker::Ask::new(AskKeep(n)));
        // Watched until all were read, or for 10 s (a parent that holds
        // the worker back reads them only as they are answered).
        let bound = 256 + 64 + 506;
        let watched = Instant::now();
        let mut held = 0;
        loop {
            held = held.max(open_fds().saturating_sub(baseline));
            let all = served.load(Ordering::SeqCst) as u64 > n;
            if all || watched.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        held = held.max(open_fds().saturating_sub(baseline));
        let served = served.load(Ordering::SeqCst);
        println!("OWED_BUFFERS {served} requests being answered, the parent holds +{held} descriptors");
        assert!(held <= bound, "requests being answered hold +{held} descriptors");
        worker.terminate();
        events.exit().await;
    });
}

/// A worker asking the parent requests that each carry a shared buffer,
/// of an actor slow to answer, makes the parent hold a descriptor per
/// request: the bounds of requests being answered count their number and
/// bytes, not their descriptors.
pub fn requests_being_answered_hold_descriptors_to_a_bound() {
    print!("{}", isolated("review_pool::owed_buffers_role"));
}

/// RELIABILITY, "Requests and cancellation": a request the caller gives up
/// on is cancelled on the other side. Here the caller of a timed ask (an
/// hour) goes once the worker has started it: through a worker's address,
/// and through a pool of one member taking one request at a time, whose
/// next caller waits for that place.
pub fn a_timed_ask_whose_caller_went_is_cancelled_in_the_worker() {
    use actix_webworker::{Ask, RestartPolicy, Stats, WorkerPool};
    use std::time::Instant;
    let hour = Duration::from_secs(3600);
    run(async {
        let (worker, mut events) = start();
        let held = worker.send(Ask::new(Hold(1)).timeout(hour));
        while events.message().await.data != Reply::Holding(1) {}
        let gone = Instant::now();
        drop(held);
        let dropped = tokio::time::timeout(Duration::from_secs(10), async {
            while events.message().await.data != Reply::Dropped(1) {}
        })
        .await;
        let in_flight = worker.send(Stats).await.unwrap().members[0].in_flight;
        println!("TIMED_GONE worker: dropped {:?} after, {in_flight} in flight", dropped.as_ref().map(|()| gone.elapsed()));
        assert!(dropped.is_ok(), "the worker still runs it 10 s after its caller went");
        worker.terminate();
        events.exit().await;

        let (rec, mut events) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .restart(RestartPolicy::never())
            .size(1)
            .max_in_flight_per_worker(1)
            .events(rec)
            .start()
            .unwrap();
        let held = pool.send(Ask::new(Hold(2)).timeout(hour));
        loop {
            if let actix_webworker::PoolEvent::Member { event, .. } = events_next(&mut events).await {
                if matches!(event.kind, actix_webworker::Event::Message(ref m) if m.data == Reply::Holding(2)) {
                    break;
                }
            }
        }
        drop(held);
        let gone = Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(10), pool.ask(Sum(vec![2, 3]))).await;
        println!("TIMED_GONE pool: next caller {next:?} after {:?}", gone.elapsed());
        assert_eq!(next.expect("the member's place given back within 10 s").unwrap(), 5);
        pool.terminate();
    });
}

async fn events_next(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<actix_webworker::PoolEvent<Test>>,
) -> actix_webworker::PoolEvent<Test> {
    tokio::time::timeout(WAIT, events.recv()).await.expect("an event in time").expect("events")
}
