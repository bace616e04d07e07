//! Workers forked from a template (`StartMethod::ForkServer`): the
//! parent's own children, whatever their template does. The guarantees
//! of their start are `spawn.rs`'s (`a_start_from_the_fork_server_...`);
//! the whole suite runs once with every standard test worker forked
//! (`common::FORK_SERVER`, in `.ci/run`).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use actix_webworker::{Event, ResourceLimits, StartMethod, WorkerAddrExt};
use libtest_mimic::Trial;
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        fork_server::a_fork_servers_workers_are_the_parents_own_children,
        fork_server::a_step_that_fails_in_a_forked_worker_is_the_starts_error,
        fork_server::a_template_that_misbehaves_is_not_used_and_leaves_nothing,
        fork_server::a_forked_worker_dies_with_its_parent,
        fork_server::templates_are_bounded_and_a_long_entry_is_exec_d,
        fork_server::what_a_forked_worker_does_to_its_own_thread_stays_its_own,
        fork_server::a_forked_worker_writes_where_the_parents_stdout_is_now,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![
        fork_server::misbehaving_templates_role,
        fork_server::forked_parent_role,
        fork_server::bounded_templates_role,
        fork_server::failed_step_role,
        fork_server::stdout_moved_role,
    ]
}

/// Workers forked from a template are the parent's own children: it reads
/// their exit (a signal, a code) as any worker's. One template serves a
/// command's workers. A template that dies is reaped at the next start,
/// which makes a new one.
pub fn a_fork_servers_workers_are_the_parents_own_children() {
    run(async {
        // A command of this test's own, so that its template is too.
        let tag = format!("AWW_TEMPLATE_TEST={}", std::process::id());
        let start = || async {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec)
                .env("AWW_TEMPLATE_TEST", std::process::id().to_string())
                .start_method(StartMethod::ForkServer)
                .start()
                .unwrap();
            worker.post(Cmd::Pid);
            let Reply::Pid(pid) = events.message().await.data else { panic!("a pid") };
            (worker, events, pid)
        };
        let me = std::process::id();
        let (_a, mut a_events, a) = start().await;
        let (b_worker, mut b_events, b) = start().await;
        for pid in [a, b] {
            assert!(forked(pid), "worker {pid} forked: {:?}", environ(pid));
            assert_eq!(parent_of(pid), Some(me), "worker {pid} is our child");
        }
        let template = match templates(&tag, &[a, b])[..] {
            [one] => one,
            ref other => panic!("one template for both: {other:?}"),
        };
        assert!(kill(a, Signal::SIGKILL));
        assert_eq!(a_events.exit().await.signal, Some(libc::SIGKILL));
        b_worker.post(Cmd::Exit(7));
        assert_eq!(b_events.exit().await.code, Some(7));

        // The template killed: the next start finds it gone, reaps it and
        // forks from a new one.
        assert!(kill(template, Signal::SIGKILL));
        assert!(wait_gone(template, WAIT), "SIGKILL takes it");
        let (_c, _, c) = start().await;
        assert!(forked(c), "forked from a new template: {:?}", environ(c));
        assert!(!children().iter().any(|(pid, _)| *pid == template), "the old template reaped");
        let new = templates(&tag, &[c]);
        assert!(new.len() == 1 && new[0] != template, "a new template: {new:?}");
    });
}

/// A resource limit no process may have: the forked worker's step fails,
/// and the start fails with its error, told once, never retried, as an
/// exec'd start's would. The template stays and forks the next worker.
pub fn a_step_that_fails_in_a_forked_worker_is_the_starts_error() {
    // In a process of its own: no other test's worker is a zombie for a
    // moment there.
    isolated("fork_server::failed_step_role");
}

pub fn failed_step_role() {
    run(async {
        let tag = format!("AWW_TEMPLATE_TEST=step-{}", std::process::id());
        let forked_builder = |rec| {
            builder(rec)
                .env("AWW_TEMPLATE_TEST", format!("step-{}", std::process::id()))
                .start_method(StartMethod::ForkServer)
        };
        let (rec, mut first_events) = events::<Test>();
        let worker = forked_builder(rec).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(first) = first_events.message().await.data else { panic!("a pid") };
        assert!(forked(first));
        let (rec, mut told) = events::<Test>();
        let impossible = ResourceLimits::default().open_files(1 << 40);
        let _failed = forked_builder(rec).resource_limits(impossible).start().unwrap();
        let gave_up = loop {
            match told.next().await {
                Event::GaveUp(g) => break g,
                Event::Restarting { .. } => panic!("a start that cannot work was retried"),
                Event::Online => panic!("a worker without its limits came online"),
                _ => {}
            }
        };
        assert!(gave_up.reason.contains("could not start"), "{}", gave_up.reason);
        assert!(gave_up.reason.contains("os error 1"), "setrlimit's EPERM: {}", gave_up.reason);
        let (rec, mut next_events) = events::<Test>();
        let next = forked_builder(rec).start().unwrap();
        next.post(Cmd::Pid);
        let Reply::Pid(next_pid) = next_events.message().await.data else { panic!("a pid") };
        assert!(forked(next_pid), "the template still serves");
        assert_eq!(templates(&tag, &[first, next_pid]).len(), 1, "the same template");
        // The failed one was reaped: no zombie of ours.
        let zombies: Vec<_> = children().into_iter().filter(|(_, s)| *s == 'Z').collect();
        assert!(zombies.is_empty(), "zombies: {zombies:?}");
        drop(worker);
    });
}

/// What a template of the test's making does wrong (`AWW_FAKE_TEMPLATE`).
pub(crate) const FAKE: &str = "AWW_FAKE_TEMPLATE";

/// What a fork says first (the exchange's `copy:` packet), said by a fake
/// template of a process that is no fork of its own, without a pidfd.
fn copy_packet(pid: u32) -> Vec<u8> {
    [&b"AWWFORK2copy:"[..], &(pid as i32).to_le_bytes()].concat()
}

/// A template that misbehaves, in a parent of its own: each time the
/// worker is exec'd instead, and the template is killed and reaped.
pub fn a_template_that_misbehaves_is_not_used_and_leaves_nothing() {
    isolated("fork_server::misbehaving_templates_role");
}

/// Run as a template when the test starts one with [`FAKE`] set: says
/// it is ready in another version of the exchange (`version`), says
/// nothing at all (`silent`), answers a request with nonsense
/// (`garbage`), with the pid of a process of its own, which is not the
/// parent's child (`lying`), or with the pid of another child of the
/// parent, without the pidfd of a fork that made it (`sibling`).
pub fn run_if_fake_template() {
    let Ok(how) = std::env::var(FAKE) else { return };
    let Some(fd) = std::env::var("ACTIX_WEBWORKER_TEMPLATE").ok() else { return };
    // SAFETY: the exchange the parent gave this template.
    let sock = unsafe { OwnedFd::from_raw_fd(fd.parse().unwrap()) };
    let send = |bytes: &[u8]| {
        sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(bytes)], &[], MsgFlags::empty(), None)
    };
    let receive = || {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([i32; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty());
        let msg = msg.unwrap();
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: received just now, ours alone.
                fds.into_iter().for_each(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        msg.bytes
    };
    match how.as_str() {
        "version" => drop(send(b"AWWFORK9ready")),
        "silent" => std::thread::sleep(Duration::from_secs(3600)),
        "garbage" => {
            send(b"AWWFORK2ready").unwrap();
            receive();
            send(b"nonsense").unwrap();
        }
        "lying" => {
            send(b"AWWFORK2ready").unwrap();
            // A process of this template's, in a group of its own, that
            // dies with it: not the parent's child.
            let mut sleeper = std::process::Command::new("sleep");
            sleeper.arg("3600").process_group(0);
            // SAFETY: one system call between fork and exec.
            unsafe {
                sleeper.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                })
            };
            let mut sleeper = sleeper.spawn().unwrap();
            while receive() > 0 {
                send(&copy_packet(sleeper.id())).unwrap();
                let answer = [&b"AWWFORK2"[..], &(sleeper.id() as i32).to_le_bytes(), &[0; 4]];
                send(&answer.concat()).unwrap();
            }
            let _ = sleeper.kill();
            let _ = sleeper.wait();
        }
        "sibling" => {
            send(b"AWWFORK2ready").unwrap();
            // Another child of the parent (a worker of its own): a child
            // of the parent, but not what this template made.
            let (me, parent) = (std::process::id(), std::os::unix::process::parent_id());
            let sibling = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|&pid| pid != me && parent_of(pid) == Some(parent))
                .expect("a sibling");
            while receive() > 0 {
                send(&copy_packet(sibling)).unwrap();
                let answer = [&b"AWWFORK2"[..], &(sibling as i32).to_le_bytes(), &[0; 4]];
                send(&answer.concat()).unwrap();
            }
        }
        // Answers every request with `Failed` naming the process in
        // `AWW_FAKE_SIBLING` (a child of the parent's own, not a fork of
        // this template's), said first to be its fork, without a pidfd.
        "failed-sibling" => {
            send(b"AWWFORK2ready").unwrap();
            let sibling: u32 = std::env::var("AWW_FAKE_SIBLING").unwrap().parse().unwrap();
            while receive() > 0 {
                send(&copy_packet(sibling)).unwrap();
                let answer = [&b"AWWFORK2"[..], &(sibling as i32).to_le_bytes(), &1i32.to_le_bytes()];
                send(&answer.concat()).unwrap();
            }
        }
        // As `failed-sibling`, its `copy:` packet sent with five
        // descriptors: more than the parent's room for four, so the
        // parent's read of it is cut (MSG_CTRUNC), as when the parent is
        // out of descriptors.
        "cut-failed-sibling" => {
            send(b"AWWFORK2ready").unwrap();
            let sibling: u32 = std::env::var("AWW_FAKE_SIBLING").unwrap().parse().unwrap();
            let fds = [0, 0, 0, 0, 0];
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            while receive() > 0 {
                let copy = copy_packet(sibling);
                sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&copy)], &rights, MsgFlags::empty(), None)
                    .unwrap();
                let answer = [&b"AWWFORK2"[..], &(sibling as i32).to_le_bytes(), &1i32.to_le_bytes()];
                send(&answer.concat()).unwrap();
            }
        }
        // Answers `Started` naming the process in `AWW_FAKE_SIBLING`, no
        // `copy:` packet, with a pidfd of it it opened itself
        // (pidfd_open needs no privilege).
        "pidfd-sibling" => {
            send(b"AWWFORK2ready").unwrap();
            let sibling: u32 = std::env::var("AWW_FAKE_SIBLING").unwrap().parse().unwrap();
            while receive() > 0 {
                // SAFETY: pidfd_open of a pid, no flags.
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, sibling as i32, 0) } as i32;
                assert!(pidfd >= 0);
                let answer = [&b"AWWFORK2"[..], &(sibling as i32).to_le_bytes(), &[0; 4]].concat();
                let rights = [nix::sys::socket::ControlMessage::ScmRights(&[pidfd][..])];
                sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&answer)], &rights, MsgFlags::empty(), None)
                    .unwrap();
            }
        }
        // Answers every request with five descriptors, more than the
        // parent has room for: its read is cut (MSG_CTRUNC) though it has
        // descriptors to spare.
        "cut-answer" => {
            send(b"AWWFORK2ready").unwrap();
            let fds = [0, 0, 0, 0, 0];
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            while receive() > 0 {
                let answer = [&b"AWWFORK2"[..], &0i32.to_le_bytes(), &1i32.to_le_bytes()].concat();
                sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&answer)], &rights, MsgFlags::empty(), None)
                    .unwrap();
            }
        }
        // Reads the request, then dies without answering (as one the OOM
        // killer takes; see `fork_state.rs`).
        "dies" => {
            send(b"AWWFORK2ready").unwrap();
            receive();
            std::process::exit(0);
        }
        other => panic!("no such fake template: {other}"),
    }
    std::thread::sleep(Duration::from_secs(3600));
}

pub fn misbehaving_templates_role() {
    run(async {
        let me = std::process::id();
        let start = |how: &'static str| async move {
            let (rec, mut events) = events::<Test>();
            let worker =
                builder(rec).env(FAKE, how).start_method(StartMethod::ForkServer).start().unwrap();
            worker.post(Cmd::Pid);
            let pid = loop {
                match events.next().await {
                    Event::Online => continue,
                    Event::Message(m) => match m.data {
                        Reply::Pid(pid) => break Ok(pid),
                        other => panic!("{how}: {other:?}"),
                    },
                    Event::GaveUp(g) => break Err(g.reason),
                    _ => continue,
                }
            };
            (worker, events, pid)
        };
        // A worker of the parent's before the templates: the sibling the
        // last one names.
        let (rec, mut anchor_events) = events::<Test>();
        let anchor = builder(rec).by_exec().start().unwrap();
        anchor.post(Cmd::Pid);
        let Reply::Pid(anchor_pid) = anchor_events.message().await.data else { panic!() };
        for how in ["version", "silent", "garbage", "lying", "sibling"] {
            // Refused before a request reached it: this worker is exec'd.
            // After (nonsense, or a process not made for it, for an
            // answer): this start fails, since a fork may hold its
            // descriptors.
            let (mut worker, mut events, mut pid) = start(how).await;
            if matches!(how, "garbage" | "lying" | "sibling") {
                let why = pid.expect_err("the start fails");
                let said = match how {
                    "garbage" => "not an answer",
                    "lying" => "not our child",
                    _ => "without the pidfd",
                };
                assert!(why.contains(said), "{how}: {why}");
                // Not asked again: the next worker of the command exec'd.
                (worker, events, pid) = start(how).await;
            }
            let pid = pid.expect("exec'd");
            assert!(!forked(pid), "{how}: exec'd: {:?}", environ(pid));
            assert_eq!(parent_of(pid), Some(me), "{how}: our child");
            // The template killed and reaped: the worker and the first are
            // our only children.
            let mut left: Vec<u32> = children().into_iter().map(|(pid, _)| pid).collect();
            left.sort();
            let mut expected = vec![anchor_pid, pid];
            expected.sort();
            assert_eq!(left, expected, "{how}: only the workers are left");
            worker.post(Cmd::Exit(0));
            assert!(events.exit().await.success());
        }
        // The sibling named was never taken for another's worker.
        anchor.post(Cmd::Echo(0));
        assert_eq!(anchor_events.message().await.data, Reply::Echo(0));
    });
}

/// A forked worker's parent killed (SIGKILL, nothing runs): the worker
/// goes too (its parent-death signal, set in the fork, follows the
/// parent's spawner thread, as an exec'd worker's does).
pub fn a_forked_worker_dies_with_its_parent() {
    let (mut parent, pid) = role_with_worker("fork_server::forked_parent_role");
    assert!(forked(pid), "forked: {:?}", environ(pid));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(wait_gone(pid, WAIT), "worker {pid} outlived its parent");
}

/// The parent side of `a_forked_worker_dies_with_its_parent`.
pub fn forked_parent_role() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).start_method(StartMethod::ForkServer).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("a pid") };
        println!("WORKER_PID={pid}");
        std::future::pending::<()>().await;
        drop(worker);
    });
}

/// A parent holds at most 8 templates (one per command): a ninth command's
/// worker is exec'd, as is a worker whose entry name is too long for the
/// exchange's packet, and the template stays for the next.
pub fn templates_are_bounded_and_a_long_entry_is_exec_d() {
    isolated("fork_server::bounded_templates_role");
}

pub fn bounded_templates_role() {
    run(async {
        let start = |command: usize, entry: String| async move {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec)
                .env("AWW_COMMAND", command.to_string())
                .entry(entry)
                .start_method(StartMethod::ForkServer)
                .start()
                .unwrap();
            worker.post(Cmd::Pid);
            let pid = match events.next().await {
                Event::Online => match events.message().await.data {
                    Reply::Pid(pid) => Some(pid),
                    other => panic!("{other:?}"),
                },
                // A worker that did not know its entry says so and exits.
                _ => None,
            };
            (worker, events, pid)
        };
        let mut workers = Vec::new();
        for command in 0..9 {
            let (worker, events, pid) = start(command, "test".into()).await;
            let pid = pid.expect("the standard worker answers");
            assert_eq!(forked(pid), command < 8, "command {command}: {:?}", environ(pid));
            workers.push((worker, events));
        }
        let known = children().len();
        assert_eq!(known, 9, "nine workers, the templates not counted");
        // An entry name longer than a packet: exec'd (and unknown there).
        let (_long, mut long_events, _) = start(0, "x".repeat(5000)).await;
        let status = long_events.exit().await;
        assert_eq!(status.code, Some(64), "exec'd and refused: {status}");
        let (_next, _, pid) = start(0, "test".into()).await;
        assert!(forked(pid.expect("answers")), "the template of command 0 still serves");
        drop(workers);
    });
}

/// The CPUs process (or thread) `pid` may run on, from its status.
fn allowed_cpus(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
    line.unwrap_or_default().trim().to_owned()
}

/// A forked worker pins the thread it handles messages on
/// (`pthread_setaffinity_np(pthread_self())`): that thread, and not its
/// template, is pinned. Run on the thread `clone3` left, whose glibc
/// thread id is still the template's, the call reached the template, and
/// every worker forked after inherited the pin.
pub fn what_a_forked_worker_does_to_its_own_thread_stays_its_own() {
    run(async {
        let tag = format!("AWW_TEMPLATE_TEST=pin-{}", std::process::id());
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .env("AWW_TEMPLATE_TEST", format!("pin-{}", std::process::id()))
            .start_method(StartMethod::ForkServer)
            .start()
            .unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("a pid") };
        assert!(forked(pid));
        let template = templates(&tag, &[pid])[0];
        let before = allowed_cpus(template);
        worker.post(Cmd::PinSelf);
        let Reply::Pid(tid) = events.message().await.data else { panic!("a thread id") };
        let pinned = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let pinned = pinned.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
        assert!(!pinned.unwrap().contains([',', '-']), "the worker's thread pinned: {pinned:?}");
        assert_eq!(allowed_cpus(template), before, "the template untouched");
        drop(worker);
    });
}

/// A forked worker's stdout (`Output::Inherit`) is the parent's as it is
/// at the worker's start, as an exec'd worker's is: not the one the
/// template was started with.
pub fn a_forked_worker_writes_where_the_parents_stdout_is_now() {
    isolated("fork_server::stdout_moved_role");
}

pub fn stdout_moved_role() {
    use std::os::fd::AsFd;
    run(async {
        let started = || {
            let (rec, events) = events::<Test>();
            (builder(rec).start_method(StartMethod::ForkServer).start().unwrap(), events)
        };
        // The template starts with this process's stdout (the test's pipe).
        let (first, mut first_events) = started();
        first.post(Cmd::Pid);
        let Reply::Pid(first_pid) = first_events.message().await.data else { panic!() };
        assert!(forked(first_pid));
        // Then this process's stdout moves to a file.
        let path = std::env::temp_dir().join(format!("aww-stdout-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let saved = std::io::stdout().as_fd().try_clone_to_owned().unwrap();
        nix::unistd::dup2_stdout(&file).unwrap();
        let (second, mut events) = started();
        second.post(Cmd::Print("printed by the second worker".into()));
        second.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        nix::unistd::dup2_stdout(&saved).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(forked(pid), "forked: {:?}", environ(pid));
        assert!(written.contains("printed by the second worker"), "in the file: {written:?}");
    });
}
