//! Starting a worker's process by fork, with `std::process::Command`: the
//! fallback for where the kernel refuses `vfork.rs`'s clone (a seccomp
//! filter that allows only a fork-like clone, a sandbox without
//! `CLONE_VM`), and what the tests force with
//! `ACTIX_WEBWORKER_TEST_SPAWN_WITH_FORK` (`spawn.rs`). It runs the same
//! `Plan`, with the same steps before the exec.
//!
//! Between fork and exec the child may only make async-signal-safe calls,
//! and none that allocates (another thread of the parent may have held the
//! allocator's lock at the fork): each is one system call, through nix
//! where nix wraps it without allocating, raw `libc` where it does not.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid};

use super::plan::Plan;
use crate::os;

/// Starts `plan`'s process; its pid.
pub(crate) fn start(plan: Plan) -> io::Result<u32> {
    let (limits, socket) = (plan.limits(), plan.socket);
    let exec = &plan.exec;
    let mut cmd = Command::new(OsStr::from_bytes(exec.path.to_bytes()));
    let mut argv = exec.argv.iter().map(|a| OsStr::from_bytes(a.to_bytes()));
    if let Some(arg0) = argv.next() {
        cmd.arg0(arg0);
    }
    cmd.args(argv);
    cmd.env_clear();
    for kv in &exec.envp {
        let kv = kv.to_bytes();
        // As the environment is read: a name is never empty.
        let at = kv.iter().skip(1).position(|&b| b == b'=').map_or(kv.len(), |i| i + 1);
        let (k, v) = kv.split_at(at);
        cmd.env(OsStr::from_bytes(k), OsStr::from_bytes(v.get(1..).unwrap_or_default()));
    }
    if let Some(dir) = &exec.cwd {
        cmd.current_dir(OsStr::from_bytes(dir.to_bytes()));
    }
    let [stdin, stdout, stderr] = plan.stdio;
    let stdio = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::inherit, Stdio::from);
    cmd.stdin(stdio(stdin)).stdout(stdio(stdout)).stderr(stdio(stderr));
    cmd.process_group(0);
    before_exec(&mut cmd, socket, limits);
    // Dropping std's Child neither kills nor reaps it: ChildHandle does both.
    Ok(cmd.spawn()?.id())
}

/// What the child does between fork and exec (see the module docs): resets
/// its signals' actions and mask, asks for SIGTERM when its parent dies (and exits if it has already), marks
/// every descriptor close-on-exec but `fd` (its end of the socketpair), and
/// sets its resource limits.
fn before_exec(cmd: &mut Command, fd: Option<RawFd>, limits: [(Resource, Option<(u64, u64)>); 3]) {
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions that do not allocate (sigaction,
    // pthread_sigmask, prctl, getppid, close_range, fcntl, setrlimit,
    // _exit; and the fallback's open, getdents64, getrlimit, close).
    unsafe {
        cmd.pre_exec(move || {
            // As the start by clone does (std resets SIGPIPE alone).
            os::reset_signals()?;
            set_pdeathsig(Signal::SIGTERM)?;
            // The parent may have died before the prctl took effect.
            if getppid() != parent {
                // Raw: nix has no `_exit`, and std's `exit` runs exit handlers.
                libc::_exit(1);
            }
            // No descriptor of the parent's leaks into the worker, even one
            // opened without close-on-exec: mark them all, then keep only
            // the socket.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            // Raw: nix does not wrap `close_range` (Linux 5.11 and later).
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                os::mark_all_cloexec(c"/proc/self/fd");
            }
            if let Some(fd) = fd {
                // The child's copy of the socket, open: the parent holds
                // its own until the spawn has returned.
                fcntl(BorrowedFd::borrow_raw(fd), FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            for (resource, limit) in limits {
                if let Some((soft, hard)) = limit {
                    setrlimit(resource, soft, hard)?;
                }
            }
            Ok(())
        });
    }
}
