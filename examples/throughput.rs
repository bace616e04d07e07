//! Throughput and latency, each against a raw UNIX-socketpair baseline
//! measured in the same run.
//!
//! Run it with `cargo run --release --example throughput` (under a minute);
//! `-- NAME` runs only the scenarios whose names contain NAME. One line per
//! scenario: `NAME: ours=X baseline=Y ratio=Z UNIT`.
//!
//! - `stream_small`: 64-byte posts, parent → worker, the worker counts and
//!   acknowledges at the end (msg/s; baseline: raw socketpair, batched writes).
//! - `rtt_p50`: request/response round trip, one outstanding (µs; baseline:
//!   raw socketpair ping-pong).
//! - `pipelined`: requests with 1,000 in flight (req/s; baseline: raw
//!   socketpair, 1,000 in flight).
//! - `bulk_1mib`: 1 MiB posts (GB/s; baseline: raw socketpair).
//! - `spawn_to_online`: `start()` to the online event (ms; baseline: spawning
//!   `/bin/true` and waiting for it).
//! - `idle_worker_rss`: resident memory of an idle worker (MiB).
//!
//! The baselines run their peer on a thread of this process (the kernel path
//! is the same as between processes), except the round trip's: its echo is
//! a forked process, measured in rounds alternating with ours, because how
//! the scheduler places the two ends on cores decides that figure (see the
//! README's performance section).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Join, Parent, Post, Protocol, Received, Requests, Worker,
    WorkerActor, WorkerAddrExt, WorkerEvent,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize)]
enum Load {
    Small(#[serde(with = "serde_bytes")] Vec<u8>),
    Bulk(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// How many messages the worker has received since the last `Count`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Count;

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Ping(u64);

struct Bench;

impl Protocol for Bench {
    type ToWorker = Load;
    type FromWorker = ();
}

// ---- the worker -----------------------------------------------------------

struct Sink {
    received: u64,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Received<Load>> for Sink {
    type Result = ();

    fn handle(&mut self, msg: Received<Load>, _: &mut Context<Self>) {
        match msg.data {
            Load::Small(b) | Load::Bulk(b) => std::hint::black_box(b),
        };
        self.received += 1;
    }
}

impl Handler<Count> for Sink {
    type Result = u64;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        std::mem::take(&mut self.received)
    }
}

impl Handler<Ping> for Sink {
    type Result = u64;

    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0
    }
}

impl WorkerActor for Sink {
    type Protocol = Bench;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Count>().answer::<Ping>();
    }
}

// ---- measurements ---------------------------------------------------------

const SMALL: usize = 64;
const STREAM_N: u64 = 2_000_000;
const RTT_N: usize = 20_000;
const RTT_ROUNDS: usize = 10;
const PIPELINED_N: u64 = 500_000;
const IN_FLIGHT: usize = 1_000;
const BULK: usize = 1 << 20;
const BULK_N: u64 = 1_000;
const SPAWNS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn line(name: &str, ours: f64, baseline: f64, unit: &str) {
    let ratio = if baseline > 0.0 { ours / baseline } else { 1.0 };
    println!("{name}: ours={ours:.3} baseline={baseline:.3} ratio={ratio:.3} {unit}");
}

/// A worker and its online event.
async fn start() -> Addr<Worker<Bench>> {
    let worker = Worker::<Bench>::builder().entry("sink").start().expect("worker starts");
    worker.ask(Ping(0)).await.expect("worker answers");
    worker
}

async fn stop(worker: Addr<Worker<Bench>>) {
    worker.terminate();
    let _ = worker.send(Join).await;
}

/// Posts `n` messages with `do_send`, awaiting every `window`-th with `send`
/// so that the actor's mailbox holds at most a window (the actor handles
/// messages in order, so the awaited one resolves after all before it).
async fn post_all(worker: &Addr<Worker<Bench>>, n: u64, window: u64, make: impl Fn() -> Load) {
    for i in 1..=n {
        if i % window == 0 {
            worker.send(Post::new(make())).await.expect("mailbox").expect("queued");
        } else {
            worker.do_send(Post::new(make()));
        }
    }
}

async fn stream_small() -> f64 {
    let worker = start().await;
    let payload = vec![7u8; SMALL];
    let t0 = Instant::now();
    post_all(&worker, STREAM_N, 10_000, || Load::Small(payload.clone())).await;
    let got = worker.ask(Count).await.expect("count");
    let rate = STREAM_N as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(got, STREAM_N);
    stop(worker).await;
    rate
}

fn stream_small_baseline() -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let total = STREAM_N as usize * SMALL;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            got += b.read(&mut buf).unwrap();
        }
    });
    let batch = vec![7u8; 1024 * SMALL];
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = batch.len().min(total - sent);
        a.write_all(&batch[..n]).unwrap();
        sent += n;
    }
    reader.join().unwrap();
    STREAM_N as f64 / t0.elapsed().as_secs_f64()
}

/// Round trips, ours and two baselines', in alternating rounds so that all
/// see the same placement of processes on cores; medians of each. Each
/// baseline's echo is a process of its own, as a worker is: a blocking
/// `read`/`write` loop, and one driven by a tokio event loop, as both ends
/// of ours are. On a VM a wake-up across cores costs tens of microseconds
/// and one within a core a few, and which one a ping-pong gets is the
/// scheduler's call: it tends to keep a blocking pair on one core.
async fn rtt() -> (Duration, Duration, Duration) {
    let worker = start().await;
    let (mut blocking, mut blocking_echo) = echo_process("blocking");
    let (evented, mut evented_echo) = echo_process("evented");
    evented.set_nonblocking(true).unwrap();
    let mut evented = tokio::net::UnixStream::from_std(evented).unwrap();
    let per_round = (RTT_N / RTT_ROUNDS) as u64;
    let (mut ours, mut base, mut base_evented) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = [0u8; 8];
    for _ in 0..RTT_ROUNDS {
        for i in 0..per_round {
            let t0 = Instant::now();
            let back = worker.ask(Ping(i)).await.expect("pong");
            ours.push(t0.elapsed());
            assert_eq!(back, i);
        }
        for i in 0..per_round {
            let t0 = Instant::now();
            blocking.write_all(&i.to_le_bytes()).unwrap();
            blocking.read_exact(&mut buf).unwrap();
            base.push(t0.elapsed());
        }
        for i in 0..per_round {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let t0 = Instant::now();
            evented.write_all(&i.to_le_bytes()).await.unwrap();
            evented.read_exact(&mut buf).await.unwrap();
            base_evented.push(t0.elapsed());
        }
    }
    drop((blocking, evented));
    blocking_echo.wait().unwrap();
    evented_echo.wait().unwrap();
    stop(worker).await;
    (median(ours), median(base), median(base_evented))
}

/// The variable that makes this executable an echo process for [`rtt`].
const ECHO_ENV: &str = "THROUGHPUT_ECHO";

/// This executable again, as an echo process on one end of a socketpair.
fn echo_process(mode: &str) -> (UnixStream, std::process::Child) {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    // SAFETY: plain fcntl on a descriptor we own, to let the child have it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ECHO_ENV, format!("{mode}:{fd}"))
        .spawn()
        .unwrap();
    (ours, child)
}

/// Echoes 8-byte pings until the other end closes, when this process was
/// started by [`echo_process`].
fn run_if_echo() {
    use std::os::fd::FromRawFd;
    let Ok(spec) = std::env::var(ECHO_ENV) else { return };
    let (mode, fd) = spec.split_once(':').unwrap();
    // SAFETY: the parent passed us this descriptor.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd.parse().unwrap()) };
    let mut buf = [0u8; 8];
    if mode == "blocking" {
        while sock.read_exact(&mut buf).is_ok() {
            sock.write_all(&buf).unwrap();
        }
    } else {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        rt.block_on(async move {
            sock.set_nonblocking(true).unwrap();
            let mut sock = tokio::net::UnixStream::from_std(sock).unwrap();
            while sock.read_exact(&mut buf).await.is_ok() {
                sock.write_all(&buf).await.unwrap();
            }
        });
    }
    std::process::exit(0);
}

async fn pipelined() -> f64 {
    let worker = start().await;
    let t0 = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut done = 0u64;
    while done < PIPELINED_N {
        while in_flight.len() < IN_FLIGHT && sent < PIPELINED_N {
            in_flight.push(worker.ask(Ping(sent)));
            sent += 1;
        }
        in_flight.next().await.expect("in flight").expect("pong");
        done += 1;
    }
    let rate = PIPELINED_N as f64 / t0.elapsed().as_secs_f64();
    stop(worker).await;
    rate
}

fn pipelined_baseline() -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 8 * IN_FLIGHT];
        loop {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let requests: Vec<u8> = (0..IN_FLIGHT as u64).flat_map(u64::to_le_bytes).collect();
    let mut answers = vec![0u8; requests.len()];
    let t0 = Instant::now();
    for _ in 0..PIPELINED_N / IN_FLIGHT as u64 {
        a.write_all(&requests).unwrap();
        a.read_exact(&mut answers).unwrap();
    }
    let rate = PIPELINED_N as f64 / t0.elapsed().as_secs_f64();
    drop(a);
    echo.join().unwrap();
    rate
}

async fn bulk() -> f64 {
    let worker = start().await;
    let payload = vec![7u8; BULK];
    let t0 = Instant::now();
    post_all(&worker, BULK_N, 8, || Load::Bulk(payload.clone())).await;
    assert_eq!(worker.ask(Count).await.expect("count"), BULK_N);
    let rate = (BULK_N as usize * BULK) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    stop(worker).await;
    rate
}

fn bulk_baseline() -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let total = BULK_N as usize * BULK;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; BULK];
        let mut got = 0;
        while got < total {
            got += b.read(&mut buf).unwrap();
        }
    });
    let payload = vec![7u8; BULK];
    let t0 = Instant::now();
    for _ in 0..BULK_N {
        a.write_all(&payload).unwrap();
    }
    reader.join().unwrap();
    total as f64 / t0.elapsed().as_secs_f64() / 1e9
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

async fn spawn_to_online() -> (Duration, f64) {
    let mut times = Vec::new();
    let mut rss = 0.0;
    for i in 0..SPAWNS {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = Forward(tx).start();
        let t0 = Instant::now();
        let worker = Worker::<Bench>::builder()
            .entry("sink")
            .events(forward.recipient())
            .start()
            .expect("worker starts");
        let pid = loop {
            let event = rx.recv().await.expect("events");
            if let Event::Online = event.kind {
                break event.pid;
            }
        };
        times.push(t0.elapsed());
        if i == SPAWNS - 1 {
            // Let it settle, idle, before reading its resident size.
            worker.ask(Ping(0)).await.expect("pong");
            tokio::time::sleep(Duration::from_millis(200)).await;
            rss = rss_mib(pid);
        }
        stop(worker).await;
    }
    (median(times), rss)
}

fn spawn_baseline() -> Duration {
    let times = (0..SPAWNS)
        .map(|_| {
            let t0 = Instant::now();
            std::process::Command::new("/bin/true").status().expect("/bin/true runs");
            t0.elapsed()
        })
        .collect();
    median(times)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the scenarios whose names contain the first argument (all without).
async fn run() {
    let only = std::env::args().nth(1).unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    if wanted("stream_small") {
        let ours = stream_small().await;
        line("stream_small", ours, stream_small_baseline(), "msg/s");
    }
    if wanted("rtt_p50") {
        let (ours, base, base_evented) = rtt().await;
        line("rtt_p50", ours.as_secs_f64() * 1e6, base.as_secs_f64() * 1e6, "us");
        let evented = base_evented.as_secs_f64() * 1e6;
        line("rtt_p50_vs_evented_echo", ours.as_secs_f64() * 1e6, evented, "us");
    }
    if wanted("pipelined") {
        let ours = pipelined().await;
        line("pipelined", ours, pipelined_baseline(), "req/s");
    }
    if wanted("bulk_1mib") {
        let ours = bulk().await;
        line("bulk_1mib", ours, bulk_baseline(), "GB/s");
    }
    if wanted("spawn_to_online") || wanted("idle_worker_rss") {
        let (online, rss) = spawn_to_online().await;
        let base = spawn_baseline();
        line("spawn_to_online", online.as_secs_f64() * 1e3, base.as_secs_f64() * 1e3, "ms");
        println!("idle_worker_rss: ours={rss:.3} baseline=0.000 ratio=1.000 MiB");
    }
}

fn main() {
    run_if_echo();
    run_if_worker([Entry::new("sink", |_: Parent<Bench>| Sink { received: 0 })]);
    System::new().block_on(run());
}
