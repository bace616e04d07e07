//! Soak: mixed traffic to supervised workers, with one killed every two
//! seconds, for a while; then the books must balance.
//!
//! `cargo run --release --example soak -- 600` runs ten minutes (the
//! default is 5 s, as CI runs every example). Four workers; each round
//! sends 1,000 requests spread over them, some posts, and some messages
//! with a descriptor. Every request resolves: answered, or failed with the
//! exit of the process it was in (at most once). Printed at the end:
//!
//! `soak: seconds=.. requests=.. answered=.. failed_at_exit=.. lost=0
//! posts=.. restarts=.. kills=.. peak_rss_mib=..`
//!
//! It exits non-zero if any request was lost or a worker gave up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Join, Parent, Post, Protocol, Received, Requests, Restart,
    RestartPolicy, Worker, WorkerActor, WorkerAddrExt, WorkerError, WorkerEvent,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Note {
    Text(String),
    /// Carries a descriptor: the worker reads a byte from it.
    Pipe,
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Work(u64);

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
struct Pid;

struct Soak;

impl Protocol for Soak {
    type ToWorker = Note;
    type FromWorker = ();
}

struct Busy;

impl Actor for Busy {
    type Context = Context<Self>;
}

impl Handler<Received<Note>> for Busy {
    type Result = ();

    fn handle(&mut self, mut msg: Received<Note>, _: &mut Context<Self>) {
        let fd = msg.take_fd();
        if let (Note::Pipe, Some(fd)) = (&msg.data, fd) {
            use std::io::Read;
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(fd).read(&mut b);
        }
    }
}

impl Handler<Work> for Busy {
    type Result = u64;

    fn handle(&mut self, msg: Work, _: &mut Context<Self>) -> u64 {
        msg.0.wrapping_mul(31)
    }
}

impl Handler<Pid> for Busy {
    type Result = u32;

    fn handle(&mut self, _: Pid, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}

impl WorkerActor for Busy {
    type Protocol = Soak;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Work>().answer::<Pid>();
    }
}

/// Counts restarts and give-ups.
struct Watch {
    restarts: Arc<AtomicU64>,
    gave_up: Arc<AtomicU64>,
}

impl Actor for Watch {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent<Soak>> for Watch {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent<Soak>, _: &mut Context<Self>) {
        match event.kind {
            Event::Restarting { .. } => {
                self.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Event::GaveUp(g) => {
                eprintln!("{} gave up: {}", event.name, g.reason);
                self.gave_up.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn soak(seconds: u64) -> bool {
    let restarts = Arc::new(AtomicU64::new(0));
    let gave_up = Arc::new(AtomicU64::new(0));
    let watch = Watch { restarts: restarts.clone(), gave_up: gave_up.clone() }.start();
    let policy = RestartPolicy::default()
        .restart(Restart::OnFailure)
        .intensity(1_000_000, Duration::from_secs(60))
        .backoff(Duration::from_millis(10), Duration::from_millis(100));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            Worker::<Soak>::builder()
                .entry("busy")
                .name(format!("busy-{i}"))
                .restart(policy)
                .events(watch.clone().recipient())
                .start()
                .expect("worker starts")
        })
        .collect();

    let (mut requests, mut answered, mut failed, mut posts, mut kills) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut peak = rss_mib();
    let t0 = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    let mut round = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        let asks = (0..1000u64).map(|i| {
            let worker = &workers[(i % 4) as usize];
            worker.ask(Work(round * 1000 + i))
        });
        requests += 1000;
        for (i, w) in workers.iter().enumerate() {
            w.do_send(Post::new(Note::Text(format!("round {round}"))));
            let (r, mut wr) = std::io::pipe().expect("pipe");
            use std::io::Write;
            let _ = wr.write_all(&[i as u8]);
            w.do_send(Post::with_fds(Note::Pipe, vec![r.into()]));
            posts += 2;
        }
        if Instant::now() >= next_kill {
            let victim = &workers[(kills % 4) as usize];
            if let Ok(Ok(pid)) = victim.send(actix_webworker::Ask::new(Pid)).await {
                // SAFETY: killing a worker of ours, as a crash would.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                kills += 1;
            }
            next_kill += Duration::from_secs(2);
        }
        for (i, res) in join_all(asks).await.into_iter().enumerate() {
            match res {
                Ok(v) if v == (round * 1000 + i as u64).wrapping_mul(31) => answered += 1,
                Ok(v) => panic!("wrong answer {v} to request {i} of round {round}"),
                Err(WorkerError::Exited(_)) => failed += 1,
                Err(e) => panic!("request failed with {e}"),
            }
        }
        peak = peak.max(rss_mib());
    }
    let lost = requests - answered - failed;
    for w in &workers {
        w.terminate();
    }
    for w in workers {
        let _ = w.send(Join).await;
    }
    println!(
        "soak: seconds={} requests={requests} answered={answered} failed_at_exit={failed} \
         lost={lost} posts={posts} restarts={} kills={kills} peak_rss_mib={peak:.1}",
        t0.elapsed().as_secs(),
        restarts.load(Ordering::Relaxed),
    );
    lost == 0 && gave_up.load(Ordering::Relaxed) == 0
}

fn main() {
    run_if_worker([Entry::new("busy", |_: Parent<Soak>| Busy)]);
    let seconds = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let ok = System::new().block_on(soak(seconds));
    std::process::exit(if ok { 0 } else { 1 });
}
