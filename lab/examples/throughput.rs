//! Throughput and latency, each against a raw UNIX-socketpair baseline
//! measured in the same run.
//!
//! Run it with `cargo run --release -p actix-webworker-lab --example
//! throughput` (under a minute);
//! `-- NAME` runs only the scenarios whose names contain NAME (`-- =NAME`:
//! only the one called NAME). One line per
//! scenario: `NAME: ours=X baseline=Y ratio=Z UNIT`.
//!
//! - `stream_small`: 64-byte posts, parent → worker, the worker counts and
//!   acknowledges at the end (msg/s; baseline: raw socketpair, batched writes).
//!   `stream_small_json`: the same with the JSON codec.
//!   `remote_stream_small`: the same to a worker over loopback TCP
//!   (`Transport::plain_tcp`; baseline: raw TCP, batched writes).
//!   `stream_small_actix_floor`: the same posts through an address to an
//!   actor that does nothing (`lab/src/floor.rs`), actix's own share
//!   (baseline: `stream_small` through a worker's address, in the same run).
//! - `remote_rtt_p50`: the round trip to a worker over loopback TCP
//!   (µs; baseline: a raw TCP echo in a process of its own, rounds
//!   alternated); `remote_rtt_p50_vs_evented_echo`: against the same echo
//!   driven by an event loop. `remote_rtt_p50_pinned`,
//!   `remote_rtt_p50_pinned_vs_evented_echo`: both with every process
//!   pinned to one core (as `rtt_p50_pinned`). `remote_tls_rtt_p50`,
//!   `remote_tls_stream_small`: the same over TLS (`Transport::tls`),
//!   against the raw TCP baselines in the clear.
//! - `channel_stream_small`: 64-byte posts worker → worker over a
//!   `MessageChannel` (msg/s; baseline: `stream_small`, parent → worker, in
//!   the same run), and `channel_stream_small_parent_cpu`: the parent's CPU
//!   meanwhile (% of one core; baseline: the 5 % it should stay under).
//! - `rtt_p50`: request/response round trip, one outstanding (µs; baseline:
//!   raw socketpair ping-pong). `rtt_p50_vs_evented_echo`: the same against
//!   an echo driven by an event loop, as ours is; `rtt_p50_pinned`: that
//!   with every process of ours and of the baseline pinned to one core.
//! - `pipelined`: requests with 1,000 in flight (req/s; baseline: raw
//!   socketpair, 1,000 in flight). `pipelined_actix_floor`: the same asks
//!   answered at once by an actor that does nothing (baseline: `pipelined`
//!   through a worker's address, in the same run).
//! - `tracing_overhead`: `pipelined` with a `tracing` subscriber that
//!   records every span (`lab/src/spans.rs`) in the parent and in the
//!   worker, so that every request travels with its trace context (this
//!   executable again, the subscriber installed first thing in its main,
//!   its worker inheriting it) against `pipelined` with none, in rounds
//!   alternated (req/s; the ratio is what the spans cost).
//!   `tracing_overhead_fmt`: the same with every field of every span
//!   formatted into a string, as a formatting or exporting layer does.
//! - `bulk_1mib`, `bulk_16mib`: 1 MiB and 16 MiB posts, inline: an
//!   `InlineBytes` made once and cloned for each (a reference: no copy of
//!   ours on the way out, nor in the worker), (GB/s; baseline: raw
//!   socketpair writes of that size). `..._vec`: the same as a
//!   `serde_bytes` `Vec<u8>` cloned for each (the rows before
//!   `InlineBytes`: a copy for the clone, one into the message, one out
//!   of it in the worker).
//! - `stream_answer_items`: items of 64 B streamed in answer to one request
//!   (`AskStream`, the default window), read by the parent (items/s;
//!   baseline: the raw socketpair of `stream_small`).
//! - `bulk_1mib_shared`, `bulk_16mib_shared`: the same sizes as
//!   `SharedBytes`: one buffer, made once, in every message (as a model or
//!   an image handed to a worker again and again); the worker reads a byte
//!   of every page (GB/s; baseline: raw socketpair writes of that size).
//!   `..._fresh`: a new buffer per message, filled in place.
//! - `spawn_to_online`: `start()` to the online event (ms; baseline: spawning
//!   `/bin/true` and waiting for it). `spawn_to_online_fork_server`: the
//!   same with workers forked from a template (`StartMethod::ForkServer`;
//!   the first start, which starts the template, is one of the 20), and
//!   `idle_worker_rss_lab_fork_server` the last of them idle.
//! - `idle_worker_rss`, `idle_worker_pss`: resident memory of an idle
//!   worker, and its proportional share (MiB): the crate's
//!   `examples/idle_worker.rs`, with the crate's default features, built
//!   beforehand (`cargo build --release --example idle_worker`; the row
//!   says skipped otherwise); `..._lean`: the same built with the `lean`
//!   profile (Cargo.toml; `--profile lean`); `idle_worker_online_ms...`:
//!   that worker's start to online, the first of its parent (ms).
//!   `..._fork_server`: the same with the worker forked from a template
//!   (`StartMethod::ForkServer`; `idle_worker --fork-server`).
//!   `idle_worker_rss_lab`: this
//!   probe's own worker (the `tls` feature, lab's dependencies).
//! - `mass_start_late_ms`, `mass_start_late_ms_second`: how late a 1 ms
//!   ticker on the parent's loop runs while 64 workers start at once, in a
//!   process of its own (ms; baseline: the same ticker, nothing starting;
//!   see `throughput/mass_start.rs`).
//! - `pool_tiny`: trivial asks through a pool of 2 with 1,000 in flight
//!   (req/s; baseline: the raw socketpair of `pipelined`).
//! - `pool_cpu_scaling`: a CPU-bound job of about 5 ms (counting primes)
//!   through a pool of 2 against a pool of 1, same run (jobs/s; the ratio
//!   is the speed-up).
//! - `pool_overhead`: one request at a time through a pool of 1 against
//!   the same through a single worker (µs, median; the ratio is the pool's
//!   cost).
//! - `cluster_pool_tiny`: `pool_tiny`'s asks through a pool of 4 spread
//!   over 2 hosts made here (network namespaces joined by veth pairs,
//!   members launched with `ip netns exec`, over TLS) (req/s; baseline: a
//!   local pool of 4, same run). `host_loss_recovery_ms`: with
//!   `heartbeat(100 ms, 1 s)`, from one host's link going down to the pool
//!   at full size again on the other (ms; baseline: the heartbeat's 1 s,
//!   the least it can be). Both need root and `ip`; else they say skipped.
//!
//! The baselines run their peer on a thread of this process (the kernel path
//! is the same as between processes), except the round trip's: its echo is
//! a forked process, measured in rounds alternating with ours, because how
//! the scheduler places the two ends on cores decides that figure (see
//! docs/performance.md).

mod channel_row;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Ask, AskStream, Entry, Event, Join, Parent, Port, Post, Protocol, Received,
    Requests, Streamed, Worker, WorkerActor, WorkerAddrExt, WorkerError, WorkerEvent, WorkerPool,
};
use actix_webworker::{Codec, InlineBytes, SharedBytes, SharedBytesMut, StartMethod, Transport};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use actix_webworker_lab::floor::Floor;
use actix_webworker_lab::messages::{Count, Item, Items, Ping, Primes};
use actix_webworker_lab::spans::{install_if_asked, Recorder, TRACE_ENV};

#[derive(Serialize, Deserialize)]
enum Load {
    Small(#[serde(with = "serde_bytes")] Vec<u8>),
    Bulk(#[serde(with = "serde_bytes")] Vec<u8>),
    Inline(InlineBytes),
    /// Read by the worker: a byte of every page.
    Shared(SharedBytes),
}

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
            Load::Small(b) | Load::Bulk(b) => {
                std::hint::black_box(b);
            }
            Load::Inline(b) => {
                std::hint::black_box(b);
            }
            Load::Shared(b) => {
                let touched: u64 = b.iter().step_by(4096).map(|&x| u64::from(x)).sum();
                std::hint::black_box(touched);
            }
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
const POOL_TINY_N: u64 = 500_000;
/// Primes below this take about 5 ms to count on the machine this crate is
/// developed on.
const JOB: u64 = 120_000;
const JOBS: usize = 400;
const OVERHEAD_N: usize = 10_000;

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
    start_over(Codec::Bincode, Transport::Local).await
}

/// A worker connected over `transport`.
async fn start_over(codec: Codec, transport: Transport) -> Addr<Worker<Bench>> {
    let builder = Worker::<Bench>::builder().entry("sink").codec(codec).transport(transport);
    let worker = builder.start().expect("worker starts");
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
async fn post_all<A>(worker: &Addr<A>, n: u64, window: u64, make: impl Fn() -> Load)
where
    A: Handler<Post<Load>>,
    A::Context: actix::dev::ToEnvelope<A, Post<Load>>,
{
    for i in 1..=n {
        if i % window == 0 {
            worker.send(Post::new(make())).await.expect("mailbox").expect("queued");
        } else {
            worker.do_send(Post::new(make()));
        }
    }
}

/// `stream_small`'s posts through the address, taken by an actor that
/// does nothing ([`Floor`]): actix's share and the caller's, the most the
/// row through the address can reach in this process (msg/s).
async fn stream_small_actix_floor() -> f64 {
    let floor = Floor::default().start();
    let payload = vec![7u8; SMALL];
    let t0 = Instant::now();
    post_all(&floor, STREAM_N, 10_000, || Load::Small(payload.clone())).await;
    let rate = STREAM_N as f64 / t0.elapsed().as_secs_f64();
    let taken = floor.send(Posts).await.expect("the floor's mailbox");
    assert_eq!(taken, STREAM_N);
    rate
}

/// How many posts the [`Floor`] took.
#[derive(Message)]
#[rtype(result = "u64")]
struct Posts;

impl Handler<Posts> for Floor {
    type Result = u64;

    fn handle(&mut self, _: Posts, _: &mut Context<Self>) -> u64 {
        self.posts
    }
}

async fn stream_small(through_port: bool, codec: Codec, transport: Transport) -> f64 {
    let worker = start_over(codec, transport).await;
    let mut port = Port::open(&worker).await.expect("port");
    let payload = vec![7u8; SMALL];
    let t0 = Instant::now();
    if through_port {
        for _ in 0..STREAM_N {
            port.post_waiting(Load::Small(payload.clone())).await.expect("queued");
        }
    } else {
        post_all(&worker, STREAM_N, 10_000, || Load::Small(payload.clone())).await;
    }
    let got = worker.ask(Count).await.expect("count");
    let rate = STREAM_N as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(got, STREAM_N);
    stop(worker).await;
    rate
}

fn stream_small_baseline() -> f64 {
    let (a, b) = UnixStream::pair().unwrap();
    batched_writes(a, b)
}

/// [`STREAM_N`] 64-byte records written to `a` in 64 KiB writes, read from
/// `b` by a thread (msg/s).
fn batched_writes<A: Write, B: Read + Send + 'static>(mut a: A, mut b: B) -> f64 {
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
    let medians = alternated(&worker, &mut blocking, &mut evented).await;
    drop((blocking, evented));
    blocking_echo.wait().unwrap();
    evented_echo.wait().unwrap();
    stop(worker).await;
    medians
}

/// Round trips of 8 bytes, in rounds alternated so that all three see the
/// same machine: ours (asks to `worker`), a blocking echo on `blocking`,
/// an evented one on `evented`. Their medians.
async fn alternated<B, E>(
    worker: &Addr<Worker<Bench>>,
    blocking: &mut B,
    evented: &mut E,
) -> (Duration, Duration, Duration)
where
    B: Read + Write,
    E: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
            let t0 = Instant::now();
            evented.write_all(&i.to_le_bytes()).await.unwrap();
            evented.read_exact(&mut buf).await.unwrap();
            base_evented.push(t0.elapsed());
        }
    }
    (median(ours), median(base), median(base_evented))
}

/// Set in the copy of this executable that [`pinned`] runs.
const PINNED_ENV: &str = "THROUGHPUT_PINNED";

/// Rows measured with every process on one core: this executable again,
/// pinned to CPU 0 before it starts (its worker and echo processes inherit
/// that), running `scenario`; the `(ours, baseline)` of each of `rows`,
/// in µs. The scheduler's placement across cores is out of the figures.
fn pinned<const N: usize>(scenario: &str, rows: [&str; N]) -> [(f64, f64); N] {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.arg(scenario).env(PINNED_ENV, "1");
    // SAFETY: sched_setaffinity on the child itself, between fork and exec;
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("the pinned run");
    assert!(out.status.success(), "the pinned run failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    rows.map(|name| row_of(&text, name))
}

/// The `(ours, baseline)` of row `name` in `text`, what a run of this
/// executable printed (see [`line`]).
fn row_of(text: &str, name: &str) -> (f64, f64) {
    let prefix = format!("{name}: ");
    let row = text.lines().find_map(|l| l.strip_prefix(&prefix));
    let row = row.unwrap_or_else(|| panic!("no row {name} in {text}"));
    let field = |field: &str| -> f64 {
        let at = row.find(field).expect("field") + field.len();
        row[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("ours="), field("baseline="))
}

/// The variable that makes this executable an echo process for [`rtt`].
const ECHO_ENV: &str = "THROUGHPUT_ECHO";

/// This executable again, as an echo process on one end of a socketpair.
fn echo_process(mode: &str) -> (UnixStream, std::process::Child) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = echo_on(mode, theirs.into());
    (ours, child)
}

/// A TCP connection over loopback, its other end echoed by this
/// executable in a process of its own.
fn tcp_echo_process(mode: &str) -> (std::net::TcpStream, std::process::Child) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nodelay(true).unwrap();
    theirs.set_nodelay(true).unwrap();
    let child = echo_on(mode, theirs.into());
    (ours, child)
}

/// This executable, echoing on `theirs` as `mode` says.
fn echo_on(mode: &str, theirs: std::os::fd::OwnedFd) -> std::process::Child {
    use std::os::fd::AsRawFd;
    let fd = theirs.as_raw_fd();
    // SAFETY: plain fcntl on a descriptor we own, to let the child have it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    std::process::Command::new(std::env::current_exe().unwrap())
        .env(ECHO_ENV, format!("{mode}:{fd}"))
        .spawn()
        .unwrap()
}

/// The round trip over loopback TCP (`Transport::plain_tcp`), in rounds
/// alternated with a raw TCP echo in a process of its own, blocking and
/// driven by an event loop (as ours is): medians.
async fn remote_rtt(transport: Transport) -> (Duration, Duration, Duration) {
    let worker = start_over(Codec::Bincode, transport).await;
    let (mut raw, mut echo) = tcp_echo_process("tcp");
    let (evented, mut evented_echo) = tcp_echo_process("tcp-evented");
    evented.set_nonblocking(true).unwrap();
    let mut evented = tokio::net::TcpStream::from_std(evented).unwrap();
    let medians = alternated(&worker, &mut raw, &mut evented).await;
    drop((raw, evented));
    echo.wait().unwrap();
    evented_echo.wait().unwrap();
    stop(worker).await;
    medians
}

/// `stream_small_baseline` over loopback TCP.
fn remote_stream_small_baseline() -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    batched_writes(a, b)
}

fn loopback() -> Transport {
    Transport::plain_tcp("127.0.0.1:0".parse().unwrap())
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
    if mode == "tcp" {
        let sock = std::os::fd::OwnedFd::from(sock);
        let mut sock = std::net::TcpStream::from(sock);
        while sock.read_exact(&mut buf).is_ok() {
            sock.write_all(&buf).unwrap();
        }
    } else if mode == "tcp-evented" {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = std::net::TcpStream::from(std::os::fd::OwnedFd::from(sock));
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        rt.block_on(async move {
            sock.set_nonblocking(true).unwrap();
            let mut sock = tokio::net::TcpStream::from_std(sock).unwrap();
            while sock.read_exact(&mut buf).await.is_ok() {
                sock.write_all(&buf).await.unwrap();
            }
        });
    } else if mode == "blocking" {
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

async fn pipelined(through_port: bool) -> f64 {
    let worker = start().await;
    let mut port = Port::open(&worker).await.expect("port");
    let rate = asked_in_flight(|sent| match through_port {
        true => Box::pin(port.ask(Ping(sent))),
        false => Box::pin(worker.ask(Ping(sent))),
    })
    .await;
    stop(worker).await;
    rate
}

/// [`PIPELINED_N`] asks made by `ask`, [`IN_FLIGHT`] at a time (req/s).
async fn asked_in_flight(
    mut ask: impl FnMut(u64) -> BoxFuture<'static, Result<u64, WorkerError>>,
) -> f64 {
    let t0 = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut done = 0u64;
    while done < PIPELINED_N {
        while in_flight.len() < IN_FLIGHT && sent < PIPELINED_N {
            in_flight.push(ask(sent));
            sent += 1;
        }
        in_flight.next().await.expect("in flight").expect("pong");
        done += 1;
    }
    PIPELINED_N as f64 / t0.elapsed().as_secs_f64()
}

/// `pipelined`'s asks through the address, answered at once by an actor
/// that does nothing else ([`Floor`]): the most that row can reach in this
/// process (req/s).
async fn pipelined_actix_floor() -> f64 {
    let floor = Floor::default().start();
    asked_in_flight(|sent| {
        // As `WorkerAddrExt::ask` sends (unconstrained: see its comment).
        let asked = tokio::task::unconstrained(floor.send(Ask::new(Ping(sent))));
        Box::pin(async move { asked.await.map_err(|_| WorkerError::Disconnected)? })
    })
    .await
}

/// `pipelined` with every span recorded (see the module's head) and
/// without: the medians of a few rounds of each, alternated.
async fn tracing_overhead(how: &str) -> (f64, f64) {
    let (mut traced, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        plain.push(pipelined(false).await);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["=pipelined_traced"])
            .env(TRACE_ENV, how)
            .output()
            .expect("the traced run");
        assert!(out.status.success(), "the traced run failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        // Every ask made a span there: the subscriber saw them all.
        assert!(row_of(&text, "spans_recorded").0 >= PIPELINED_N as f64, "{text}");
        traced.push(row_of(&text, "pipelined_traced").0);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(traced), median(plain))
}

/// The traced side of [`tracing_overhead`], in the process it starts.
async fn pipelined_traced() {
    let rate = pipelined(false).await;
    println!("pipelined_traced: ours={rate:.3} baseline=0 ratio=1 req/s");
    let recorder = tracing::dispatcher::get_default(|d| {
        d.downcast_ref::<Recorder>().map(|r| r.spans.load(std::sync::atomic::Ordering::Relaxed))
    });
    let spans = recorder.expect("the recorder is this process's subscriber");
    println!("spans_recorded: ours={spans} baseline=0 ratio=1 spans");
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

/// `n` posts of `size` bytes inline (GB/s): one `InlineBytes` made once
/// and cloned per message, or (`vec`) a `Vec<u8>` cloned per message.
async fn bulk(size: usize, n: u64, vec: bool) -> f64 {
    let worker = start().await;
    let payload = vec![7u8; size];
    let inline = InlineBytes::from(payload.clone());
    let t0 = Instant::now();
    let load = || if vec { Load::Bulk(payload.clone()) } else { Load::Inline(inline.clone()) };
    post_all(&worker, n, 8, load).await;
    assert_eq!(worker.ask(Count).await.expect("count"), n);
    let rate = (n as usize * size) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    stop(worker).await;
    rate
}

/// `n` messages of `size` bytes through shared buffers, read by the worker
/// a byte per page (GB/s): one buffer made once and sent `n` times, or
/// (`fresh`) a new one per message, filled in place.
async fn bulk_shared(size: usize, n: u64, fresh: bool) -> f64 {
    let worker = start().await;
    let make = || {
        let mut buf = SharedBytesMut::new(size).expect("a shared buffer");
        buf.fill(7);
        buf.freeze().expect("sealed")
    };
    let once = make();
    let t0 = Instant::now();
    post_all(&worker, n, 8, || Load::Shared(if fresh { make() } else { once.clone() })).await;
    assert_eq!(worker.ask(Count).await.expect("count"), n);
    let rate = (n as usize * size) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    stop(worker).await;
    rate
}

/// `n` writes of `size` bytes through a raw socketpair to a reader thread.
fn bulk_baseline(size: usize, n: u64) -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let total = n as usize * size;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; size];
        let mut got = 0;
        while got < total {
            got += b.read(&mut buf).unwrap();
        }
    });
    let payload = vec![7u8; size];
    let t0 = Instant::now();
    for _ in 0..n {
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

async fn spawn_to_online(method: StartMethod) -> (Duration, f64) {
    let mut times = Vec::new();
    let mut rss = 0.0;
    for i in 0..SPAWNS {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = Forward(tx).start();
        let t0 = Instant::now();
        let worker = Worker::<Bench>::builder()
            .entry("sink")
            .events(forward.recipient())
            .start_method(method)
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

/// The rows `idle_worker_rss` and `idle_worker_pss`: what the crate's
/// `idle_worker` example, built with the crate's default features in
/// release (`cargo build --release --example idle_worker`), prints; and
/// `..._lean`: the same built with the `lean` profile (`--profile lean`).
/// Each exec'd and forked (`_fork_server`), and each with the worker in
/// the parent's binary and in a binary of its own (`_own_binary`: the
/// `idle_child` example, built beside it).
fn idle_worker() {
    let release = std::env::current_exe().unwrap().with_file_name("idle_worker");
    let lean = release.parent().and_then(|p| p.parent()).and_then(|p| p.parent());
    let lean = lean.map(|target| target.join("lean/examples/idle_worker"));
    let field = |text: &str, name: &str| -> Option<f64> {
        let at = text.find(name)? + name.len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    let builds = [("", Some(release)), ("_lean", lean)];
    let binaries = [("", None), ("_own_binary", Some("--own-binary"))];
    let methods = [("", None), ("_fork_server", Some("--fork-server"))];
    let runs = builds.into_iter().flat_map(|(profile, exe)| {
        binaries.into_iter().flat_map(move |(binary, own)| {
            let exe = exe.clone();
            methods.into_iter().map(move |(method, forked)| {
                let args: Vec<&str> = own.into_iter().chain(forked).collect();
                (format!("{profile}{binary}{method}"), exe.clone(), args)
            })
        })
    });
    for (suffix, exe, args) in runs {
        let exe = exe.unwrap_or_default();
        let out = std::process::Command::new(&exe).args(&args).output();
        let text = out.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let text = text.as_deref().unwrap_or_default();
        match field(text, "rss=").zip(field(text, "pss=")) {
            Some((rss, pss)) => {
                println!("idle_worker_rss{suffix}: ours={rss:.3} baseline=0.000 ratio=1.000 MiB");
                println!("idle_worker_pss{suffix}: ours={pss:.3} baseline=0.000 ratio=1.000 MiB");
                if let Some(online) = field(text, "online=") {
                    println!(
                        "idle_worker_online_ms{suffix}: ours={online:.3} baseline=0.000 \
                         ratio=1.000 ms"
                    );
                }
            }
            None => {
                let profile =
                    if suffix.starts_with("_lean") { "--profile lean" } else { "--release" };
                let why = format!(
                    "{} did not run ({:?}); build it with `cargo build {profile} --example \
                     idle_worker --example idle_child`",
                    exe.display(),
                    out.map(|o| o.status)
                );
                println!("idle_worker_rss{suffix}: skipped ({why})");
                println!("idle_worker_pss{suffix}: skipped ({why})");
            }
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A pool of `n` sinks, once its members answer.
async fn start_pool(n: usize, in_flight: usize) -> Addr<WorkerPool<Bench>> {
    let pool = WorkerPool::<Bench>::builder()
        .entry("sink")
        .size(n)
        .max_in_flight_per_worker(in_flight)
        .start()
        .expect("pool starts");
    futures_util::future::join_all((0..n * 4).map(|i| pool.ask(Ping(i as u64)))).await;
    pool
}

async fn pool_tiny() -> f64 {
    pool_tiny_of(start_pool(2, IN_FLIGHT).await).await
}

/// `POOL_TINY_N` tiny asks through `pool`, `IN_FLIGHT` at a time; then the
/// pool is closed.
async fn pool_tiny_of(pool: Addr<WorkerPool<Bench>>) -> f64 {
    let t0 = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < POOL_TINY_N {
        while in_flight.len() < IN_FLIGHT && sent < POOL_TINY_N {
            in_flight.push(pool.ask(Ping(sent)));
            sent += 1;
        }
        in_flight.next().await.expect("in flight").expect("pong");
        done += 1;
    }
    let rate = POOL_TINY_N as f64 / t0.elapsed().as_secs_f64();
    pool.terminate();
    let _ = pool.send(Join).await;
    rate
}

/// Jobs per second through a pool of `n`, one job in flight per member.
async fn pool_jobs(n: usize) -> f64 {
    let pool = start_pool(n, 1).await;
    let expected = Primes(JOB).count();
    let t0 = Instant::now();
    let answers = futures_util::future::join_all((0..JOBS).map(|_| pool.ask(Primes(JOB)))).await;
    let rate = JOBS as f64 / t0.elapsed().as_secs_f64();
    assert!(answers.into_iter().all(|a| a.expect("answer") == expected));
    pool.terminate();
    let _ = pool.send(Join).await;
    rate
}

/// Median round trip, one request at a time, through `ask`.
async fn one_at_a_time<F, Fut>(ask: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, actix_webworker::WorkerError>>,
{
    let mut times = Vec::with_capacity(OVERHEAD_N);
    for i in 0..OVERHEAD_N as u64 {
        let t0 = Instant::now();
        ask(i).await.expect("pong");
        times.push(t0.elapsed());
    }
    median(times)
}

async fn pool_overhead() -> (Duration, Duration) {
    let pool = start_pool(1, 1).await;
    let worker = start().await;
    // Alternated, so that both see the same machine.
    let (mut through_pool, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        through_pool.push(one_at_a_time(|i| pool.ask(Ping(i))).await);
        direct.push(one_at_a_time(|i| worker.ask(Ping(i))).await);
    }
    pool.terminate();
    let _ = pool.send(Join).await;
    stop(worker).await;
    (median(through_pool), median(direct))
}

/// Runs the scenarios whose names contain the first argument (all without).
/// [`STREAM_N`] items of 64 B in answer to one request, read as they come
/// (items/s).
async fn stream_answer_items() -> f64 {
    let worker = start().await;
    let t0 = Instant::now();
    let mut items = worker.send(AskStream::new(Items(STREAM_N))).await.expect("mailbox");
    let mut got = 0u64;
    while let Some(item) = items.next().await {
        std::hint::black_box(item.expect("an item"));
        got += 1;
    }
    let rate = STREAM_N as f64 / t0.elapsed().as_secs_f64();
    assert!(got == STREAM_N && items.is_complete());
    stop(worker).await;
    rate
}

async fn run() {
    let only = std::env::args().nth(1).unwrap_or_default();
    let wanted = |name: &str| match only.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(only.as_str()),
    };
    if wanted("stream_small") {
        let ours = stream_small(false, Codec::Bincode, Transport::Local).await;
        line("stream_small", ours, stream_small_baseline(), "msg/s");
    }
    if wanted("stream_answer_items") {
        let ours = stream_answer_items().await;
        line("stream_answer_items", ours, stream_small_baseline(), "items/s");
    }
    if wanted("channel_stream_small") {
        // Against `stream_small` (the same posts, parent → worker) in this run.
        let (ours, parent_cpu) = channel_row::channel_stream_small(STREAM_N).await;
        let through_parent = stream_small(false, Codec::Bincode, Transport::Local).await;
        line("channel_stream_small", ours, through_parent, "msg/s");
        line("channel_stream_small_parent_cpu", parent_cpu, 5.0, "% of a core");
    }
    if wanted("stream_small_actix_floor") {
        // Against `stream_small` (through a worker's address) in this run,
        // made first (see `pipelined_actix_floor` below).
        let through_address = stream_small(false, Codec::Bincode, Transport::Local).await;
        line(
            "stream_small_actix_floor",
            stream_small_actix_floor().await,
            through_address,
            "msg/s",
        );
    }
    if wanted("stream_small_port") {
        let ours = stream_small(true, Codec::Bincode, Transport::Local).await;
        line("stream_small_port", ours, stream_small_baseline(), "msg/s");
    }
    let tls = || Transport::tls("127.0.0.1:0".parse().unwrap());
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if wanted("remote_rtt_p50") {
        let (ours, base, evented) = remote_rtt(loopback()).await;
        line("remote_rtt_p50", us(ours), us(base), "us");
        line("remote_rtt_p50_vs_evented_echo", us(ours), us(evented), "us");
    }
    if wanted("remote_rtt_p50_pinned") && std::env::var_os(PINNED_ENV).is_none() {
        let rows = ["remote_rtt_p50", "remote_rtt_p50_vs_evented_echo"];
        let [(ours, blocking), (_, evented)] = pinned("=remote_rtt_p50", rows);
        line("remote_rtt_p50_pinned", ours, blocking, "us");
        line("remote_rtt_p50_pinned_vs_evented_echo", ours, evented, "us");
    }
    if wanted("remote_tls_rtt_p50") {
        let (ours, base, _) = remote_rtt(tls()).await;
        line("remote_tls_rtt_p50", us(ours), us(base), "us");
    }
    if wanted("remote_stream_small") {
        let ours = stream_small(false, Codec::Bincode, loopback()).await;
        line("remote_stream_small", ours, remote_stream_small_baseline(), "msg/s");
    }
    if wanted("remote_tls_stream_small") {
        let ours = stream_small(false, Codec::Bincode, tls()).await;
        line("remote_tls_stream_small", ours, remote_stream_small_baseline(), "msg/s");
    }
    if wanted("stream_small_json") {
        let ours = stream_small(false, Codec::Json, Transport::Local).await;
        line("stream_small_json", ours, stream_small_baseline(), "msg/s");
    }
    if wanted("rtt_p50") || wanted("rtt_p50_vs_evented_echo") {
        let (ours, base, base_evented) = rtt().await;
        line("rtt_p50", ours.as_secs_f64() * 1e6, base.as_secs_f64() * 1e6, "us");
        let evented = base_evented.as_secs_f64() * 1e6;
        line("rtt_p50_vs_evented_echo", ours.as_secs_f64() * 1e6, evented, "us");
    }
    if wanted("rtt_p50_pinned") && std::env::var_os(PINNED_ENV).is_none() {
        let [(ours, evented)] = pinned("rtt_p50_vs_evented_echo", ["rtt_p50_vs_evented_echo"]);
        line("rtt_p50_pinned", ours, evented, "us");
    }
    if only == "=pipelined_traced" {
        return pipelined_traced().await;
    }
    if wanted("pipelined") {
        let ours = pipelined(false).await;
        line("pipelined", ours, pipelined_baseline(), "req/s");
    }
    if wanted("pipelined_actix_floor") {
        // Against `pipelined` (through a worker's address) in this run,
        // made first: the floor is measured in the process as the worker
        // leaves it (with the threads a start makes, which make glibc's
        // malloc take its locks).
        let through_address = pipelined(false).await;
        line("pipelined_actix_floor", pipelined_actix_floor().await, through_address, "req/s");
    }
    if wanted("pipelined_port") {
        let ours = pipelined(true).await;
        line("pipelined_port", ours, pipelined_baseline(), "req/s");
    }
    for (name, how) in [("tracing_overhead", "1"), ("tracing_overhead_fmt", "fmt")] {
        if wanted(name) && std::env::var_os(TRACE_ENV).is_none() {
            let (traced, plain) = tracing_overhead(how).await;
            line(name, traced, plain, "req/s");
        }
    }
    for (name, size, vec) in [
        ("bulk_1mib", BULK, false),
        ("bulk_16mib", 16 * BULK, false),
        ("bulk_1mib_vec", BULK, true),
        ("bulk_16mib_vec", 16 * BULK, true),
    ] {
        if wanted(name) {
            let n = BULK_N * BULK as u64 / size as u64;
            let ours = bulk(size, n, vec).await;
            line(name, ours, bulk_baseline(size, n), "GB/s");
        }
    }
    for (name, size, fresh) in [
        ("bulk_1mib_shared", BULK, false),
        ("bulk_16mib_shared", 16 * BULK, false),
        ("bulk_1mib_shared_fresh", BULK, true),
        ("bulk_16mib_shared_fresh", 16 * BULK, true),
    ] {
        if wanted(name) {
            let n = BULK_N * BULK as u64 / size as u64;
            let ours = bulk_shared(size, n, fresh).await;
            line(name, ours, bulk_baseline(size, n), "GB/s");
        }
    }
    if wanted("spawn_to_online") || wanted("idle_worker_rss") {
        let (online, rss) = spawn_to_online(StartMethod::Exec).await;
        let (forked, forked_rss) = spawn_to_online(StartMethod::ForkServer).await;
        let base = spawn_baseline();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        line("spawn_to_online", ms(online), ms(base), "ms");
        line("spawn_to_online_fork_server", ms(forked), ms(base), "ms");
        println!("idle_worker_rss_lab: ours={rss:.3} baseline=0.000 ratio=1.000 MiB");
        println!(
            "idle_worker_rss_lab_fork_server: ours={forked_rss:.3} baseline=0.000 ratio=1.000 MiB"
        );
        idle_worker();
    }
    if wanted("mass_start_late_ms") {
        for (name, ours, base) in mass_start::rows().await {
            line(&name, ours, base, "ms");
        }
    }
    if wanted("pool_tiny") {
        let ours = pool_tiny().await;
        line("pool_tiny", ours, pipelined_baseline(), "req/s");
    }
    if wanted("pool_cpu_scaling") {
        let one = pool_jobs(1).await;
        let two = pool_jobs(2).await;
        line("pool_cpu_scaling", two, one, "jobs/s");
    }
    if wanted("cluster_pool_tiny") || wanted("host_loss_recovery_ms") {
        match cluster::Hosts::make() {
            Err(why) => {
                println!("cluster_pool_tiny: skipped ({why})");
                println!("host_loss_recovery_ms: skipped ({why})");
            }
            Ok(hosts) => {
                if wanted("cluster_pool_tiny") {
                    let ours = pool_tiny_of(hosts.pool(4, None).await).await;
                    let local = pool_tiny_of(start_pool(4, IN_FLIGHT).await).await;
                    line("cluster_pool_tiny", ours, local, "req/s");
                }
                if wanted("host_loss_recovery_ms") {
                    let lost_after = Duration::from_secs(1);
                    let recovered = hosts.recovery(lost_after).await;
                    let ms = |d: Duration| d.as_secs_f64() * 1e3;
                    line("host_loss_recovery_ms", ms(recovered), ms(lost_after), "ms");
                }
            }
        }
    }
    if wanted("pool_overhead") {
        let (pool, direct) = pool_overhead().await;
        line("pool_overhead", pool.as_secs_f64() * 1e6, direct.as_secs_f64() * 1e6, "us");
    }
}

fn main() {
    // The subscriber of `tracing_overhead`'s traced runs, and of their
    // workers: installed first, as an application does.
    install_if_asked();
    run_if_echo();
    run_if_worker([
        Entry::new("sink", |_: Parent<Bench>| Sink { received: 0 }),
        channel_row::entry(),
    ]);
    System::new().block_on(run());
}

#[path = "throughput/mass_start.rs"]
mod mass_start;

/// Two hosts made here for the cluster rows: network namespaces, each
/// joined to this one by a veth pair whose addresses exist only on it;
/// members are launched into them with `ip netns exec` and connect back
/// over TLS to this side's address on their pair. Deleted on drop.
mod cluster {
    use std::time::{Duration, Instant};

    use actix::Addr;
    use actix_webworker::{Host, Join, Stats, Transport, WorkerAddrExt, WorkerPool};

    use super::{Bench, Ping, IN_FLIGHT};

    pub struct Hosts {
        /// Each host's namespace, the veth end here, and this side's address.
        hosts: Vec<(String, String, String)>,
    }

    fn ip(args: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new("ip").args(args).output();
        let out = out.map_err(|e| format!("ip: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        }
    }

    impl Hosts {
        pub fn make() -> Result<Hosts, String> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not root: no network namespace can be made".into());
            }
            let id = std::process::id();
            let mut made = Hosts { hosts: Vec::new() };
            for k in 0..2 {
                let (ns, here, inside) = (
                    format!("awwb-{id}-{k}"),
                    format!("awb{}h{k}", id % 100_000),
                    format!("awb{}i{k}", id % 100_000),
                );
                let net = 100 + id % 100;
                let (a, b) =
                    (format!("10.203.{net}.{}", 4 * k + 1), format!("10.203.{net}.{}", 4 * k + 2));
                ip(&["netns", "add", &ns])?;
                made.hosts.push((ns.clone(), here.clone(), a.clone()));
                ip(&["link", "add", &here, "type", "veth", "peer", "name", &inside, "netns", &ns])?;
                ip(&["addr", "add", &format!("{a}/30"), "dev", &here])?;
                ip(&["-n", &ns, "addr", "add", &format!("{b}/30"), "dev", &inside])?;
                ip(&["link", "set", &here, "up"])?;
                ip(&["-n", &ns, "link", "set", &inside, "up"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            }
            Ok(made)
        }

        /// A pool of `n` over the two hosts (`n / 2` each), once every
        /// member answers.
        pub async fn pool(&self, n: usize, heartbeat: Option<Duration>) -> Addr<WorkerPool<Bench>> {
            let hosts = self.hosts.iter().enumerate().map(|(k, (ns, _, here_ip))| {
                let listen = format!("{here_ip}:0").parse().unwrap();
                Host::launched(format!("h{k}"), ["ip", "netns", "exec", ns.as_str()])
                    .transport(Transport::tls(listen).connect_to(here_ip.as_str()))
                    .limit(n)
                    .retry_after(Duration::from_secs(600))
            });
            let mut builder = WorkerPool::<Bench>::builder()
                .entry("sink")
                .hosts(hosts.collect::<Vec<_>>())
                .size(n)
                .max_in_flight_per_worker(IN_FLIGHT);
            if let Some(lost_after) = heartbeat {
                builder = builder.heartbeat(Duration::from_millis(100), lost_after);
            }
            let pool = builder.start().expect("pool starts");
            // Every member up, not only those that answer first.
            loop {
                let stats = pool.send(Stats).await.expect("stats");
                if stats.members.iter().filter(|m| m.online).count() == n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            futures_util::future::join_all((0..n * 4).map(|i| pool.ask(Ping(i as u64)))).await;
            pool
        }

        /// From host 0's link going down to the pool at full size, online,
        /// on host 1.
        pub async fn recovery(&self, lost_after: Duration) -> Duration {
            let pool = self.pool(4, Some(lost_after)).await;
            ip(&["link", "set", &self.hosts[0].1, "down"]).expect("the link goes down");
            let cut = Instant::now();
            loop {
                let stats = pool.send(Stats).await.expect("stats");
                let up = stats.members.iter().filter(|m| m.online && &*m.host == "h1").count();
                if up == 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let recovered = cut.elapsed();
            pool.terminate();
            let _ = pool.send(Join).await;
            // The link back: the workers left on host 0 find their
            // connection gone and exit.
            ip(&["link", "set", &self.hosts[0].1, "up"]).expect("the link comes back");
            for _ in 0..3000 {
                if pids(&self.hosts[0].0).is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            recovered
        }
    }

    /// The processes in namespace `ns`.
    fn pids(ns: &str) -> Vec<i32> {
        let out = std::process::Command::new("ip").args(["netns", "pids", ns]).output();
        let out = out.map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out).split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    impl Drop for Hosts {
        fn drop(&mut self) {
            for (ns, here, _) in &self.hosts {
                for pid in pids(ns) {
                    // SAFETY: kill with a pid and a signal number.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = ip(&["netns", "del", ns]);
                let _ = ip(&["link", "del", here]);
            }
        }
    }
}
