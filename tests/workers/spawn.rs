//! How a worker's process is made: by `clone(CLONE_VM | CLONE_VFORK)`,
//! by fork where the kernel refuses that clone (forced here with
//! `ACTIX_WEBWORKER_TEST_SPAWN_WITH_FORK`), and forked from a template
//! (`StartMethod::ForkServer`). Each way must keep every guarantee of a
//! start; each is checked in a parent process of its own, whose signal
//! state the check changes.

use std::os::fd::AsRawFd;

use actix_webworker::{
    Event, Output, ResourceLimits, RestartPolicy, StartMethod, Worker, WorkerAddrExt,
};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        spawn::a_start_by_clone_keeps_every_guarantee,
        spawn::a_start_by_fork_keeps_every_guarantee,
        spawn::a_refused_clone_falls_back_on_fork,
        spawn::a_start_from_the_fork_server_keeps_every_guarantee,
        spawn::a_forked_workers_status_is_its_own_threads_while_its_main_thread_is_busy,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![spawn::guarantees_role, spawn::refused_clone_role]
}

/// What makes the parent start its workers by fork (`parent/spawn.rs`).
const BY_FORK: &str = "ACTIX_WEBWORKER_TEST_SPAWN_WITH_FORK";

pub fn a_start_by_clone_keeps_every_guarantee() {
    guarantees(How::Clone);
}

pub fn a_start_by_fork_keeps_every_guarantee() {
    guarantees(How::Fork);
}

/// Every guarantee, for a worker forked from its template: the same role,
/// which also checks that its workers were forked, not exec'd.
pub fn a_start_from_the_fork_server_keeps_every_guarantee() {
    guarantees(How::ForkServer);
}

/// A forked worker runs its actor on a thread its main thread starts
/// (`child/entry.rs`); `/proc/self/status` shows the main thread's mask,
/// which glibc's `pthread_create` sets to every signal around its clone
/// (`fffffffffffbfeff`: SIGKILL and SIGSTOP cannot be blocked). On a
/// loaded machine the actor's thread answered `Cmd::Status` before the
/// main thread was back from that clone, and `guarantees_role` saw every
/// signal blocked in a worker whose threads block none. Held here, in the
/// same state (`Cmd::HoldMain`), for as long as the answer takes: the
/// status a worker reports is that of the thread that runs its code.
pub fn a_forked_workers_status_is_its_own_threads_while_its_main_thread_is_busy() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).start_method(StartMethod::ForkServer).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        if !forked(pid) {
            return skip("the fork server does not serve here");
        }
        worker.post(Cmd::HoldMain);
        assert_eq!(events.message().await.data, Reply::Count(1), "a main thread apart");
        worker.post(Cmd::Status);
        let Reply::Lines(status) = events.message().await.data else { panic!() };
        worker.post(Cmd::ReleaseMain);
        assert_eq!(events.message().await.data, Reply::Count(0));
        assert!(!signal_bit(&status, "SigBlk:", libc::SIGUSR1), "blocked: {status:?}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Clone,
    Fork,
    ForkServer,
}

/// Runs `guarantees_role` in a parent of its own, starting `how`.
fn guarantees(how: How) {
    let mut cmd = role("spawn::guarantees_role");
    cmd.env_remove(BY_FORK).env_remove(FORK_SERVER);
    match how {
        How::Clone => {}
        How::Fork => {
            cmd.env(BY_FORK, "1");
        }
        How::ForkServer => {
            cmd.env(FORK_SERVER, "1");
        }
    }
    let out = cmd.output().expect("test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("1 passed"), "{how:?}\n{stdout}\n{stderr}");
}

/// Bit `signal` of a `Sig...:` line of `/proc/PID/status` in `lines`.
fn signal_bit(lines: &[String], field: &str, signal: i32) -> bool {
    let line = lines.iter().find_map(|l| l.strip_prefix(field)).expect(field);
    let mask = u64::from_str_radix(line.trim(), 16).expect("a hexadecimal mask");
    mask & (1 << (signal - 1)) != 0
}

extern "C" fn on_usr2(_: libc::c_int) {}

/// A parent with a signal blocked, one handled and one ignored, and a
/// descriptor opened without close-on-exec, starts a worker with resource
/// limits: the worker has none of the parent's mask or handlers (the
/// ignored one stays ignored, as across any exec), its limits, no
/// descriptor of the parent's, its standard descriptors as asked, its own
/// process group, its directory and the name the parent was started with. A program that passes the checks before the
/// start but whose exec fails is told as a start that failed, with the
/// exec's error; a script without `#!` is run by `/bin/sh`.
pub fn guarantees_role() {
    // SAFETY: this test runs alone in its process, before any thread of
    // ours: the spawner thread, started later, inherits this mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGWINCH, libc::SIG_IGN);
    }
    let (r, w) = std::io::pipe().unwrap();
    // SAFETY: clearing close-on-exec on a pipe we own.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0) };
    let leaked = std::fs::read_link(format!("/proc/self/fd/{}", r.as_raw_fd())).unwrap();
    run(async move {
        let (rec, mut events) = events::<Test>();
        let limits =
            ResourceLimits::default().cpu_seconds(1000).open_files(1000).address_space(64 << 30);
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let worker = builder(rec)
            .resource_limits(limits)
            .current_dir(&dir)
            .stderr(Output::Null)
            .start()
            .unwrap();
        worker.post(Cmd::Status);
        let Reply::Lines(status) = events.message().await.data else { panic!() };
        assert!(!signal_bit(&status, "SigBlk:", libc::SIGUSR1), "blocked: {status:?}");
        assert!(!signal_bit(&status, "SigCgt:", libc::SIGUSR2), "handled: {status:?}");
        assert!(signal_bit(&status, "SigIgn:", libc::SIGWINCH), "ignored: {status:?}");
        let limit = |name: &str| {
            let line = status.iter().find(|l| l.starts_with(name)).expect(name);
            line[name.len()..].split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(limit("Max cpu time"), "1000 1001");
        assert_eq!(limit("Max open files"), "1000 1000");
        assert_eq!(limit("Max address space"), (64u64 << 30).to_string() + " " + &(64u64 << 30).to_string());
        worker.post(Cmd::ListFds);
        let Reply::Lines(fds) = events.message().await.data else { panic!() };
        let leaked = leaked.display().to_string();
        assert!(!fds.contains(&leaked), "{leaked} leaked into the worker: {fds:?}");
        // No template's exchange (the only packet sockets here).
        let packets = seqpacket_inodes();
        let held: Vec<&String> = fds.iter().filter(|fd| packets.contains(fd)).collect();
        assert!(held.is_empty(), "a packet socket in the worker: {held:?} of {fds:?}");
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        let from_template = start_method() == StartMethod::ForkServer;
        assert_eq!(forked(pid), from_template, "forked from a template: {:?}", environ(pid));
        assert_eq!(parent_of(pid), Some(std::process::id()), "the parent's own child");
        // SAFETY: getpgid on a pid, no memory.
        assert_eq!(unsafe { libc::getpgid(pid as i32) }, pid as i32, "its own group");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let arg0 = cmdline.split(|&b| b == 0).next().unwrap();
        let ours = std::env::args_os().next().unwrap();
        assert_eq!(arg0, ours.as_encoded_bytes(), "the name it was started with");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        assert_eq!(cwd, dir, "its directory");
        let fd = |pid: &str, n: u32| std::fs::read_link(format!("/proc/{pid}/fd/{n}")).unwrap();
        let pid = pid.to_string();
        assert_eq!(fd(&pid, 0), std::path::Path::new("/dev/null"), "stdin");
        assert_eq!(fd(&pid, 1), fd("self", 1), "stdout: the parent's");
        assert_eq!(fd(&pid, 2), std::path::Path::new("/dev/null"), "stderr: Output::Null");
        worker.terminate();
        assert!(events.exit().await.success());

        // Runnable to `access`, but its interpreter is missing: execve
        // fails with ENOENT, after the checks.
        let script = std::env::temp_dir().join(format!("aww-no-interpreter-{}", std::process::id()));
        std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (rec, mut told) = crate::common::events::<Test>();
        let missing = Worker::<Test>::builder()
            .program(&script)
            .start_method(start_method())
            .stderr(Output::Null)
            .restart(RestartPolicy::never())
            .events(rec)
            .start()
            .unwrap();
        let gave_up = loop {
            if let Event::GaveUp(g) = told.next().await {
                break g;
            }
        };
        assert!(gave_up.reason.contains("could not start"), "{}", gave_up.reason);
        assert!(gave_up.reason.contains("os error 2"), "the exec's error: {}", gave_up.reason);

        // No `#!`: run by /bin/sh, as `execvp` runs it.
        std::fs::write(&script, "exit 3\n").unwrap();
        let (rec, mut told) = crate::common::events::<Test>();
        let worker = Worker::<Test>::builder()
            .program(&script)
            .start_method(start_method())
            .restart(RestartPolicy::never())
            .events(rec)
            .start()
            .unwrap();
        let status = told.exit().await;
        let _ = std::fs::remove_file(&script);
        assert_eq!(status.code, Some(3), "run by the shell: {status}");
        drop((missing, worker, r, w));
    });
}

pub fn a_refused_clone_falls_back_on_fork() {
    isolated("spawn::refused_clone_role");
}

/// Makes the kernel refuse every `clone` with `CLONE_VFORK` in this
/// process (and what it starts) with `EPERM`, as a seccomp filter of a
/// sandbox may: threads (`clone3`) and forks (`clone` without it) still
/// work.
fn refuse_vfork_clones() {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let filter = [
        // The system call's number (`seccomp_data.nr`).
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::SYS_clone as u32, 0, 3),
        // The low half of its flags (`seccomp_data.args[0]`, x86-64).
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 16, 0, 0),
        op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, libc::CLONE_VFORK as u32, 0, 1),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: prctl with a filter that lives through the call (the kernel
    // copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        let mode = libc::SECCOMP_MODE_FILTER as libc::c_ulong;
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, mode, &program), 0, "seccomp");
    }
}

extern "C" fn exit_at_once(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: ends the child at once.
    unsafe { libc::_exit(0) }
}

/// With clone(CLONE_VM | CLONE_VFORK) refused (`EPERM`), workers are
/// started by fork and work: on the first start and the next.
pub fn refused_clone_role() {
    // Before any thread of ours: the spawner, started later, inherits it.
    refuse_vfork_clones();
    let mut stack = vec![0u8; 64 << 10];
    // SAFETY: a child that would run on `stack` and exit at once; the
    // filter refuses it before it exists.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()).cast();
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        libc::clone(exit_at_once, top, flags, std::ptr::null_mut())
    };
    let refused = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((pid, refused), (-1, Some(libc::EPERM)), "the filter refuses the clone");
    run(async {
        for _ in 0..2 {
            let (worker, mut events) = start();
            assert_eq!(worker.ask(Sum(vec![20, 22])).await.unwrap(), 42);
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}
