//! What an idle worker weighs: starts one, waits until it answers, lets it
//! settle, and prints its resident size (RSS) and its proportional share
//! (PSS, shared pages divided among the processes that map them), from
//! `/proc/<pid>/smaps_rollup`, then terminates it. It also prints how long
//! its start took, from `start()` to the online event (`online=`, in ms):
//! a worker of this size, not a test binary's or the probe's.
//!
//! With `--fork-server`, the worker is forked from a template
//! (`StartMethod::ForkServer`): the template is started first (by a
//! worker that then goes), then the measured worker, whose start alone is
//! timed.
//!
//! With `--own-binary`, the worker is `idle_child`, a binary of its own
//! next to this one (`program`), which holds only the worker's code: the
//! weight of a worker whose program is not also the parent. Build it
//! first: `cargo build --release --example idle_child`.
//!
//! `cargo run --release --example idle_worker` measures the crate with its
//! default features, as an app that depends on it builds it (the
//! throughput probe in `lab/` builds it with `tls`, and runs this binary
//! for its `idle_worker_rss` rows when it has been built).

use std::path::PathBuf;
use std::time::Duration;

use actix_webworker::{
    run_if_worker, Entry, Event, Join, Parent, StartMethod, Worker, WorkerAddrExt,
};

#[path = "idle/protocol.rs"]
mod protocol;

use protocol::{Idle, IdleWorker, Ping};

/// A field of `/proc/<pid>/smaps_rollup`, in MiB.
fn field(pid: u32, name: &str) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A plain `main`: a template must be forked before any runtime or
/// thread is started (`StartMethod::ForkServer`).
fn main() {
    run_if_worker([Entry::new("idle", |_: Parent<Idle>| IdleWorker)]);
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let own = flag("--own-binary").then(|| {
        let exe = std::env::current_exe().expect("this program's path");
        let child = exe.with_file_name("idle_child");
        if !child.exists() {
            // target/<profile>/examples/idle_worker: built as this was.
            let profile = exe.parent().and_then(|examples| examples.parent());
            let profile = profile.and_then(|p| p.file_name()).and_then(|n| n.to_str());
            let flag = match profile.unwrap_or("release") {
                "debug" => String::new(),
                "release" => " --release".into(),
                other => format!(" --profile {other}"),
            };
            eprintln!(
                "{} is missing: build it with `cargo build{flag} --example idle_child`",
                child.display()
            );
            std::process::exit(2);
        }
        child
    });
    actix::System::new().block_on(measure(flag("--fork-server"), own));
}

async fn measure(forked: bool, own: Option<PathBuf>) {
    let method = if forked { StartMethod::ForkServer } else { StartMethod::Exec };
    let builder = || {
        let builder = Worker::<Idle>::builder().start_method(method);
        match &own {
            Some(program) => builder.program(program),
            None => builder.entry("idle"),
        }
    };
    if forked {
        // The template, started by a first worker, which goes.
        let first = builder().start().expect("the first worker starts");
        assert_eq!(first.ask(Ping(1)).await.expect("an answer"), 1);
        first.terminate();
        let _ = first.send(Join).await;
    }
    let started = std::time::Instant::now();
    let (worker, mut events) = builder().start_with_events().expect("the worker starts");
    let pid = loop {
        let event = events.next().await.expect("events");
        if let Event::Online = event.kind {
            break event.pid;
        }
    };
    let online = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(worker.ask(Ping(7)).await.expect("an answer"), 7);
    // Settled: nothing arrives, its runtime waits in epoll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss, pss) = (field(pid, "Rss:"), field(pid, "Pss:"));
    let anon = field(pid, "Anonymous:");
    println!(
        "idle worker {pid}: rss={rss:.3} MiB pss={pss:.3} MiB anonymous={anon:.3} MiB \
         online={online:.3} ms"
    );
    worker.terminate();
    let _ = worker.send(Join).await;
}
