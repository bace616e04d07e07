//! A CPU-bound job spread over a pool of worker processes: counting the
//! primes below a bound, 200 times, through a pool of one member and then
//! through a pool of as many members as the machine has cores. Prints the
//! jobs per second of each, and the pool's figures.
//!
//! `cargo run --release --example pool`

use std::time::Instant;

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Join, Parent, Protocol, Received, Requests, Stats, WorkerActor,
    WorkerAddrExt, WorkerPool,
};
use serde::{Deserialize, Serialize};

/// How many primes are below `n`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct CountPrimes(u64);

struct Primes;

impl Protocol for Primes {
    type ToWorker = ();
    type FromWorker = ();
}

// ---- the worker -----------------------------------------------------------

struct Counter;

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Received<()>> for Counter {
    type Result = ();

    fn handle(&mut self, _: Received<()>, _: &mut Context<Self>) {}
}

impl Handler<CountPrimes> for Counter {
    type Result = u64;

    fn handle(&mut self, msg: CountPrimes, _: &mut Context<Self>) -> u64 {
        (2..msg.0).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}

impl WorkerActor for Counter {
    type Protocol = Primes;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<CountPrimes>();
    }
}

// ---- the parent -----------------------------------------------------------

const JOBS: usize = 200;
const BOUND: u64 = 100_000;

/// Jobs per second through a pool of `members`.
async fn run(members: usize) -> f64 {
    let pool = WorkerPool::<Primes>::builder()
        .entry("primes")
        .size(members)
        // One job at a time per member: whoever finishes first takes the next.
        .max_in_flight_per_worker(1)
        .start()
        .expect("the pool starts");
    let t0 = Instant::now();
    let counts =
        futures_util::future::join_all((0..JOBS).map(|_| pool.ask(CountPrimes(BOUND)))).await;
    let rate = JOBS as f64 / t0.elapsed().as_secs_f64();
    assert!(counts.iter().all(|c| *c.as_ref().expect("answered") == 9592));
    let stats = pool.send(Stats).await.expect("the pool answers");
    println!(
        "{members} member(s): {rate:.0} jobs/s; {} completed, round trip p50 {:?}, p99 {:?}",
        stats.completed, stats.rtt_p50, stats.rtt_p99
    );
    pool.terminate();
    pool.send(Join).await.expect("the pool answers");
    rate
}

fn main() {
    run_if_worker([Entry::new("primes", |_: Parent<Primes>| Counter)]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    System::new().block_on(async move {
        let one = run(1).await;
        let all = run(cores).await;
        println!("{cores} members: {:.2}x the jobs per second of one", all / one);
    });
}
