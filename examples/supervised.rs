//! A supervised worker: it crashes on a poison message and comes back.
//!
//! The worker squares numbers; the message `Poison` makes it abort (killed
//! by SIGABRT). The restart policy starts a new process after a backoff, and
//! the parent keeps using the same `Addr`: the answers after the crash come
//! from the new process. Every exit and restart is printed.
//!
//! Run it with `cargo run --example supervised`.

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Join, Parent, Protocol, Received, Requests, RestartPolicy, Worker,
    WorkerActor, WorkerAddrExt, WorkerError, WorkerEvent,
};
use serde::{Deserialize, Serialize};

/// Parent → worker: crash.
#[derive(Serialize, Deserialize, Debug)]
struct Poison;

/// Parent → worker: the square of a number, and the pid that computed it.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "(u64, u32)")]
struct Square(u64);

struct Squares;

impl Protocol for Squares {
    type ToWorker = Poison;
    type FromWorker = ();
}

// ---- the worker -----------------------------------------------------------

struct SquareWorker;

impl Actor for SquareWorker {
    type Context = Context<Self>;
}

impl Handler<Received<Poison>> for SquareWorker {
    type Result = ();

    fn handle(&mut self, _: Received<Poison>, _: &mut Context<Self>) {
        eprintln!("worker {}: poisoned, aborting", std::process::id());
        std::process::abort();
    }
}

impl Handler<Square> for SquareWorker {
    type Result = MessageResult<Square>;

    fn handle(&mut self, msg: Square, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0 * msg.0, std::process::id()))
    }
}

impl WorkerActor for SquareWorker {
    type Protocol = Squares;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Square>();
    }
}

// ---- the parent -----------------------------------------------------------

/// Prints what happens to the worker.
struct Log;

impl Actor for Log {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent<Squares>> for Log {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent<Squares>, _: &mut Context<Self>) {
        match event.kind {
            Event::Online => println!("[{}] pid {} is online", event.name, event.pid),
            Event::Exit(status) => println!(
                "[{}] pid {} exited: code={:?} signal={:?}",
                event.name, event.pid, status.code, status.signal
            ),
            Event::Restarting { attempt, delay } => {
                println!("[{}] restart #{attempt} in {delay:?}", event.name)
            }
            Event::GaveUp(g) => println!("[{}] gave up: {}", event.name, g.reason),
            _ => {}
        }
    }
}

/// Asks for a square. A request that was already in the process that
/// crashed fails with `Exited` (requests are delivered at most once, never
/// re-sent behind your back); this caller chooses to ask again.
async fn square(worker: &Addr<Worker<Squares>>, n: u64) -> Result<(u64, u32), WorkerError> {
    loop {
        match worker.ask(Square(n)).await {
            Err(WorkerError::Exited(status)) => {
                println!("the request for {n}² died with its process ({status}); asking again")
            }
            other => return other,
        }
    }
}

async fn parent() -> Result<(), WorkerError> {
    let log = Log.start();
    let worker = Worker::<Squares>::builder()
        .entry("squares")
        .name("squares")
        .restart(
            RestartPolicy::default()
                .intensity(3, Duration::from_secs(10))
                .backoff(Duration::from_millis(50), Duration::from_secs(1)),
        )
        .events(log.recipient())
        .start()
        .expect("the worker process starts");

    for n in 7..10u64 {
        let (square, pid) = square(&worker, n).await?;
        println!("{n}² = {square}, computed by pid {pid}");
        // Crash it. What is sent from now on goes to the new process.
        worker.post(Poison);
    }
    let (square, pid) = square(&worker, 12).await?;
    println!("12² = {square}, computed by pid {pid} after three crashes");

    worker.terminate();
    let status = worker.send(Join).await.map_err(|_| WorkerError::Disconnected)?;
    println!("worker stopped for good: {status}");
    Ok(())
}

fn main() {
    run_if_worker([Entry::new("squares", |_: Parent<Squares>| SquareWorker)]);

    if let Err(e) = System::new().block_on(parent()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
