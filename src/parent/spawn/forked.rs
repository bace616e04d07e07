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
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::unistd::getpid;

use super::plan::{last_steps, Limits, Plan};

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

/// What the child does between fork and exec: `plan::last_steps`, after
/// std has set up its standard descriptors, directory and process group.
fn before_exec(cmd: &mut Command, socket: Option<RawFd>, limits: Limits) {
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec, and
    // `last_steps` makes only async-signal-safe calls that do not allocate.
    unsafe {
        cmd.pre_exec(move || Ok(last_steps(parent, socket, limits)?));
    }
}
