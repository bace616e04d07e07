//! `mass_start_late_ms`: how late the parent's event loop runs while 64
//! workers start at once.
//!
//! A 1 ms ticker on the loop's thread notes how late each of its wake-ups
//! comes; 64 `start()` calls are made together and the row is the worst
//! lateness until all 64 have answered a ping (ms; baseline: the worst
//! lateness of the same ticker over the same time with nothing starting).
//! `mass_start_late_ms_second`: a second round of 64, the first still up.
//! `mass_start_all_online_ms`: how long the first round took, from the
//! first `start()` until all 64 had answered (what admitting starts a few
//! at a time, `parent/spawner.rs`, may cost; no baseline).
//!
//! `..._fork_server`: the same rows with workers forked from a template
//! (`StartMethod::ForkServer`; the template is started by the first
//! round's first start).
//!
//! Measured in a process of its own (this executable again): what a first
//! mass start costs depends on what the process did before (how far its
//! descriptor table has grown), and the other rows start many workers.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_webworker::{StartMethod, Worker, WorkerAddrExt};

use super::{stop, Bench, Ping};

/// Set in the process that measures.
const FRESH_ENV: &str = "THROUGHPUT_MASS_START";

const STARTS: usize = 64;

/// The rows, `(name, ours, baseline)` in ms: measured in a fresh process
/// unless this is it.
pub async fn rows() -> Vec<(String, f64, f64)> {
    if let Some(method) = std::env::var_os(FRESH_ENV) {
        return measure(method == "fork_server").await;
    }
    let mut rows = Vec::new();
    for (method, suffix) in [("exec", ""), ("fork_server", "_fork_server")] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("=mass_start_late_ms")
            .env(FRESH_ENV, method)
            .output()
            .expect("the fresh run");
        assert!(out.status.success(), "the fresh run failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for name in ["mass_start_late_ms", "mass_start_late_ms_second", "mass_start_all_online_ms"]
        {
            let (ours, baseline) = super::row_of(&text, name);
            rows.push((format!("{name}{suffix}"), ours, baseline));
        }
    }
    rows
}

/// The worst lateness of a 1 ms ticker on this thread while `work` runs.
async fn worst_lateness<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let worst = Rc::new(Cell::new(Duration::ZERO));
    let ticker = {
        let worst = worst.clone();
        actix::spawn(async move {
            loop {
                let due = Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(due.into()).await;
                worst.set(worst.get().max(Instant::now().saturating_duration_since(due)));
            }
        })
    };
    // The ticker's first tick, so that it runs before the work begins.
    tokio::time::sleep(Duration::from_millis(3)).await;
    worst.set(Duration::ZERO);
    let out = work.await;
    ticker.abort();
    (out, worst.get())
}

async fn round(method: StartMethod) -> (Vec<Addr<Worker<Bench>>>, Duration) {
    let t0 = Instant::now();
    let workers: Vec<_> = (0..STARTS)
        .map(|_| {
            let builder = Worker::<Bench>::builder().entry("sink").start_method(method);
            builder.start().expect("worker starts")
        })
        .collect();
    futures_util::future::join_all(workers.iter().map(|w| w.ask(Ping(0)))).await;
    (workers, t0.elapsed())
}

async fn measure(fork_server: bool) -> Vec<(String, f64, f64)> {
    let method = if fork_server { StartMethod::ForkServer } else { StartMethod::Exec };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ((first, took), late) = worst_lateness(round(method)).await;
    // The baseline: the ticker alone, as long as the first round took.
    let ((), idle) = worst_lateness(tokio::time::sleep(took)).await;
    let ((second, _), late_second) = worst_lateness(round(method)).await;
    for w in first.into_iter().chain(second) {
        stop(w).await;
    }
    vec![
        ("mass_start_late_ms".into(), ms(late), ms(idle)),
        ("mass_start_late_ms_second".into(), ms(late_second), ms(idle)),
        ("mass_start_all_online_ms".into(), ms(took), 0.0),
    ]
}
