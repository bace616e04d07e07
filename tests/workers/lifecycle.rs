//! A worker's life from the parent's side, where it used to go wrong: a
//! worker that never says hello, what the parent holds after an exit,
//! deploys that replace the executable, parents without standard
//! descriptors, slow clean exits, resource limits, misuse, and sockets that
//! do not come from the parent.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use actix_webworker::{
    exit_code, Event, Join, Limits, ResourceLimits, Restart, SpawnError, WireError, Worker,
    WorkerAddrExt, WorkerError,
};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        lifecycle::a_worker_that_never_says_hello_is_timed_out_and_restarted_as_told,
        lifecycle::everything_of_a_worker_is_released_when_its_exit_is_told,
        lifecycle::restarts_keep_working_after_a_deploy_replaced_the_executable,
        lifecycle::a_parent_without_stdout_never_hands_out_the_socket_as_one,
        lifecycle::a_slow_teardown_after_terminate_is_a_clean_exit,
        lifecycle::the_cpu_limit_warns_with_sigxcpu_and_on_close_runs,
        lifecycle::too_few_open_files_is_refused_at_start,
        lifecycle::starting_workers_before_run_if_worker_is_refused,
        lifecycle::limits_set_past_their_caps_are_capped,
        lifecycle::a_socket_from_another_process_is_refused_by_the_worker,
        lifecycle::stopping_the_system_closes_every_worker_gracefully,
        lifecycle::dropping_the_last_address_gives_the_shutdown_timeout_not_the_grace,
    ]
}

/// Roles: run only when a test starts them in a process of their own.
pub fn roles() -> Vec<Trial> {
    crate::inner![
        lifecycle::release_role,
        lifecycle::deploy_role,
        lifecycle::closed_stdio_role,
        lifecycle::nested_role,
        lifecycle::connect_role,
    ]
}

pub fn a_worker_that_never_says_hello_is_timed_out_and_restarted_as_told() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let limit = Duration::from_millis(300);
        let policy = fast(Restart::OnFailure).intensity(1, Duration::from_secs(3600));
        // A program that is no worker: it never says hello.
        let worker = Worker::<Test>::builder()
            .program("sleep")
            .args(["600"])
            .handshake_timeout(limit)
            .restart(policy)
            .events(rec)
            .start()
            .unwrap();
        let pending = worker.ask(Sum(vec![1]));
        let mut timeouts = 0;
        let mut exits = Vec::new();
        let gave_up = loop {
            match events.next().await {
                Event::WireError(WireError::HandshakeTimeout(d)) => {
                    assert_eq!(d, limit);
                    timeouts += 1;
                }
                Event::Exit(status) => exits.push(status),
                Event::GaveUp(g) => break g,
                Event::Restarting { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(timeouts, 2, "the first process and its one restart");
        assert!(exits.iter().all(|s| s.signal == Some(libc::SIGKILL)), "{exits:?}");
        assert_eq!(gave_up.exits, exits);
        assert!(matches!(pending.await, Err(WorkerError::Exited(_))));
        assert_eq!(worker.send(Join).await.unwrap(), exits[1]);
    });
}

/// Run alone by `everything_of_a_worker_is_released_when_its_exit_is_told`.
pub fn release_role() {
    run(async {
        // One cycle first, so that lazily created things (the spawner
        // thread, the runtime's I/O driver) are counted in the baseline.
        let (worker, mut events) = start();
        worker.terminate();
        events.exit().await;
        let baseline = open_fds();
        let mut slowest = Duration::ZERO;
        for cycle in 0..100 {
            let (worker, mut events) = start();
            events.online().await;
            // The default grace period (5 s) runs on: its timer must hold
            // nothing of the process.
            worker.terminate();
            assert!(events.exit().await.success());
            let t0 = Instant::now();
            let released = within(Duration::from_millis(50), || open_fds() <= baseline).await;
            slowest = slowest.max(t0.elapsed());
            assert!(released, "cycle {cycle}: {} descriptors, {baseline} before", open_fds());
            assert!(children().is_empty(), "cycle {cycle}: children left: {:?}", children());
        }
        println!("RELEASE 100 cycles, descriptors back within {} us", slowest.as_micros());
    });
}

pub fn everything_of_a_worker_is_released_when_its_exit_is_told() {
    isolated("lifecycle::release_role");
}

/// Run from a copy of the test binary by
/// `restarts_keep_working_after_a_deploy_replaced_the_executable`.
pub fn deploy_role() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy = fast(Restart::OnFailure);
        let worker = builder(rec).restart(policy).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected the pid") };
        // A deploy: the new build is renamed over the running one.
        let exe = std::env::current_exe().unwrap();
        let new = exe.with_extension("new");
        std::fs::copy(&exe, &new).unwrap();
        std::fs::rename(&new, &exe).unwrap();
        kill(pid, Signal::SIGKILL);
        loop {
            match events.next().await {
                Event::Online => break,
                Event::GaveUp(g) => panic!("gave up: {g:?}"),
                _ => {}
            }
        }
        assert_eq!(worker.ask(Sum(vec![2, 3])).await.unwrap(), 5);
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
        println!("DEPLOY restarted from the replaced executable");
    });
}

pub fn restarts_keep_working_after_a_deploy_replaced_the_executable() {
    let dir = std::env::temp_dir().join(format!("aww-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("workers");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let mut cmd = role("lifecycle::deploy_role");
    let mut deploy = std::process::Command::new(&copy);
    deploy.args(cmd.get_args()).envs(cmd_envs(&mut cmd));
    // Other tests fork meanwhile: a fork made while the copy was open for
    // writing holds it so until it execs, and running the copy then fails
    // with ETXTBSY ("text file busy"). That passes once they have exec'd.
    let mut out = deploy.output();
    for _ in 0..100 {
        match &out {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
                out = deploy.output();
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("DEPLOY restarted"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The environment a `role` command sets.
fn cmd_envs(cmd: &mut std::process::Command) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    cmd.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))).collect()
}

/// Run with standard input and output closed by
/// `a_parent_without_stdout_never_hands_out_the_socket_as_one`.
pub fn closed_stdio_role() {
    run(async {
        // Closed once the runtime is up, as a daemon's are: the next
        // descriptors made (the worker's socketpair) would take 0 and 1.
        // SAFETY: closing our own standard input and output.
        unsafe {
            libc::close(0);
            libc::close(1);
        }
        let (worker, mut events) = start();
        // Where this goes, the protocol must not.
        worker.post(Cmd::Print("a line from a worker with no stdout".into()));
        for i in 0..50 {
            worker.post(Cmd::Echo(i));
        }
        for i in 0..50 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        worker.terminate();
        assert_eq!(events.message().await.data, Reply::Closing);
        assert!(events.exit().await.success());
        eprintln!("STDIO 50 echoes, clean exit");
    });
}

pub fn a_parent_without_stdout_never_hands_out_the_socket_as_one() {
    let out = role("lifecycle::closed_stdio_role").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("STDIO 50 echoes"), "{stderr}");
}

pub fn a_slow_teardown_after_terminate_is_a_clean_exit() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy = fast(Restart::OnFailure);
        // Its actor takes 2 s to drop, after the worker said goodbye.
        let worker = builder(rec).entry("slow-drop").restart(policy).start().unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.terminate();
        assert_eq!(events.message().await.data, Reply::Closing);
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (Some(0), None), "{status}");
        assert_eq!(worker.send(Join).await.unwrap(), status);
        for ev in events.rest().await {
            assert!(!matches!(ev, Event::Restarting { .. }), "a clean exit was restarted");
        }
    });
}

pub fn the_cpu_limit_warns_with_sigxcpu_and_on_close_runs() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let limits = ResourceLimits::default().cpu_seconds(1);
        let worker = builder(rec).resource_limits(limits).start().unwrap();
        worker.post(Cmd::BurnCpu);
        assert_eq!(events.message().await.data, Reply::Closing);
        let status = events.exit().await;
        assert_eq!(status.code, Some(exit_code::CPU_LIMIT), "{status}");
        drop(worker);
    });
}

pub fn too_few_open_files_is_refused_at_start() {
    run(async {
        let (rec, _events) = events::<Test>();
        let few = ResourceLimits::default().open_files(8);
        let res = builder(rec).resource_limits(few).start();
        assert!(matches!(res, Err(SpawnError::Option(_))), "{:?}", res.err());
        // The least allowed is enough for a worker that works.
        let (rec, mut events) = events::<Test>();
        let least = ResourceLimits::default().open_files(ResourceLimits::MIN_OPEN_FILES);
        let worker = builder(rec).resource_limits(least).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![1, 2])).await.unwrap(), 3);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// Run by `starting_workers_before_run_if_worker_is_refused`: what a worker
/// process would do with code above `run_if_worker` that starts a worker.
pub fn nested_role() {
    // SAFETY (of the call's contract): this test runs alone, on one thread.
    std::env::set_var("ACTIX_WEBWORKER_ENTRY", "test");
    run(async {
        let (rec, _events) = events::<Test>();
        match builder(rec).start() {
            // Both fixes named: a main of one's own, or a test binary's.
            Err(e @ SpawnError::NotYetAWorker) => {
                let said = e.to_string();
                assert!(said.contains("run_if_worker") && said.contains("test_workers!"), "{said}");
                println!("NESTED refused");
            }
            other => panic!("started: {:?}", other.map(drop)),
        }
    });
}

pub fn starting_workers_before_run_if_worker_is_refused() {
    let out = role("lifecycle::nested_role").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("NESTED refused"), "{stdout}");
}

pub fn limits_set_past_their_caps_are_capped() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let mut limits = Limits::default();
        // Set on the field, past the 1 GiB cap the setter keeps.
        limits.max_message_size = usize::MAX;
        // A raw worker that claims a 4 GiB frame.
        let _worker = builder(rec).limits(limits).by_exec().entry("raw-huge").start().unwrap();
        loop {
            match events.next().await {
                Event::WireError(WireError::TooLarge { size, limit }) => {
                    assert_eq!((size, limit), (4 << 30, 1 << 30));
                    break;
                }
                Event::Online => {}
                other => panic!("expected TooLarge, got {other:?}"),
            }
        }
        events.exit().await;
    });
}

/// Connects to the socket at `AWW_CONNECT` and holds the connection.
pub fn connect_role() {
    let path = std::env::var("AWW_CONNECT").unwrap();
    let mut conn = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut buf = [0u8; 64];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

pub fn a_socket_from_another_process_is_refused_by_the_worker() {
    let dir = std::env::temp_dir().join(format!("aww-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Another process connects: the accepted socket's peer is it, not us.
    let mut stranger = role("lifecycle::connect_role").env("AWW_CONNECT", &path).spawn().unwrap();
    let (conn, _) = listener.accept().unwrap();
    let fd = conn.as_raw_fd();
    // This test binary, told that the stranger's socket is its channel.
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.env("ACTIX_WEBWORKER_ENTRY", "test")
        .env("ACTIX_WEBWORKER_FD", fd.to_string())
        .stderr(std::process::Stdio::piped());
    // SAFETY: fcntl between fork and exec, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut worker = cmd.spawn().unwrap();
    let gone = wait_gone(worker.id(), Duration::from_secs(30));
    if !gone {
        let _ = worker.kill();
    }
    let status = worker.wait().unwrap();
    let mut stderr = String::new();
    worker.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "the worker took the stranger's socket and waited on it");
    assert_eq!(status.code(), Some(exit_code::NOT_A_WORKER), "{stderr}");
    assert!(stderr.contains(&format!("made by process {}", stranger.id())), "{stderr}");
}

pub fn stopping_the_system_closes_every_worker_gracefully() {
    let (notes, note) = std::io::pipe().unwrap();
    let (timeout, kill_delay) = (Duration::from_millis(300), Duration::from_millis(200));
    let remote_note = std::env::temp_dir().join(format!("aww-note-{}", std::process::id()));
    let _ = std::fs::remove_file(&remote_note);
    let system = actix::System::new();
    let (idle, remote, stuck) = system.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..3 {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec).shutdown_timeout(timeout).kill_delay(kill_delay);
            let worker = worker.start().unwrap();
            let fd = std::os::fd::OwnedFd::from(note.try_clone().unwrap());
            worker.do_send(actix_webworker::Post::with_fds(Cmd::NoteOnClose, vec![fd]));
            assert_eq!(events.message().await.data, Reply::Count(0));
            worker.post(Cmd::Pid);
            let Reply::Pid(pid) = events.message().await.data else { panic!() };
            idle.push(pid);
            // Kept running: the System goes with them.
            std::mem::forget((worker, events));
        }
        // One over TLS (with the `tls` feature): its terminate goes
        // through the stream's TLS.
        #[cfg(feature = "tls")]
        let remote = Some(left_running_over_tls(timeout, kill_delay, &remote_note).await);
        #[cfg(not(feature = "tls"))]
        let remote: Option<u32> = None;
        let (rec, mut events) = crate::common::events::<Test>();
        let worker = builder(rec).shutdown_timeout(timeout).kill_delay(kill_delay);
        let worker = worker.start().unwrap();
        // Stopped: it reads nothing, and only SIGKILL ends it.
        let stuck = freeze(&worker, &mut events).await;
        std::mem::forget((worker, events));
        (idle, remote, stuck)
    });
    drop(note);
    // The System's runtime goes: every worker is closed and reaped here.
    let t0 = Instant::now();
    drop(system);
    let took = t0.elapsed();
    let mine = children();
    for pid in idle.iter().chain(&remote).chain([&stuck]) {
        assert!(!mine.iter().any(|(p, _)| p == pid), "{pid} not reaped: {mine:?}");
    }
    let noted = std::fs::read_to_string(&remote_note).unwrap_or_default();
    let _ = std::fs::remove_file(&remote_note);
    if let Some(remote) = remote {
        assert_eq!(noted, format!("closed {remote}\n"), "the worker over TLS");
    }
    // Each idle worker ran its on_close (and closed its copy of the pipe).
    let mut closed = String::new();
    std::fs::File::from(std::os::fd::OwnedFd::from(notes)).read_to_string(&mut closed).unwrap();
    for pid in &idle {
        assert!(closed.contains(&format!("closed {pid}")), "{pid}: {closed:?}");
    }
    // The stuck one: SIGTERM at the timeout, SIGKILL after the kill delay.
    assert!(took >= timeout + kill_delay, "took {took:?}");
    assert!(took < timeout + kill_delay + WAIT / 6, "took {took:?}");
    println!(
        "SYSTEM_STOP {} workers closed (on_close ran{}), 1 stuck killed; all reaped in {} ms",
        idle.len() + remote.iter().count(),
        if remote.is_some() { "; one over TLS" } else { "" },
        took.as_millis()
    );
}

/// A worker over TLS, its `on_close` set to write to `note`, left running
/// for the System's stop: its pid.
#[cfg(feature = "tls")]
async fn left_running_over_tls(
    timeout: Duration,
    kill_delay: Duration,
    note: &std::path::Path,
) -> u32 {
    let (rec, mut events) = events::<Test>();
    let tls = actix_webworker::Transport::tls("127.0.0.1:0".parse().unwrap());
    let worker = builder(rec).shutdown_timeout(timeout).kill_delay(kill_delay).transport(tls);
    let worker = worker.start().unwrap();
    worker.post(Cmd::NoteOnCloseIn(note.display().to_string()));
    assert_eq!(events.message().await.data, Reply::Count(0));
    worker.post(Cmd::Pid);
    let Reply::Pid(pid) = events.message().await.data else { panic!() };
    std::mem::forget((worker, events));
    pid
}

pub fn dropping_the_last_address_gives_the_shutdown_timeout_not_the_grace() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .shutdown_timeout(Duration::from_millis(200))
            .kill_delay(Duration::from_millis(100))
            .start()
            .unwrap();
        freeze(&worker, &mut events).await;
        let t0 = Instant::now();
        drop(worker);
        let status = events.exit().await;
        assert_eq!(status.signal, Some(libc::SIGKILL));
        // Not the 5 s grace period of a terminate.
        assert!(t0.elapsed() < Duration::from_secs(4), "took {:?}", t0.elapsed());
    });
}
