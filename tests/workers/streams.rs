//! Answers that stream: a request whose answer is a typed stream of
//! items, read with `StreamExt::next()`, paced by a window of bytes,
//! cancelled when the reader drops it; both ways, through a `Port` and
//! a pool; a worker lost mid-stream.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    AnswerStream, AskStream, Declare, Entry, Join, NoPosts, Parent, Port, Protocol, Requests,
    Stats, Streamed, Worker, WorkerActor, WorkerAddrExt, WorkerBuilder, WorkerError, WorkerPool,
};
use futures_util::{stream, StreamExt};
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        streams::items_come_in_order_then_the_end,
        streams::an_error_raised_by_the_producer_is_the_last_item,
        streams::a_worker_killed_mid_stream_ends_the_stream_with_its_exit,
        streams::a_stream_dropped_mid_way_drops_the_producer_within_100_ms,
        streams::a_million_items_to_a_slow_reader_hold_memory_to_the_window,
        streams::a_worker_asks_the_parent_for_a_stream,
        streams::a_port_asks_for_a_stream,
        streams::a_pool_counts_a_stream_in_flight_until_it_ends,
        streams::the_parents_producer_goes_with_the_worker_and_sends_the_next_nothing,
        streams::a_producer_that_panics_ends_the_stream_with_its_report_and_the_worker_goes_on,
        streams::a_refused_stream_is_its_reason_then_the_end,
        streams::a_parents_producer_that_panics_is_reported_to_the_worker_as_a_panic,
        streams::a_serve_stream_closure_that_panics_fails_that_request_only,
        streams::a_producer_whose_drop_panics_ends_with_the_first_panics_report,
        streams::a_producer_panic_is_one_event_error_also_at_the_first_poll,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![streams::a_million_items_alone,]
}

// ---- the protocol and the worker ---------------------------------------

/// One item: its number, and ballast.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub n: u64,
    #[serde(with = "serde_bytes")]
    pub pad: Vec<u8>,
}

/// Rows `0..n`, each with `pad` bytes of ballast.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<Row>")]
pub struct Count {
    pub n: u64,
    pub pad: usize,
}

/// Rows `0..n`, then the error "row n is bad".
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<Row>")]
pub struct FailAt(pub u64);

/// Rows `0..`, made by a plain producer (`Streamed::new`) that panics
/// with "row n panicked" as it makes row `n`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<Row>")]
pub struct PanicAt(pub u64);

/// Rows for ever; the worker posts `Note::Dropped` when the producer is
/// dropped.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<Row>")]
pub struct Endless;

/// The worker asks the parent for `Feed(n)` and answers the sum of what
/// came, and whether the stream came complete.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<(u64, u64), String>")]
pub struct SumFromParent(pub u64);

/// Served by the parent: `0..n`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<u64>")]
pub struct Feed(pub u64);

/// The worker asks the parent for `Feed(u64::MAX)` with a window of
/// `0` bytes, holds the stream and reads none of it.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct HoldFeed(pub usize);

/// Declared by nobody, answered by nobody.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<u8>")]
pub struct Unstreamed;

/// What the worker posts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Note {
    /// An endless producer was dropped; its pid.
    Dropped(u32),
}

pub struct Streams;

impl Protocol for Streams {
    type ToWorker = NoPosts;
    type FromWorker = Note;
    fn requests(declare: &mut Declare) {
        declare.stream::<Count>().named("streams.count");
        declare.stream::<FailAt>().named("streams.fail_at");
        declare.stream::<Endless>().named("streams.endless");
        declare.stream::<PanicAt>().named("streams.panic_at");
        declare.stream::<PanicThenDropPanics>().named("streams.panic_then_drop_panics");
        declare.request::<SumFromParent>().named("streams.sum_from_parent");
        declare.stream_to_parent::<Feed>().named("streams.feed");
        declare.request::<HoldFeed>().named("streams.hold_feed");
    }
}

pub struct Streamer {
    parent: Parent<Streams>,
    /// The streams `HoldFeed` holds unread.
    held: Vec<AnswerStream<u64>>,
}

impl Actor for Streamer {
    type Context = Context<Self>;
}

actix_webworker::no_posts!(Streamer);

fn rows(range: impl Iterator<Item = u64> + 'static, pad: usize) -> impl Stream<Item = Row> {
    stream::iter(range.map(move |n| Row { n, pad: vec![7; pad] }))
}

impl Handler<Count> for Streamer {
    type Result = Streamed<Row>;

    fn handle(&mut self, msg: Count, _: &mut Context<Self>) -> Streamed<Row> {
        Streamed::new(rows(0..msg.n, msg.pad))
    }
}

impl Handler<FailAt> for Streamer {
    type Result = Streamed<Row>;

    fn handle(&mut self, msg: FailAt, _: &mut Context<Self>) -> Streamed<Row> {
        let bad = msg.0;
        let rows = (0..=bad).map(move |n| match n {
            n if n == bad => Err(format!("row {n} is bad")),
            n => Ok(Row { n, pad: Vec::new() }),
        });
        Streamed::fallible(stream::iter(rows))
    }
}

impl Handler<PanicAt> for Streamer {
    type Result = Streamed<Row>;

    fn handle(&mut self, msg: PanicAt, _: &mut Context<Self>) -> Streamed<Row> {
        let bad = msg.0;
        Streamed::new(stream::iter(0..).map(move |n| {
            if n == bad {
                panic!("row {n} panicked");
            }
            Row { n, pad: Vec::new() }
        }))
    }
}

/// Rows `0..`, panicking with "row n panicked" at row `n`;
/// the producer's own `Drop` then panics with "the producer's drop panicked".
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<Row>")]
pub struct PanicThenDropPanics(pub u64);

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the producer's drop panicked");
        }
    }
}

impl Handler<PanicThenDropPanics> for Streamer {
    type Result = Streamed<Row>;

    fn handle(&mut self, msg: PanicThenDropPanics, _: &mut Context<Self>) -> Streamed<Row> {
        let bad = msg.0;
        let guard = PanicsOnDrop;
        Streamed::new(stream::iter(0..).map(move |n| {
            let _ = &guard;
            if n == bad {
                panic!("row {n} panicked");
            }
            Row { n, pad: Vec::new() }
        }))
    }
}

/// Posts `Note::Dropped` when dropped: the producer went.
struct OnDrop(Parent<Streams>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.post(Note::Dropped(std::process::id()));
    }
}

impl Handler<Endless> for Streamer {
    type Result = Streamed<Row>;

    fn handle(&mut self, _: Endless, _: &mut Context<Self>) -> Streamed<Row> {
        let guard = OnDrop(self.parent.clone());
        Streamed::new(rows(0.., 16).map(move |row| {
            let _ = &guard;
            row
        }))
    }
}

impl Handler<SumFromParent> for Streamer {
    type Result = ResponseFuture<Result<(u64, u64), String>>;

    fn handle(&mut self, msg: SumFromParent, _: &mut Context<Self>) -> Self::Result {
        // A small window: the parent's producer waits on this worker.
        let mut fed = self.parent.ask_stream_window(Feed(msg.0), 64);
        Box::pin(async move {
            let (mut sum, mut count) = (0, 0);
            while let Some(n) = fed.next().await {
                sum += n.map_err(|e| e.to_string())?;
                count += 1;
            }
            if !fed.is_complete() {
                return Err("incomplete".into());
            }
            Ok((sum, count))
        })
    }
}

impl Handler<HoldFeed> for Streamer {
    type Result = ();

    fn handle(&mut self, msg: HoldFeed, _: &mut Context<Self>) {
        self.held.push(self.parent.ask_stream_window(Feed(u64::MAX), msg.0));
    }
}

impl WorkerActor for Streamer {
    type Protocol = Streams;

    fn requests(requests: &mut Requests<Self>) {
        requests.stream::<Count>().stream::<FailAt>().stream::<Endless>().stream::<PanicAt>();
        requests.stream::<PanicThenDropPanics>();
        requests.answer::<SumFromParent>().answer::<HoldFeed>();
    }
}

pub fn entries() -> Vec<Entry> {
    vec![Entry::new("streamer", |parent| Streamer { parent, held: Vec::new() })]
}

pub fn streamer() -> WorkerBuilder<Streams> {
    Worker::<Streams>::builder()
        .entry("streamer")
        .restart(actix_webworker::RestartPolicy::never())
        .serve_stream(|feed: Feed| Streamed::iter(0..feed.0))
}

/// What each member of `pool` has in flight, by pid.
async fn in_flight(pool: &Addr<WorkerPool<Streams>>) -> Vec<(u32, usize)> {
    let stats = pool.send(Stats).await.unwrap();
    stats.members.iter().map(|m| (m.pid, m.in_flight)).collect()
}

/// Waits until `pool`'s members have `want` in flight in all.
async fn until_in_flight(pool: &Addr<WorkerPool<Streams>>, want: usize) -> Vec<(u32, usize)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = in_flight(pool).await;
        if now.iter().map(|m| m.1).sum::<usize>() == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next<T>(items: &mut AnswerStream<T>) -> Option<Result<T, WorkerError>> {
    tokio::time::timeout(WAIT, items.next()).await.expect("an item in time")
}

// ---- the tests ----------------------------------------------------------

pub fn items_come_in_order_then_the_end() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(Count { n: 10_000, pad: 3 })).await.unwrap();
        for n in 0..10_000 {
            let row = next(&mut rows).await.expect("an item").expect("no error");
            assert_eq!(row, Row { n, pad: vec![7; 3] });
        }
        assert!(next(&mut rows).await.is_none(), "the end after the last item");
        assert!(rows.is_complete());
        // And again, with a window of one byte: one item at a time.
        let mut rows = worker.send(AskStream::new(Count { n: 100, pad: 0 }).window(1)).await;
        let rows = rows.as_mut().unwrap();
        let mut seen = Vec::new();
        while let Some(row) = next(rows).await {
            seen.push(row.unwrap().n);
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(rows.is_complete());
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn an_error_raised_by_the_producer_is_the_last_item() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(FailAt(5))).await.unwrap();
        for n in 0..5 {
            assert_eq!(next(&mut rows).await.unwrap().unwrap().n, n);
        }
        match next(&mut rows).await {
            Some(Err(WorkerError::StreamFailed(text))) => assert_eq!(text, "row 5 is bad"),
            other => panic!("expected the producer's error, got {other:?}"),
        }
        assert!(next(&mut rows).await.is_none(), "nothing after the error");
        assert!(!rows.is_complete());
        // A stream nobody answers: its only item says so, by its name.
        let mut none = worker.send(AskStream::new(Unstreamed)).await.unwrap();
        match next(&mut none).await {
            Some(Err(WorkerError::Unhandled(name))) => assert!(name.ends_with("Unstreamed")),
            other => panic!("expected Unhandled, got {other:?}"),
        }
        assert!(next(&mut none).await.is_none());
        // The worker goes on.
        let mut rows = worker.send(AskStream::new(Count { n: 2, pad: 0 })).await.unwrap();
        assert_eq!(next(&mut rows).await.unwrap().unwrap().n, 0);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_worker_killed_mid_stream_ends_the_stream_with_its_exit() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(Endless)).await.unwrap();
        for n in 0..1000 {
            assert_eq!(next(&mut rows).await.unwrap().unwrap().n, n);
        }
        let stats = worker.send(actix_webworker::Stats).await.unwrap();
        let pid = stats.members[0].pid;
        assert!(kill(pid, nix::sys::signal::Signal::SIGKILL));
        // Items already on their way, then the exit; never a hang.
        let last = loop {
            match next(&mut rows).await {
                Some(Ok(_)) => continue,
                other => break other,
            }
        };
        match last {
            Some(Err(WorkerError::Exited(status))) => assert_eq!(status.signal, Some(9)),
            other => panic!("expected the exit, got {other:?}"),
        }
        assert!(next(&mut rows).await.is_none());
        assert_eq!(events.exit().await.signal, Some(9));
    });
}

pub fn a_stream_dropped_mid_way_drops_the_producer_within_100_ms() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(Endless).window(4096)).await.unwrap();
        for n in 0..500 {
            assert_eq!(next(&mut rows).await.unwrap().unwrap().n, n);
        }
        let dropped = Instant::now();
        drop(rows);
        // The worker's producer says it was dropped (its Drop posts).
        let note = events.message().await;
        let took = dropped.elapsed();
        assert!(matches!(note.data, Note::Dropped(_)), "{:?}", note.data);
        println!("producer dropped {took:?} after the stream");
        assert!(took < Duration::from_millis(100), "the producer went after {took:?}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// The parent's resident memory, in bytes.
fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// In a process of its own: the process's RSS is what it measures, and
/// the other tests of a run, side by side in one process, grow and shrink
/// it too (a pool's two streams held unread, made while this one ran, read
/// as 2–4 MiB of its growth).
pub fn a_million_items_to_a_slow_reader_hold_memory_to_the_window() {
    let said = isolated("streams::a_million_items_alone");
    print!("{}", said.lines().filter(|l| l.contains("RSS grew")).collect::<Vec<_>>().join("\n"));
    println!();
}

pub fn a_million_items_alone() {
    run(async {
        const ITEMS: u64 = 1_000_000;
        let window = actix_webworker::DEFAULT_STREAM_WINDOW;
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        // 64 B of ballast: messages of 10 + 1 + 3 + 1 + 64 bytes or so.
        let mut rows = worker.send(AskStream::new(Count { n: ITEMS, pad: 64 })).await.unwrap();
        assert_eq!(next(&mut rows).await.unwrap().unwrap().n, 0);
        let before = rss();
        let (mut most, started) = (0, Instant::now());
        for n in 1..ITEMS {
            let row = next(&mut rows).await.unwrap().unwrap();
            assert_eq!(row.n, n);
            if n % 100_000 == 0 {
                // A slow reader: it stops, and a producer that did not
                // wait would fill the parent meanwhile.
                tokio::time::sleep(Duration::from_millis(200)).await;
                most = most.max(rss().saturating_sub(before));
            }
        }
        assert!(next(&mut rows).await.is_none() && rows.is_complete());
        let bound = 4 * window as u64 + (4 << 20);
        println!(
            "1,000,000 items of 64 B to a slow reader in {:?}: the parent's RSS grew by at \
             most {} KiB (window {} KiB, bound {} KiB; unpaced, the items alone are ~80 MB)",
            started.elapsed(),
            most / 1024,
            window / 1024,
            bound / 1024
        );
        assert!(most < bound, "RSS grew by {most} bytes, over {bound}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_worker_asks_the_parent_for_a_stream() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let (sum, count) = worker.ask(SumFromParent(10_000)).await.unwrap().unwrap();
        assert_eq!((sum, count), ((0..10_000).sum(), 10_000));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_port_asks_for_a_stream() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut port = Port::open(&worker).await.unwrap();
        // From another thread: a port is `Send`. (This one, the System's,
        // goes on meanwhile: it runs the worker's link.)
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut rows = port.ask_stream(Count { n: 5000, pad: 1 }, 1024);
                let mut seen = 0;
                while let Some(row) = next(&mut rows).await {
                    assert_eq!(row.unwrap().n, seen);
                    seen += 1;
                }
                let _ = tx.send((seen, rows.is_complete()));
            })
        });
        let got = tokio::time::timeout(WAIT, rx).await.expect("in time").expect("the thread ran");
        assert_eq!(got, (5000, true));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_pool_counts_a_stream_in_flight_until_it_ends() {
    run(async {
        let pool = WorkerPool::<Streams>::builder()
            .entry("streamer")
            .size(2)
            .max_in_flight_per_worker(1)
            .serve_stream(|feed: Feed| Streamed::iter(0..feed.0))
            .start()
            .unwrap();
        // One stream on one member: one in flight, for as long as it runs.
        let mut first = pool.send(AskStream::new(Endless)).await.unwrap();
        assert_eq!(next(&mut first).await.unwrap().unwrap().n, 0);
        let one = until_in_flight(&pool, 1).await;
        let busy = one.iter().find(|m| m.1 == 1).expect("a member streams").0;
        // A second goes to the other member: the first counts as busy.
        let mut second = pool.send(AskStream::new(Endless)).await.unwrap();
        assert_eq!(next(&mut second).await.unwrap().unwrap().n, 0);
        let two = until_in_flight(&pool, 2).await;
        assert!(two.iter().all(|m| m.1 == 1), "one stream on each member: {two:?}");
        // Still there after many items.
        for n in 1..2000 {
            assert_eq!(next(&mut first).await.unwrap().unwrap().n, n);
        }
        assert_eq!(in_flight(&pool).await.iter().map(|m| m.1).sum::<usize>(), 2);
        // Dropped by its reader: no longer in flight.
        drop(first);
        let after = until_in_flight(&pool, 1).await;
        assert!(after.iter().any(|m| m.0 == busy && m.1 == 0), "{after:?}");
        // One that ends: counted until its end.
        let mut counted = pool.send(AskStream::new(Count { n: 300, pad: 0 })).await.unwrap();
        let mut seen = 0;
        while let Some(row) = next(&mut counted).await {
            assert_eq!(row.unwrap().n, seen);
            seen += 1;
        }
        assert!(counted.is_complete() && seen == 300);
        drop(second);
        assert_eq!(until_in_flight(&pool, 0).await.iter().map(|m| m.1).sum::<usize>(), 0);
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
    });
}

/// The parent's producers of `Feed(u64::MAX)`: an item each millisecond,
/// for ever; each says on `gone` when it is dropped.
fn endless_feed(gone: tokio::sync::mpsc::UnboundedSender<()>) -> WorkerBuilder<Streams> {
    struct Said(tokio::sync::mpsc::UnboundedSender<()>);
    impl Drop for Said {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    Worker::<Streams>::builder().entry("streamer").restart(fast(actix_webworker::Restart::OnFailure)).serve_stream(
        move |feed: Feed| match feed.0 {
            u64::MAX => {
                let said = Said(gone.clone());
                Streamed::new(stream::unfold(0u64, move |n| {
                    let _ = &said;
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Some((n, n + 1))
                    }
                }))
            }
            n => Streamed::iter(0..n),
        },
    )
}

/// The worker asks the parent for an endless stream and reads none of it;
/// it is killed. The parent's producer is dropped (docs/streams.md: "dropped
/// when the worker drops its stream or goes away"), whether it waited for
/// the worker's window (`HoldFeed(0)`: no credit) or had room for all it
/// could make (1 GiB). The worker's next process, whose requests are
/// numbered from 0 again, gets nothing of the old producer's: its own
/// `Feed(3)` comes whole. Before: the producer lived on, with room it
/// queued its items to the next process, whose `Feed(3)` read them.
pub fn the_parents_producer_goes_with_the_worker_and_sends_the_next_nothing() {
    run(async {
        for window in [0, 1 << 30] {
            let (gone, mut dropped) = tokio::sync::mpsc::unbounded_channel();
            let (rec, mut events) = events::<Streams>();
            let worker = endless_feed(gone).events(rec).start().unwrap();
            worker.ask(HoldFeed(window)).await.unwrap();
            let pid = worker.send(actix_webworker::Stats).await.unwrap().members[0].pid;
            // Let the producer run a while (an item each millisecond).
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(kill(pid, Signal::SIGKILL));
            assert_eq!(events.exit().await.signal, Some(9));
            events.online().await;
            let went = tokio::time::timeout(WAIT, dropped.recv()).await;
            assert!(matches!(went, Ok(Some(()))), "window {window}: the producer was not dropped");
            let (sum, count) = worker.ask(SumFromParent(3)).await.unwrap().unwrap();
            assert_eq!((sum, count), (3, 3), "window {window}");
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}

/// docs/streams.md: a stream that cannot complete yields one `Err`, then
/// `None`; `Panicked(report)` when "its handler or producer panicked".
/// A producer made by `Streamed::new` that panics as it makes item 3:
/// items 0, 1 and 2, then the panic's report (its message), then the end;
/// the worker answers the next stream whole.
pub fn a_producer_that_panics_ends_the_stream_with_its_report_and_the_worker_goes_on() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(PanicAt(3))).await.unwrap();
        for n in 0..3 {
            match next(&mut rows).await {
                Some(Ok(row)) => assert_eq!(row.n, n),
                other => panic!("expected row {n}, got {}", brief(&other)),
            }
        }
        match next(&mut rows).await {
            Some(Err(WorkerError::Panicked(report))) => {
                assert_eq!(report.message, "row 3 panicked", "{report:?}")
            }
            other => panic!("expected the producer's panic, got {}", brief(&other)),
        }
        assert!(next(&mut rows).await.is_none(), "nothing after the panic");
        assert!(!rows.is_complete());
        // The worker goes on: the same process answers a stream whole.
        let pid = worker.send(Stats).await.unwrap().members[0].pid;
        let mut rows = worker.send(AskStream::new(Count { n: 5, pad: 0 })).await.unwrap();
        let mut seen = Vec::new();
        while let Some(row) = next(&mut rows).await {
            seen.push(row.expect("no error").n);
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert!(rows.is_complete());
        assert_eq!(worker.send(Stats).await.unwrap().members[0].pid, pid, "the same process");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// Once the worker has answered a stream whole: its pid.
async fn online_pid(worker: &Addr<Worker<Streams>>) -> u32 {
    let mut rows = worker.send(AskStream::new(Count { n: 1, pad: 0 })).await.unwrap();
    assert_eq!(next(&mut rows).await.unwrap().unwrap().n, 0);
    assert!(next(&mut rows).await.is_none() && rows.is_complete());
    worker.send(Stats).await.unwrap().members[0].pid
}

/// An item, a panic's report by its message and place (not its backtrace).
fn brief(item: &Option<Result<Row, WorkerError>>) -> String {
    match item {
        Some(Err(WorkerError::Panicked(r))) => {
            format!("Some(Err(Panicked {:?} at {:?}:{:?}))", r.message, r.file, r.line)
        }
        other => format!("{other:?}"),
    }
}

/// The first item of `rows` if one is there at once (a refusal is).
fn at_once<T>(rows: &mut AnswerStream<T>) -> Option<Option<Result<T, WorkerError>>> {
    futures_util::FutureExt::now_or_never(rows.next())
}

/// docs/streams.md: a stream refused yields "the reason the request was
/// refused (`Terminating`, `QueueFull`...)" as its one `Err`, then `None`.
/// Asked after `terminate()`: `Terminating`. Asked of a frozen worker
/// under `WhenFull::Fail` once its queue is full: `QueueFull`.
pub fn a_refused_stream_is_its_reason_then_the_end() {
    run(async {
        // After terminate.
        let (rec, mut ended) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        online_pid(&worker).await;
        worker.terminate();
        let mut rows = worker.send(AskStream::new(Count { n: 5, pad: 0 })).await.unwrap();
        match next(&mut rows).await {
            Some(Err(WorkerError::Terminating)) => {}
            other => panic!("expected Terminating, got {other:?}"),
        }
        assert!(next(&mut rows).await.is_none(), "nothing after the refusal");
        assert!(!rows.is_complete());
        assert!(ended.exit().await.success());

        // A full queue, refused at once.
        let limits = actix_webworker::Limits::default()
            .max_queued_messages(4)
            .when_full(actix_webworker::WhenFull::Fail);
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().limits(limits).events(rec).start().unwrap();
        let pid = online_pid(&worker).await;
        assert!(kill(pid, Signal::SIGSTOP));
        // SAFETY: waitid into a local; WNOWAIT leaves the child's state to
        // its reaper, and WSTOPPED waits only for the stop.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
        assert_eq!(r, 0, "waiting for the worker to stop");
        // The frozen worker reads nothing: the socket fills, then the queue.
        let mut held = Vec::new();
        let mut refused = None;
        for _ in 0..1_000_000 {
            let mut rows = worker.send(AskStream::new(Count { n: 1, pad: 0 })).await.unwrap();
            match at_once(&mut rows) {
                None => held.push(rows),
                Some(first) => {
                    refused = Some((first, rows));
                    break;
                }
            }
        }
        let Some((first, mut rows)) = refused else {
            panic!("{} streams asked of a frozen worker, none refused", held.len())
        };
        println!("the stream after {} accepted was refused: {first:?}", held.len());
        match first {
            Some(Err(WorkerError::QueueFull { limit })) => assert_eq!(limit, 4),
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert!(next(&mut rows).await.is_none(), "nothing after the refusal");
        assert!(!rows.is_complete());
        assert!(kill(pid, Signal::SIGKILL));
        assert_eq!(events.exit().await.signal, Some(9));
    });
}

// ---- panics of producers (from a review) -------------------------------

/// A parent's `serve_stream` producer that panics as it makes item 3: the
/// worker that asked reads `Panicked` with the panic's message, as
/// docs/streams.md says of a producer that panicked (before: `Disconnected`,
/// "the connection to the other side is closed", which it was not: the
/// parent has no panic hook, and its reply failed as `Gone`).
pub fn a_parents_producer_that_panics_is_reported_to_the_worker_as_a_panic() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = Worker::<Streams>::builder()
            .entry("streamer")
            .restart(actix_webworker::RestartPolicy::never())
            .serve_stream(|_: Feed| {
                Streamed::new(stream::iter(0u64..).map(|n| {
                    if n == 3 {
                        panic!("feed {n} panicked");
                    }
                    n
                }))
            })
            .events(rec)
            .start()
            .unwrap();
        let got = worker.ask(SumFromParent(10)).await;
        let err = got.expect("the worker answers").expect_err("the feed cannot complete");
        assert!(
            err.contains("panicked") && err.contains("feed 3 panicked"),
            "the worker read the parent's panic as: {err:?}"
        );
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A worker's producer that panics at item 3, and whose `Drop` (run by
/// produce.rs inside its catch_unwind) panics too: the stream's last item
/// should be the producer's panic, the one that ended the stream, not the
/// drop's that came after it (the hook's `last` is overwritten by it).
pub fn a_producer_whose_drop_panics_ends_with_the_first_panics_report() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        let mut rows = worker.send(AskStream::new(PanicThenDropPanics(3))).await.unwrap();
        for n in 0..3 {
            match next(&mut rows).await {
                Some(Ok(row)) => assert_eq!(row.n, n),
                other => panic!("expected row {n}, got {}", brief(&other)),
            }
        }
        let last = next(&mut rows).await;
        assert!(next(&mut rows).await.is_none());
        let first = events.error().await;
        assert_eq!(first.message, "row 3 panicked");
        match last {
            Some(Err(WorkerError::Panicked(report))) => {
                assert_eq!(report.message, "row 3 panicked", "{report:?}")
            }
            other => panic!("expected the producer's panic, got {}", brief(&other)),
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A producer that panics at its very first poll (row 0): the stream is its
/// report and the end; the parent hears of each panic once (one
/// `Event::Error` per stream), and the worker exits 0 at the end.
pub fn a_producer_panic_is_one_event_error_also_at_the_first_poll() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).start().unwrap();
        for bad in [0u64, 2] {
            let mut rows = worker.send(AskStream::new(PanicAt(bad)).window(1)).await.unwrap();
            for n in 0..bad {
                assert_eq!(next(&mut rows).await.unwrap().unwrap().n, n);
            }
            match next(&mut rows).await {
                Some(Err(WorkerError::Panicked(report))) => {
                    assert_eq!(report.message, format!("row {bad} panicked"))
                }
                other => panic!("expected the panic, got {}", brief(&other)),
            }
            assert!(next(&mut rows).await.is_none());
        }
        worker.terminate();
        let mut errors = Vec::new();
        loop {
            match events.next().await {
                actix_webworker::Event::Error(r) => errors.push(r.message),
                actix_webworker::Event::Exit(status) => {
                    assert!(status.success(), "{status}");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(errors, vec!["row 0 panicked".to_owned(), "row 2 panicked".to_owned()]);
    });
}

/// The parent's `serve_stream` closure itself panics (not the stream it
/// would return): that request fails with `Panicked` and the panic's
/// message, and the worker's next one is served; the worker ends as asked.
/// From a review: the panic ended the task that reads the connection, and
/// the parent's `Worker` with it for good (every later ask `Terminating`,
/// no `Exit` after `terminate()`, no restart).
pub fn a_serve_stream_closure_that_panics_fails_that_request_only() {
    run(async {
        let (rec, mut events) = events::<Streams>();
        let worker = Worker::<Streams>::builder()
            .entry("streamer")
            .restart(actix_webworker::RestartPolicy::never())
            .serve_stream(|feed: Feed| {
                if feed.0 == 3 {
                    panic!("no feed of 3");
                }
                Streamed::iter(0..feed.0)
            })
            .events(rec)
            .start()
            .unwrap();
        let err = worker.ask(SumFromParent(3)).await.unwrap().expect_err("a panic");
        assert!(err.contains("no feed of 3"), "the worker read the closure's panic as: {err:?}");
        assert_eq!(worker.ask(SumFromParent(2)).await.unwrap(), Ok((1, 2)));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
