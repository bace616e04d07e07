//! Answers that stream: one request, many typed items, read as they come.
//!
//! The parent asks a worker for the rows of a (generated) table; the
//! worker's handler returns them as a stream, produced only as fast as the
//! parent makes room for them (a window of bytes), and the parent reads
//! them with `StreamExt::next()`. A second request fails half-way: its
//! last item is the producer's error. A third is dropped after three rows:
//! the worker drops its producer (whose `Drop` says so). And the worker
//! asks the parent for a stream of its own: the parent serves it with a
//! closure.
//!
//! Run it with `cargo run --example streams`.

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, AskStream, Declare, Entry, Join, NoPosts, Parent, Protocol, Requests, Streamed,
    Worker, WorkerActor, WorkerAddrExt, WorkerError,
};
use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};

/// One row of the table.
#[derive(Serialize, Deserialize, Debug)]
struct Row {
    n: u64,
    square: u64,
}

/// Parent → worker: rows `0..n`; with `bad`, the row that fails.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Streamed<Row>")]
struct Rows {
    n: u64,
    bad: Option<u64>,
}

/// Parent → worker: the sum of what the parent streams for `Numbers`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<u64, String>")]
struct SumFromParent(u64);

/// Worker → parent, answered by a stream: `1..=n`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Streamed<u64>")]
struct Numbers(u64);

struct Table;

impl Protocol for Table {
    type ToWorker = NoPosts;
    type FromWorker = NoPosts;

    fn requests(declare: &mut Declare) {
        // The item's type joins the fingerprint, as an answer's does.
        declare.stream::<Rows>().named("table.rows");
        declare.request::<SumFromParent>().named("table.sum_from_parent");
        declare.stream_to_parent::<Numbers>().named("table.numbers");
    }
}

// ---- the worker -----------------------------------------------------------

struct TableWorker {
    parent: Parent<Table>,
}

impl Actor for TableWorker {
    type Context = Context<Self>;
}

actix_webworker::no_posts!(TableWorker);

/// Says when the producer it rides with is dropped.
struct Noisy;

impl Drop for Noisy {
    fn drop(&mut self) {
        println!("worker: a producer was dropped");
    }
}

impl Handler<Rows> for TableWorker {
    type Result = Streamed<Row>;

    fn handle(&mut self, msg: Rows, _: &mut Context<Self>) -> Streamed<Row> {
        let noisy = Noisy;
        let rows = (0..msg.n).map(move |n| {
            let _ = &noisy;
            match msg.bad {
                Some(bad) if bad == n => Err(format!("row {n} is unreadable")),
                _ => Ok(Row { n, square: n * n }),
            }
        });
        // The first `Err` ends the answer with that error.
        Streamed::fallible(stream::iter(rows))
    }
}

impl Handler<SumFromParent> for TableWorker {
    type Result = ResponseFuture<Result<u64, String>>;

    fn handle(&mut self, msg: SumFromParent, _: &mut Context<Self>) -> Self::Result {
        let mut numbers = self.parent.ask_stream(Numbers(msg.0));
        Box::pin(async move {
            let mut sum = 0;
            while let Some(n) = numbers.next().await {
                sum += n.map_err(|e| e.to_string())?;
            }
            Ok(sum)
        })
    }
}

impl WorkerActor for TableWorker {
    type Protocol = Table;

    fn requests(requests: &mut Requests<Self>) {
        requests.stream::<Rows>().answer::<SumFromParent>();
    }
}

// ---- the parent -----------------------------------------------------------

#[actix::main]
async fn main() -> Result<(), WorkerError> {
    // First line of main: a re-run as a worker stops here.
    run_if_worker([Entry::new("table", |parent| TableWorker { parent })]);

    let worker = Worker::<Table>::builder()
        .entry("table")
        // The worker's `Numbers`, produced here as it reads them.
        .serve_stream(|numbers: Numbers| Streamed::iter(1..=numbers.0))
        .start()
        .expect("the worker starts");

    // A whole answer, a thousand rows, read as they come: the worker runs
    // at most 4 KiB of rows ahead of this loop.
    let ask = AskStream::new(Rows { n: 1000, bad: None }).window(4096);
    let mut rows = worker.send(ask).await.map_err(|_| WorkerError::Disconnected)?;
    let mut total = 0;
    while let Some(row) = rows.next().await {
        let row = row?;
        assert_eq!(row.square, row.n * row.n);
        total += row.square;
    }
    assert!(rows.is_complete());
    println!("parent: 1000 rows, squares summing to {total}");

    // One that fails at row 3: rows 0..3, then the error, then the end.
    let ask = AskStream::new(Rows { n: 10, bad: Some(3) });
    let mut rows = worker.send(ask).await.map_err(|_| WorkerError::Disconnected)?;
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => println!("parent: row {}", row.n),
            Err(e) => println!("parent: the stream ended with: {e}"),
        }
    }

    // One dropped after three rows: the worker drops its producer.
    let ask = AskStream::new(Rows { n: u64::MAX, bad: None });
    let mut rows = worker.send(ask).await.map_err(|_| WorkerError::Disconnected)?;
    for _ in 0..3 {
        rows.next().await.expect("a row")?;
    }
    drop(rows);

    // The other way: the worker reads a stream the parent produces.
    let sum = worker.ask(SumFromParent(100)).await?.map_err(WorkerError::Remote)?;
    println!("parent: the worker summed 1..=100 from the parent's stream: {sum}");
    assert_eq!(sum, 5050);

    worker.terminate();
    let status = worker.send(Join).await.map_err(|_| WorkerError::Disconnected)?;
    assert!(status.success(), "{status}");
    Ok(())
}
