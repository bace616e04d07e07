//! Faults and their reports: signals, exits, stubborn workers, worker
//! process trees, a parent killed under load, and what a worker inherits.

use std::time::{Duration, Instant};

use actix_webworker::{
    Event, Grace, Join, ResourceLimits, Restart, Terminate, WorkerAddrExt, WorkerError,
};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        faults::sigsegv_is_reported,
        faults::sigterm_from_outside_is_no_clean_exit_and_is_restarted,
        faults::sigabrt_is_reported,
        faults::exit_137_is_a_code_not_a_signal,
        faults::sigkill_by_someone_else_is_reported,
        faults::a_real_time_signal_is_reported,
        faults::a_segfaulting_worker_is_restarted_as_configured,
        faults::a_worker_that_ignores_sigterm_is_killed_within_grace_plus_one_second,
        faults::terminate_takes_the_workers_own_children_down,
        faults::parent_killed_under_load_takes_all_workers_down,
        faults::parent_killed_under_load_takes_all_workers_down_when_they_were_forked,
        faults::parent_killed_with_idle_workers_takes_their_children_down_fifty_times,
        faults::no_descriptor_of_the_parent_leaks_into_a_worker,
        faults::a_clean_environment_is_only_what_the_builder_says,
        faults::a_worker_over_its_memory_limit_dies_and_is_reported,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![faults::doomed_parent_role,]
}

/// Posts `cmd` with a request pending; checks the exit and the request.
fn dies_with(cmd: Cmd, code: Option<i32>, signal: Option<i32>) {
    run(async {
        let (worker, mut events) = start();
        let pending = worker.ask(Never);
        assert_eq!(worker.ask(Seen).await.unwrap(), 0);
        worker.post(cmd);
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (code, signal), "{status}");
        let res = pending.await;
        assert!(matches!(res, Err(WorkerError::Exited(s)) if s == status), "{res:?}");
    });
}

pub fn sigsegv_is_reported() {
    dies_with(Cmd::Segfault, None, Some(libc::SIGSEGV));
}

pub fn sigabrt_is_reported() {
    dies_with(Cmd::Abort, None, Some(libc::SIGABRT));
}

pub fn exit_137_is_a_code_not_a_signal() {
    dies_with(Cmd::Exit(137), Some(137), None);
}

pub fn sigkill_by_someone_else_is_reported() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        let pending = worker.ask(Never);
        assert_eq!(worker.ask(Seen).await.unwrap(), 0);
        kill(pid, Signal::SIGKILL);
        assert_eq!(events.exit().await.signal, Some(9));
        assert!(matches!(pending.await, Err(WorkerError::Exited(_))));
    });
}

/// A real-time signal (34 and up) is reported with its number, not as an
/// unknown status.
pub fn a_real_time_signal_is_reported() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        let signal = libc::SIGRTMIN() + 2;
        // Raw: nix's `Signal` (and so `common::kill`) cannot name a
        // real-time signal.
        // SAFETY: signalling the worker we started (its default action for
        // a real-time signal is to end).
        unsafe { libc::kill(pid as i32, signal) };
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (None, Some(signal)), "{status}");
    });
}

pub fn a_segfaulting_worker_is_restarted_as_configured() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy = fast(Restart::OnFailure);
        let worker = builder(rec).restart(policy).start().unwrap();
        worker.post(Cmd::Segfault);
        loop {
            match events.next().await {
                Event::Exit(s) => assert_eq!(s.signal, Some(libc::SIGSEGV)),
                Event::Restarting { .. } => break,
                Event::GaveUp(g) => panic!("{g:?}"),
                _ => {}
            }
        }
        assert_eq!(worker.ask(Sum(vec![1, 1])).await.unwrap(), 2);
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
    });
}

pub fn a_worker_that_ignores_sigterm_is_killed_within_grace_plus_one_second() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).grace_period(Duration::from_millis(300)).start().unwrap();
        worker.post(Cmd::IgnoreTermAndHang);
        worker.post(Cmd::Echo(0)); // never handled
        let t0 = Instant::now();
        worker.send(Terminate(Grace::Default)).await.unwrap();
        let status = events.exit().await;
        assert_eq!(status.signal, Some(libc::SIGKILL));
        assert!(t0.elapsed() < Duration::from_millis(1300), "took {:?}", t0.elapsed());
    });
}

pub fn terminate_takes_the_workers_own_children_down() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::SpawnGrandchild);
        let Reply::Pid(grandchild) = events.message().await.data else { panic!() };
        worker.terminate();
        assert!(events.exit().await.success());
        assert!(wait_gone(grandchild, Duration::from_secs(2)), "grandchild {grandchild} outlived");
    });
}

/// The parent side of the tests where a parent is killed: eight workers,
/// each with a child of its own (`sleep 600`), busy in a handler when
/// `AWW_BUSY` is set, idle otherwise; prints all the pids and waits.
pub fn doomed_parent_role() {
    let busy = std::env::var_os("AWW_BUSY").is_some();
    run(async move {
        let mut pids = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..8 {
            let (worker, mut events) = start();
            worker.post(Cmd::SpawnGrandchild);
            let Reply::Pid(grandchild) = events.message().await.data else { panic!() };
            worker.post(Cmd::Pid);
            let Reply::Pid(pid) = events.message().await.data else { panic!() };
            if busy {
                worker.post(Cmd::Busy(600_000));
                assert_eq!(events.message().await.data, Reply::Busy);
            }
            pids.push(pid);
            pids.push(grandchild);
            keep.push((worker, events));
        }
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        println!("PIDS={}", list.join(","));
        std::future::pending::<()>().await;
    });
}

/// Starts a doomed parent (starting its workers by fork, the fallback of
/// `parent/spawn.rs`, if `by_fork`), kills it, and checks that its workers
/// and their children are all gone within 2 s.
fn kill_the_parent(busy: bool, by_fork: bool) -> Duration {
    use std::io::BufRead;
    let mut cmd = role("faults::doomed_parent_role");
    if busy {
        cmd.env("AWW_BUSY", "1");
    }
    if by_fork {
        cmd.env("ACTIX_WEBWORKER_TEST_SPAWN_WITH_FORK", "1");
    }
    let mut parent = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = parent.stdout.take().unwrap();
    let mut pids = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some((_, list)) = line.unwrap().split_once("PIDS=") {
            pids = list.trim().split(',').map(|p| p.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 16, "8 workers and their children");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let t0 = Instant::now();
    for pid in pids {
        let left = Duration::from_secs(2).saturating_sub(t0.elapsed());
        assert!(wait_gone(pid, left), "process {pid} outlived its parent by 2 s (busy: {busy})");
    }
    t0.elapsed()
}

pub fn parent_killed_under_load_takes_all_workers_down() {
    let took = kill_the_parent(true, false);
    println!("ORPHANS busy: all 16 gone {} ms after the parent", took.as_millis());
}

/// The same, with the workers started by fork: the parent-death signal is
/// asked for on both paths.
pub fn parent_killed_under_load_takes_all_workers_down_when_they_were_forked() {
    let took = kill_the_parent(true, true);
    println!("ORPHANS busy, forked: all 16 gone {} ms after the parent", took.as_millis());
}

/// Idle workers exit promptly when their parent dies, and must take their
/// own children with them: they used to check who their parent was while
/// the dying parent still was (7 rounds in 10 leaked).
pub fn parent_killed_with_idle_workers_takes_their_children_down_fifty_times() {
    let slowest = (0..50).map(|_| kill_the_parent(false, false)).max().unwrap_or_default();
    println!("ORPHANS idle: 50 rounds, all 16 gone within {} ms each", slowest.as_millis());
}

pub fn no_descriptor_of_the_parent_leaks_into_a_worker() {
    run(async {
        // A descriptor opened without close-on-exec, as careless code does.
        let (r, w) = std::io::pipe().unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: clearing close-on-exec on a pipe we own.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0) };
        let leaked = std::fs::read_link(format!("/proc/self/fd/{}", r.as_raw_fd())).unwrap();
        let (worker, mut events) = start();
        worker.post(Cmd::ListFds);
        let Reply::Lines(fds) = events.message().await.data else { panic!() };
        let leaked = leaked.display().to_string();
        assert!(!fds.contains(&leaked), "{leaked} leaked into the worker: {fds:?}");
        // Beyond stdio: its socket (a socketpair, no path on disk) and the
        // runtime's own sockets, pipes and event descriptors; no files.
        assert!(fds.iter().all(|f| !f.starts_with('/')), "{fds:?}");
        drop((r, w));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_clean_environment_is_only_what_the_builder_says() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).env_clear().env("ONLY", "this").start().unwrap();
        worker.post(Cmd::Env);
        let Reply::Lines(env) = events.message().await.data else { panic!() };
        assert_eq!(env, ["ONLY=this"], "the runtime's own variables are removed at start");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_worker_over_its_memory_limit_dies_and_is_reported() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let limits = ResourceLimits::default().address_space(512 << 20);
        let worker = builder(rec)
            .resource_limits(limits)
            .stderr(actix_webworker::Output::Null)
            .start()
            .unwrap();
        worker.post(Cmd::Alloc(1 << 20));
        assert_eq!(events.message().await.data, Reply::Count(1 << 20));
        worker.post(Cmd::Alloc(1 << 30));
        let status = events.exit().await;
        // Rust aborts when an allocation fails.
        assert_eq!(status.signal, Some(libc::SIGABRT), "{status}");
        // The parent is fine and starts another.
        let (other, mut other_events) = start();
        assert_eq!(other.ask(Sum(vec![2])).await.unwrap(), 2);
        other.terminate();
        assert!(other_events.exit().await.success());
        drop(worker);
    });
}

/// SIGTERM from someone other than the parent (a cluster cancelling the
/// job, an operator): `on_close` runs, but the worker exits with 143, not
/// 0, so the parent does not take it for a worker that finished, and
/// `OnFailure` restarts it. Before, it exited 0 and was never restarted.
pub fn sigterm_from_outside_is_no_clean_exit_and_is_restarted() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::OnFailure)).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected Pid") };
        assert!(kill(pid, Signal::SIGTERM));
        let mut closed = false;
        loop {
            match events.next().await {
                Event::Message(m) => closed |= m.data == Reply::Closing,
                Event::Exit(s) => {
                    assert_eq!(s.code, Some(actix_webworker::exit_code::SIGTERM), "{s}");
                    assert!(!s.success());
                }
                Event::Restarting { .. } => break,
                Event::GaveUp(g) => panic!("{g:?}"),
                _ => {}
            }
        }
        assert!(closed, "on_close did not run");
        assert_eq!(worker.ask(Sum(vec![1, 1])).await.unwrap(), 2);
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
    });
}
