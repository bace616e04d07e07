//! Findings of a review of the surfaces a network peer or another local
//! user can reach (a remote launch's port, its token check, TLS, the
//! launchers): each test shows the bad outcome with a figure.

#[cfg(feature = "tcp")]
use std::time::{Duration, Instant};

use libtest_mimic::Trial;

#[cfg(feature = "tcp")]
use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::with_feature!(
        "tcp",
        trials![
            review_net::max_rss_does_not_recycle_a_remote_member_for_its_launchers_memory,
        ]
    )
}

/// A launcher as `kubectl exec` is to its worker: a process of its own on
/// this host, fat (`kubectl` holds tens of MiB; this one 96 MiB), the
/// worker (on the pod) its child, its stdin passed on.
#[cfg(feature = "tcp")]
const FAT_LAUNCHER: &str = "import subprocess, sys\n\
held = b'x' * (96 << 20)\n\
sys.exit(subprocess.call(sys.argv[1:]))";

/// The resident memory of process `pid`, in bytes (0 if gone).
#[cfg(feature = "tcp")]
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// The children of process `pid`.
#[cfg(feature = "tcp")]
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

#[cfg(feature = "tcp")]
/// README, Pools: `max_rss(bytes)` retires a member whose resident memory
/// passes it. A member on another host is started through a launcher,
/// and the pid the pool has is the launcher's: its memory is what was
/// looked at. A worker of 10-odd MiB under `max_rss(64 MiB)`, launched
/// through a 96 MiB `kubectl`-like launcher, was recycled for the
/// launcher's memory, again and again (each replacement has its own
/// fat launcher): a churn with nothing over the limit. What the pool
/// cannot see (memory on another host) must not be taken for the
/// member's.
pub fn max_rss_does_not_recycle_a_remote_member_for_its_launchers_memory() {
    use actix_webworker::{Event, Host, PoolEvent, WorkerAddrExt, WorkerPool};
    if std::process::Command::new("python3").arg("-c").arg("").status().is_err() {
        return skip("no python3 to play a fat launcher");
    }
    run(async {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .transport(loopback())
            .hosts([Host::launched("pod", ["python3", "-c", FAT_LAUNCHER])])
            .size(1)
            .max_rss(64 << 20)
            .events(recipient)
            .start()
            .unwrap();
        let online = |ev: &PoolEvent<Test>| {
            matches!(ev, PoolEvent::Member { event, .. } if matches!(event.kind, Event::Online))
        };
        let launcher = match pool_until(&mut rx, online).await {
            PoolEvent::Member { event, .. } => event.pid,
            _ => unreachable!(),
        };
        let workers = children_of(launcher);
        let (launcher_rss, worker_rss) =
            (rss_of(launcher), workers.iter().map(|&w| rss_of(w)).max().unwrap_or(0));
        // The pool looks once a second: five looks, each recycling counted.
        let (mut recycled, until) = (Vec::new(), Instant::now() + Duration::from_secs(5));
        while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            if let PoolEvent::Recycled { reason, .. } = ev {
                recycled.push(reason);
            }
        }
        println!(
            "RSS launcher {} KiB, its worker {} KiB, max_rss 65536 KiB: recycled {} times in 5 s: {recycled:?}",
            launcher_rss >> 10,
            worker_rss >> 10,
            recycled.len()
        );
        pool.terminate();
        pool.send(actix_webworker::Join).await.unwrap();
        assert!(worker_rss > 0 && worker_rss < 64 << 20, "the worker is under the limit");
        assert!(recycled.is_empty(), "recycled for its launcher's memory: {recycled:?}");
    });
}
