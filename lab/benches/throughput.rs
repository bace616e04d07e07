//! Criterion benchmarks of the worker paths, each group with a raw
//! UNIX-socketpair baseline measured in the same run.
//!
//! `cargo bench -p actix-webworker-lab` runs them all; `cargo bench -p
//! actix-webworker-lab -- rtt` one group. The bench
//! binary is its own worker: `main` hands over to the worker runtime before
//! criterion starts.

// The probe's own row (`channel_stream_small`) is not used here: only
// the pair of workers it measures.
#[path = "../examples/channel_row/mod.rs"]
#[allow(dead_code)]
mod channel_row;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Ask, AskStream, Entry, Event, Join, Parent, Port, Post, Protocol, Received,
    Requests, StartMethod, Streamed, Worker, WorkerActor, WorkerAddrExt, WorkerEvent, WorkerPool,
};
use actix_webworker::{InlineBytes, SharedBytes, SharedBytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use actix_webworker_lab::floor::Floor;
use actix_webworker_lab::messages::{Count, Item, Items, Ping, Primes};
use actix_webworker_lab::spans::{install_if_asked, Recorder, TRACE_ENV};

/// A shared buffer, bytes as a vector, bytes as `InlineBytes` (each empty
/// but where a group fills it).
#[derive(Serialize, Deserialize)]
struct Load(SharedBytes, #[serde(with = "serde_bytes")] Vec<u8>, InlineBytes);

/// A `Primes` of about 5 ms.
const JOB: u64 = 120_000;

struct Bench;

impl Protocol for Bench {
    type ToWorker = Load;
    type FromWorker = ();
}

struct Sink(u64);

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Received<Load>> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Received<Load>, _: &mut Context<Self>) {
        std::hint::black_box((msg.data.1, msg.data.2));
        // A shared buffer is read a byte per page.
        let touched: u64 = msg.data.0.iter().step_by(4096).map(|&x| u64::from(x)).sum();
        std::hint::black_box(touched);
        self.0 += 1;
    }
}

impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        std::mem::take(&mut self.0)
    }
}

impl Handler<Primes> for Sink {
    type Result = u64;

    fn handle(&mut self, msg: Primes, _: &mut Context<Self>) -> u64 {
        msg.count()
    }
}

impl Handler<Ping> for Sink {
    type Result = u64;
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0
    }
}

impl Handler<Items> for Sink {
    type Result = Streamed<Item>;

    fn handle(&mut self, msg: Items, _: &mut Context<Self>) -> Streamed<Item> {
        msg.stream()
    }
}

impl WorkerActor for Sink {
    type Protocol = Bench;
    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Count>().answer::<Ping>().answer::<Primes>();
        requests.stream::<Items>();
    }
}

// ---- helpers ----------------------------------------------------------------

async fn start() -> Addr<Worker<Bench>> {
    let worker = Worker::<Bench>::builder().entry("sink").start().expect("worker starts");
    worker.ask(Ping(0)).await.expect("worker answers");
    worker
}

async fn stop(worker: Addr<Worker<Bench>>) {
    worker.terminate();
    let _ = worker.send(Join).await;
}

/// Posts `n` messages, awaiting every 10,000th so the mailbox stays small,
/// then waits for the worker's count.
async fn post_and_count(worker: &Addr<Worker<Bench>>, n: u64, size: usize) {
    post_all(worker, n, size).await;
    assert_eq!(worker.ask(Count).await.unwrap(), n);
}

/// `n` posts of `size` bytes, sent as [`post_and_count`] sends them, to an
/// actor that takes them and does nothing ([`Floor`]): actix's share of
/// the address path.
async fn post_to_floor(floor: &Addr<Floor>, n: u64, size: usize) {
    post_all(floor, n, size).await;
}

/// `n` posts of `size` bytes to `to`, awaiting one in 10,000.
async fn post_all<A>(to: &Addr<A>, n: u64, size: usize)
where
    A: Handler<Post<Load>>,
    A::Context: actix::dev::ToEnvelope<A, Post<Load>>,
{
    let payload = vec![7u8; size];
    let load = || Load(SharedBytes::default(), payload.clone(), InlineBytes::new());
    for i in 1..=n {
        if i % 10_000 == 0 {
            to.send(Post::new(load())).await.unwrap().unwrap();
        } else {
            to.do_send(Post::new(load()));
        }
    }
}

/// [`post_and_count`] through a [`Port`], waiting for room when the queue
/// is full.
async fn post_through_port_and_count(port: &mut Port<Bench>, n: u64, size: usize) {
    let payload = vec![7u8; size];
    for _ in 0..n {
        port.post_waiting(Load(SharedBytes::default(), payload.clone(), InlineBytes::new()))
            .await
            .unwrap();
    }
    assert_eq!(port.ask(Count).await.unwrap(), n);
}

/// `n` posts of the same shared buffer, then the worker's count.
async fn post_shared_and_count(worker: &Addr<Worker<Bench>>, n: u64, shared: &SharedBytes) {
    for i in 1..=n {
        let load = Load(shared.clone(), Vec::new(), InlineBytes::new());
        if i % 8 == 0 {
            worker.send(Post::new(load)).await.unwrap().unwrap();
        } else {
            worker.do_send(Post::new(load));
        }
    }
    assert_eq!(worker.ask(Count).await.unwrap(), n);
}

/// [`post_and_count`] with the bytes as `InlineBytes`, made once and
/// referenced by every message.
async fn post_inline_and_count(worker: &Addr<Worker<Bench>>, n: u64, bytes: &InlineBytes) {
    for i in 1..=n {
        let load = Load(SharedBytes::default(), Vec::new(), bytes.clone());
        if i % 8 == 0 {
            worker.send(Post::new(load)).await.unwrap().unwrap();
        } else {
            worker.do_send(Post::new(load));
        }
    }
    assert_eq!(worker.ask(Count).await.unwrap(), n);
}

/// A peer thread on a socketpair that reads and (with `echo`) writes back.
fn raw_peer(echo: bool) -> (UnixStream, std::thread::JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if echo => {
                    if b.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
    });
    (a, peer)
}

/// Writes `total` bytes in `chunk`-sized writes, then waits until the
/// reading peer has seen them all (it echoes one byte at the end).
fn raw_stream(a: &mut UnixStream, total: usize, chunk: &[u8]) {
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        a.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
}

/// `n` records of 64 B through a raw socketpair, in writes of 64 KiB.
fn raw_batched(b: &mut criterion::Bencher, n: u64) {
    let chunk = vec![7u8; 1024 * 64];
    b.iter_custom(|iters| {
        let (mut a, peer) = raw_peer(false);
        let t0 = Instant::now();
        for _ in 0..iters {
            raw_stream(&mut a, n as usize * 64, &chunk);
        }
        drop(a);
        peer.join().unwrap();
        t0.elapsed()
    })
}

// ---- groups -----------------------------------------------------------------

fn stream_small(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    let mut g = c.benchmark_group("stream_small_64B");
    g.throughput(Throughput::Elements(N));
    let worker = sys.block_on(start());
    g.bench_function("ours", |b| b.iter(|| sys.block_on(post_and_count(&worker, N, 64))));
    let mut port = sys.block_on(Port::open(&worker)).unwrap();
    g.bench_function("ours_port", |b| {
        b.iter(|| sys.block_on(post_through_port_and_count(&mut port, N, 64)))
    });
    g.bench_function("raw_socketpair_batched", |b| raw_batched(b, N));
    // After the worker's start, as `ours` sees the process (threads and all).
    let floor = sys.block_on(async { Floor::default().start() });
    g.bench_function("actix_floor", |b| b.iter(|| sys.block_on(post_to_floor(&floor, N, 64))));
    g.finish();
    sys.block_on(stop(worker));
}

/// Reads the `n` items of one streamed answer to their end.
async fn read_stream(worker: &Addr<Worker<Bench>>, n: u64) {
    let mut items = worker.send(AskStream::new(Items(n))).await.expect("mailbox");
    let mut got = 0;
    while let Some(item) = items.next().await {
        std::hint::black_box(item.expect("an item"));
        got += 1;
    }
    assert!(got == n && items.is_complete());
}

/// Items of 64 B streamed in answer to one request, against the raw
/// socketpair's 64 B records of `stream_small`.
fn stream_answer(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    let mut g = c.benchmark_group("stream_answer_items_64B");
    g.throughput(Throughput::Elements(N));
    let worker = sys.block_on(start());
    g.bench_function("ours", |b| b.iter(|| sys.block_on(read_stream(&worker, N))));
    g.bench_function("raw_socketpair_batched", |b| raw_batched(b, N));
    g.finish();
    sys.block_on(stop(worker));
}

/// 64-byte posts worker → worker over a channel, beside the same posts
/// parent → worker (`stream_small_64B`'s `ours`) in the same group.
fn channel_stream_small(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    let mut g = c.benchmark_group("channel_stream_small_64B");
    g.throughput(Throughput::Elements(N));
    let mut pair = sys.block_on(channel_row::Pair::start());
    g.bench_function("worker_to_worker", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| sys.block_on(pair.run(N, 64))).sum())
    });
    let worker = sys.block_on(start());
    g.bench_function("parent_to_worker", |b| {
        b.iter(|| sys.block_on(post_and_count(&worker, N, 64)))
    });
    g.finish();
    sys.block_on(stop(worker));
    sys.block_on(pair.stop());
}

fn rtt(c: &mut Criterion, sys: &mut SystemRunner) {
    let mut g = c.benchmark_group("rtt");
    let worker = sys.block_on(start());
    g.bench_function("ours", |b| b.iter(|| sys.block_on(worker.ask(Ping(1))).unwrap()));
    g.bench_function("raw_socketpair_ping_pong", |b| {
        let (mut a, peer) = raw_peer(true);
        let mut buf = [0u8; 8];
        b.iter(|| {
            a.write_all(&[1; 8]).unwrap();
            a.read_exact(&mut buf).unwrap();
        });
        drop(a);
        peer.join().unwrap();
    });
    g.finish();
    sys.block_on(stop(worker));
}

/// `n` asks made by `ask`, `in_flight` of them at a time.
async fn asks_in_flight<F>(n: u64, in_flight: usize, ask: impl Fn(u64) -> F)
where
    F: std::future::Future<Output = Result<u64, actix_webworker::WorkerError>>,
{
    let mut waiting = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    while done < n {
        while waiting.len() < in_flight && sent < n {
            waiting.push(ask(sent));
            sent += 1;
        }
        waiting.next().await.unwrap().unwrap();
        done += 1;
    }
}

/// The raw baseline of [`asks_in_flight`]: 8-byte requests to an echo
/// thread, `in_flight` written before their answers are read.
fn raw_in_flight(b: &mut criterion::Bencher, n: u64, in_flight: usize) {
    let (mut a, peer) = raw_peer(true);
    let requests = vec![1u8; 8 * in_flight];
    let mut answers = vec![0u8; requests.len()];
    b.iter(|| {
        for _ in 0..n / in_flight as u64 {
            a.write_all(&requests).unwrap();
            a.read_exact(&mut answers).unwrap();
        }
    });
    drop(a);
    peer.join().unwrap();
}

fn pipelined(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    const IN_FLIGHT: usize = 1_000;
    let mut g = c.benchmark_group("pipelined_1000_in_flight");
    g.throughput(Throughput::Elements(N));
    let worker = sys.block_on(start());
    g.bench_function("ours", |b| {
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, |i| worker.ask(Ping(i)))))
    });
    let port = std::cell::RefCell::new(sys.block_on(Port::open(&worker)).unwrap());
    g.bench_function("ours_port", |b| {
        let ask = |i| port.borrow_mut().ask(Ping(i));
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, ask)))
    });
    g.bench_function("raw_socketpair", |b| raw_in_flight(b, N, IN_FLIGHT));
    let floor = sys.block_on(async { Floor::default().start() });
    g.bench_function("actix_floor", |b| {
        // As `WorkerAddrExt::ask` sends (unconstrained: see its comment).
        let ask = |i| {
            let asked = tokio::task::unconstrained(floor.send(Ask::new(Ping(i))));
            async move { asked.await.map_err(|_| actix_webworker::WorkerError::Disconnected)? }
        };
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, ask)))
    });
    g.finish();
    sys.block_on(stop(worker));
}

/// The raw baseline of the bulk groups: `n` writes of `size` bytes per
/// iteration through a socketpair to a reading thread.
fn raw_bulk(b: &mut criterion::Bencher, size: usize, n: u64) {
    let chunk = vec![7u8; size];
    b.iter_custom(|iters| {
        let (mut a, peer) = raw_peer(false);
        let t0 = Instant::now();
        for _ in 0..iters {
            raw_stream(&mut a, size * n as usize, &chunk);
        }
        drop(a);
        peer.join().unwrap();
        t0.elapsed()
    })
}

/// Inline bytes (`InlineBytes`, made once: no copy of ours on either side)
/// against a `Vec<u8>` cloned per message, and the raw socketpair.
fn bulk_inline(c: &mut Criterion, sys: &mut SystemRunner) {
    let mut g = c.benchmark_group("bulk_inline");
    let worker = sys.block_on(start());
    for (name, size, n) in [("1MiB", 1usize << 20, 16u64), ("16MiB", 16 << 20, 2)] {
        g.throughput(Throughput::Bytes(size as u64 * n));
        let inline = InlineBytes::from(vec![7u8; size]);
        g.bench_function(BenchmarkId::new("ours_inline", name), |b| {
            b.iter(|| sys.block_on(post_inline_and_count(&worker, n, &inline)))
        });
        g.bench_function(BenchmarkId::new("ours_vec", name), |b| {
            b.iter(|| sys.block_on(post_and_count(&worker, n, size)))
        });
        g.bench_function(BenchmarkId::new("raw_socketpair", name), |b| raw_bulk(b, size, n));
    }
    g.finish();
    sys.block_on(stop(worker));
}

fn bulk(c: &mut Criterion, sys: &mut SystemRunner) {
    let mut g = c.benchmark_group("bulk");
    let worker = sys.block_on(start());
    for (name, size, n) in [("1MiB", 1usize << 20, 16u64), ("16MiB", 16 << 20, 2)] {
        g.throughput(Throughput::Bytes(size as u64 * n));
        g.bench_function(BenchmarkId::new("ours", name), |b| {
            b.iter(|| sys.block_on(post_and_count(&worker, n, size)))
        });
        // The same bytes as a `SharedBytes` (made once, sent in every
        // message): what crosses is a descriptor.
        let mut shared = SharedBytesMut::new(size).unwrap();
        shared.fill(7);
        let shared = shared.freeze().unwrap();
        g.bench_function(BenchmarkId::new("ours_shared", name), |b| {
            b.iter(|| sys.block_on(post_shared_and_count(&worker, n, &shared)))
        });
        g.bench_function(BenchmarkId::new("raw_socketpair", name), |b| raw_bulk(b, size, n));
    }
    g.finish();
    sys.block_on(stop(worker));
}

/// Forwards worker events to a channel.
struct Forward(mpsc::UnboundedSender<WorkerEvent<Bench>>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent<Bench>> for Forward {
    type Result = ();
    fn handle(&mut self, event: WorkerEvent<Bench>, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// The starts measured: `ours` exec'd, `ours_fork_server` forked from a
/// template (started by the warm-up's first start).
const START_METHODS: [(&str, StartMethod); 2] =
    [("ours", StartMethod::Exec), ("ours_fork_server", StartMethod::ForkServer)];

fn spawn_to_online(c: &mut Criterion, sys: &mut SystemRunner) {
    let mut g = c.benchmark_group("spawn_to_online");
    for (name, method) in START_METHODS {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                sys.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (tx, mut rx) = mpsc::unbounded_channel();
                        let forward = Forward(tx).start();
                        let t0 = Instant::now();
                        let worker = Worker::<Bench>::builder()
                            .entry("sink")
                            .events(forward.recipient())
                            .start_method(method)
                            .start()
                            .unwrap();
                        while !matches!(rx.recv().await.unwrap().kind, Event::Online) {}
                        total += t0.elapsed();
                        stop(worker).await;
                    }
                    total
                })
            })
        });
    }
    g.bench_function("spawn_bin_true", |b| {
        b.iter(|| std::process::Command::new("/bin/true").status().unwrap())
    });
    g.finish();
    // 64 starts at once, to every worker answering (the probe's
    // mass_start_late_ms row measures how late the loop runs meanwhile);
    // baseline: 64 `/bin/true` spawned at once and waited for.
    let mut g = c.benchmark_group("mass_start_64");
    g.sample_size(10);
    for (name, method) in START_METHODS {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                sys.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = Instant::now();
                        let workers: Vec<_> = (0..64)
                            .map(|_| {
                                let builder = Worker::<Bench>::builder().entry("sink");
                                builder.start_method(method).start().unwrap()
                            })
                            .collect();
                        let asks = workers.iter().map(|w| w.ask(Ping(1)));
                        futures_util::future::join_all(asks).await;
                        total += t0.elapsed();
                        for worker in workers {
                            stop(worker).await;
                        }
                    }
                    total
                })
            })
        });
    }
    g.bench_function("spawn_bin_true", |b| {
        b.iter(|| {
            let children: Vec<_> =
                (0..64).map(|_| std::process::Command::new("/bin/true").spawn().unwrap()).collect();
            for mut child in children {
                child.wait().unwrap();
            }
        })
    });
    g.finish();
}

fn workers(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    let mut g = c.benchmark_group("workers_sharing_requests");
    g.throughput(Throughput::Elements(N));
    for count in [1usize, 2, 8] {
        let pool: Vec<_> = (0..count).map(|_| sys.block_on(start())).collect();
        g.bench_function(BenchmarkId::new("ours", count), |b| {
            b.iter(|| {
                sys.block_on(async {
                    let asks: FuturesUnordered<_> =
                        (0..N).map(|i| pool[i as usize % count].ask(Ping(i))).collect();
                    asks.for_each(|r| {
                        r.unwrap();
                        std::future::ready(())
                    })
                    .await;
                })
            })
        });
        g.bench_function(BenchmarkId::new("raw_socketpairs", count), |b| {
            let peers: Vec<_> = (0..count).map(|_| raw_peer(true)).collect();
            let per = (N as usize / count) * 8;
            b.iter(|| {
                std::thread::scope(|s| {
                    for (a, _) in &peers {
                        let mut a = a.try_clone().unwrap();
                        s.spawn(move || {
                            let requests = vec![1u8; 8 * 1000];
                            let mut answers = vec![0u8; requests.len()];
                            let mut done = 0;
                            while done < per {
                                a.write_all(&requests).unwrap();
                                a.read_exact(&mut answers).unwrap();
                                done += requests.len();
                            }
                        });
                    }
                })
            });
            for (a, peer) in peers {
                drop(a);
                peer.join().unwrap();
            }
        });
        for worker in pool {
            sys.block_on(stop(worker));
        }
    }
    g.finish();
}

/// A pool of `n` sinks, each taking `in_flight` requests at once.
async fn start_pool(n: usize, in_flight: usize) -> Addr<WorkerPool<Bench>> {
    let pool = WorkerPool::<Bench>::builder()
        .entry("sink")
        .size(n)
        .max_in_flight_per_worker(in_flight)
        .start()
        .unwrap();
    futures_util::future::join_all((0..n * 4).map(|i| pool.ask(Ping(i as u64)))).await;
    pool
}

async fn stop_pool(pool: Addr<WorkerPool<Bench>>) {
    pool.terminate();
    let _ = pool.send(Join).await;
}

/// Trivial asks through a pool of 2, 1,000 in flight, against the raw
/// socketpair of the pipelined group.
fn pool_tiny(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    const IN_FLIGHT: usize = 1_000;
    let mut g = c.benchmark_group("pool_tiny_2_members");
    g.throughput(Throughput::Elements(N));
    let pool = sys.block_on(start_pool(2, IN_FLIGHT));
    g.bench_function("ours", |b| {
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, |i| pool.ask(Ping(i)))))
    });
    g.bench_function("raw_socketpair", |b| raw_in_flight(b, N, IN_FLIGHT));
    g.finish();
    sys.block_on(stop_pool(pool));
}

/// A 5 ms job through pools of 1 and 2 members, one job per member at a
/// time; the raw baseline runs the same jobs on this thread.
fn pool_cpu_scaling(c: &mut Criterion, sys: &mut SystemRunner) {
    const JOBS: u64 = 20;
    let mut g = c.benchmark_group("pool_cpu_scaling");
    g.throughput(Throughput::Elements(JOBS));
    for members in [1usize, 2] {
        let pool = sys.block_on(start_pool(members, 1));
        g.bench_function(BenchmarkId::new("ours", members), |b| {
            b.iter(|| {
                sys.block_on(futures_util::future::join_all(
                    (0..JOBS).map(|_| pool.ask(Primes(JOB))),
                ))
            })
        });
        sys.block_on(stop_pool(pool));
    }
    g.bench_function("in_process_one_thread", |b| {
        b.iter(|| (0..JOBS).map(|_| Primes(std::hint::black_box(JOB)).count()).sum::<u64>())
    });
    g.finish();
}

/// One request at a time through a pool of 1, against a single worker and
/// a raw ping-pong.
fn pool_overhead(c: &mut Criterion, sys: &mut SystemRunner) {
    let mut g = c.benchmark_group("pool_overhead");
    let pool = sys.block_on(start_pool(1, 1));
    let worker = sys.block_on(start());
    g.bench_function("pool_of_1", |b| b.iter(|| sys.block_on(pool.ask(Ping(1))).unwrap()));
    g.bench_function("single_worker", |b| b.iter(|| sys.block_on(worker.ask(Ping(1))).unwrap()));
    g.bench_function("raw_socketpair_ping_pong", |b| {
        let (mut a, peer) = raw_peer(true);
        let mut buf = [0u8; 8];
        b.iter(|| {
            a.write_all(&buf).unwrap();
            a.read_exact(&mut buf).unwrap();
        });
        drop(a);
        peer.join().unwrap();
    });
    g.finish();
    sys.block_on(stop_pool(pool));
    sys.block_on(stop(worker));
}

/// Pipelined asks with no subscriber, then with one that records every
/// span in the parent (scoped to this thread) and in a worker of its own
/// (installed in its process, as an application does): every request
/// travels with its trace context. No subscriber first: once one has been
/// installed, `tracing` makes spans (of its no-op subscriber) even where
/// none listens, which would slow the baseline.
fn tracing_overhead(c: &mut Criterion, sys: &mut SystemRunner) {
    const N: u64 = 20_000;
    const IN_FLIGHT: usize = 1_000;
    let mut g = c.benchmark_group("tracing_overhead");
    g.throughput(Throughput::Elements(N));
    let worker = sys.block_on(start());
    g.bench_function("no_subscriber", |b| {
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, |i| worker.ask(Ping(i)))))
    });
    sys.block_on(stop(worker));
    let recorded = sys.block_on(async {
        let builder = Worker::<Bench>::builder().entry("sink").env(TRACE_ENV, "1");
        let worker = builder.start().expect("worker starts");
        worker.ask(Ping(0)).await.expect("worker answers");
        worker
    });
    let _subscriber = tracing::subscriber::set_default(Recorder::new(false));
    g.bench_function("spans_recorded", |b| {
        b.iter(|| sys.block_on(asks_in_flight(N, IN_FLIGHT, |i| recorded.ask(Ping(i)))))
    });
    g.finish();
    sys.block_on(stop(recorded));
}

fn main() {
    install_if_asked();
    run_if_worker([Entry::new("sink", |_: Parent<Bench>| Sink(0)), channel_row::entry()]);

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut sys = System::new();
    stream_small(&mut c, &mut sys);
    stream_answer(&mut c, &mut sys);
    channel_stream_small(&mut c, &mut sys);
    rtt(&mut c, &mut sys);
    pipelined(&mut c, &mut sys);
    bulk(&mut c, &mut sys);
    bulk_inline(&mut c, &mut sys);
    spawn_to_online(&mut c, &mut sys);
    workers(&mut c, &mut sys);
    pool_tiny(&mut c, &mut sys);
    pool_cpu_scaling(&mut c, &mut sys);
    pool_overhead(&mut c, &mut sys);
    tracing_overhead(&mut c, &mut sys);
    c.final_summary();
}
