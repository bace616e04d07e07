//! What a worker process is started with, settled whole in the parent
//! before anything is started: the file to execute (the `PATH` searched
//! here), its arguments, its whole environment, its directory, its
//! standard descriptors, its socket and its limits.
//!
//! Both ways of starting it (`vfork.rs`, and `forked.rs` where the kernel
//! refuses that) run the same plan, and the child of `vfork.rs` may do no
//! more than system calls: no allocation, no lookup of its own. So
//! everything that takes memory or a decision is done here, in the parent,
//! as `std::process::Command` would have done it in the child: the
//! environment is the parent's (unless cleared) with the builder's changes
//! and the handoff variables applied, and a program without a `/` is
//! looked for in that environment's `PATH`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};

use crate::handoff::template::LIMITED;
use crate::handoff::ENV_ENTRY;
use crate::os;
use crate::parent::options::{CommandSpec, ResourceLimits};

/// A worker's start, ready to run.
pub(crate) struct Plan {
    pub exec: Exec,
    /// What becomes its stdin, stdout and stderr; `None`: the parent's
    /// own. Each is above the standard descriptors and close-on-exec here.
    pub stdio: [Option<OwnedFd>; 3],
    /// Its end of the socketpair, made open in the child alone.
    pub socket: Option<RawFd>,
    pub rlimits: ResourceLimits,
}

impl Plan {
    /// Its resource limits ([`limits`]).
    pub(crate) fn limits(&self) -> Limits {
        limits(self.rlimits)
    }
}

/// The resource limits to set, soft and hard, each where asked: for the
/// resources of [`LIMITED`] in turn (the order a fork server's request
/// carries them in).
pub(crate) fn limits(limits: ResourceLimits) -> Limits {
    let set = [
        limits.address_space.map(|l| (l, l)),
        // Soft below hard: SIGXCPU first, SIGKILL a second later.
        limits.cpu_seconds.map(|l| (l, l.saturating_add(1))),
        limits.open_files.map(|l| (l, l)),
    ];
    std::array::from_fn(|i| (LIMITED[i], set[i]))
}

/// The resource limits of a start, as [`Plan::limits`] gives them.
pub(crate) type Limits = [(Resource, Option<(u64, u64)>); 3];

/// The steps both starts take last in the child, before its exec: its
/// signals' actions and mask reset; SIGTERM asked for when its parent
/// (`parent`, taken before the child was made) dies, and an exit if it
/// already has; every descriptor marked close-on-exec but `socket`; the
/// resource limits set. Each is one system call (or the fallback's few),
/// and nothing is allocated.
///
/// # Safety
///
/// Only in the child of a start, about to exec, where it may make only
/// async-signal-safe calls (see `vfork.rs` and `forked.rs`).
pub(crate) unsafe fn last_steps(
    parent: Pid,
    socket: Option<RawFd>,
    limits: Limits,
) -> nix::Result<()> {
    // SAFETY: this is the child, about to exec (the caller's promise).
    unsafe { os::reset_signals() }?;
    set_pdeathsig(Signal::SIGTERM)?;
    // The parent may have died before the prctl took effect.
    if getppid() != parent {
        // Raw: nix has no `_exit`, and std's `exit` runs the parent's exit
        // handlers. SAFETY: ends the child at once.
        unsafe { libc::_exit(1) };
    }
    // No descriptor of the parent's leaks into the worker, even one opened
    // without close-on-exec: mark them all, then keep only the socket.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // Raw: nix does not wrap `close_range` (Linux 5.11 and later).
    // SAFETY: flags descriptors of this child's own table (a fork's copy,
    // or the clone's: no CLONE_FILES); touches no memory.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) } != 0 {
        // SAFETY: this process is about to exec.
        unsafe { os::mark_all_cloexec(c"/proc/self/fd") };
    }
    if let Some(fd) = socket {
        // SAFETY: the child's copy of the socket, open: the parent holds
        // its own until the start has returned.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    }
    for (resource, limit) in limits {
        if let Some((soft, hard)) = limit {
            setrlimit(resource, soft, hard)?;
        }
    }
    Ok(())
}

/// What the worker's process executes, and how.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Exec {
    /// The file to execute: a path with a `/` in it (relative ones mean
    /// from `cwd`).
    pub path: CString,
    /// Its arguments, its name first.
    pub argv: Vec<CString>,
    /// Its whole environment, `K=V` each.
    pub envp: Vec<CString>,
    /// The directory it starts in; `None`: the parent's.
    pub cwd: Option<CString>,
}

/// The file, arguments, environment and directory of the command that
/// starts the worker (through its launcher, if any); the variables in
/// `told` last. `arg0`: the name the program is started with (`None`: its
/// path).
pub(crate) fn exec(
    program: &Path,
    arg0: Option<&OsStr>,
    spec: &CommandSpec,
    told: &[(&str, OsString)],
) -> io::Result<Exec> {
    let mut argv: Vec<OsString> = Vec::new();
    let file = match spec.launcher.split_first() {
        None => {
            argv.push(arg0.unwrap_or(program.as_os_str()).to_owned());
            program.as_os_str()
        }
        // `launcher... env K=V... program args...`: the variables reach a
        // remote command whatever the launcher passes on of its own
        // environment. None of them is secret: everyone on the host can
        // read these arguments.
        Some((launcher, its_args)) => {
            argv.push(launcher.clone());
            argv.extend(its_args.iter().cloned());
            argv.push("env".into());
            for (k, v) in told {
                let mut kv = OsString::from(k);
                kv.push("=");
                kv.push(v);
                argv.push(kv);
            }
            argv.push(program.as_os_str().to_owned());
            launcher.as_os_str()
        }
    };
    argv.extend(spec.args.iter().cloned());
    let env = environment(spec, told);
    let path = find(file, env.get(OsStr::new("PATH")).map(OsString::as_os_str), spec)?;
    let envp = env.into_iter().map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        c_string(kv)
    });
    Ok(Exec {
        path: c_string(path.into_os_string().into_vec())?,
        argv: argv.into_iter().map(|a| c_string(a.into_vec())).collect::<io::Result<_>>()?,
        envp: envp.collect::<io::Result<_>>()?,
        cwd: spec.cwd.as_ref().map(|d| c_string(d.as_os_str().as_bytes().to_vec())).transpose()?,
    })
}

/// The worker's whole environment: the parent's (unless the builder
/// cleared it), with the builder's changes in order, the entry variable
/// removed when the builder names none, and `told` last.
fn environment(spec: &CommandSpec, told: &[(&str, OsString)]) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> =
        if spec.env_clear { BTreeMap::new() } else { std::env::vars_os().collect() };
    for (k, v) in &spec.env {
        match v {
            Some(v) => env.insert(k.clone(), v.clone()),
            None => env.remove(k),
        };
    }
    if spec.entry.is_none() {
        env.remove(OsStr::new(ENV_ENTRY));
    }
    for (k, v) in told {
        env.insert(k.into(), v.clone());
    }
    env
}

/// The path to execute for `file`: itself when it has a `/`, or the first
/// runnable one in `path` (the worker's `PATH`), as `execvp` would find
/// it in the child (a relative directory of `PATH` then means from the
/// worker's directory).
pub(super) fn find(file: &OsStr, path: Option<&OsStr>, spec: &CommandSpec) -> io::Result<PathBuf> {
    if file.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(file));
    }
    let seen_from_here = |p: &Path| match &spec.cwd {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_owned(),
    };
    let mut denied = false;
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        let candidate = dir.join(file);
        let here = seen_from_here(&candidate);
        if runnable(&here) {
            // execve searches no PATH: a bare name would be taken as a file
            // in the directory, which it is.
            return Ok(if candidate.components().count() > 1 {
                candidate
            } else {
                Path::new(".").join(candidate)
            });
        }
        denied |= here.exists();
    }
    Err(if denied {
        io::Error::from(io::ErrorKind::PermissionDenied)
    } else {
        io::Error::new(io::ErrorKind::NotFound, "no such program in PATH")
    })
}

/// Whether `path` is a file this process may execute.
pub(super) fn runnable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
}

/// `bytes` as a C string; an inner NUL is an error, as `Command` makes it.
fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data"))
}

/// `fd` itself when its number is above the standard descriptors, or a
/// close-on-exec duplicate above them.
pub(super) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // std duplicates with F_DUPFD_CLOEXEC from 3 up.
    fd.try_clone()
}

/// `/dev/null`, for reading and writing, above the standard descriptors
/// ([`Plan::stdio`]).
pub(super) fn dev_null() -> io::Result<OwnedFd> {
    let null = std::fs::File::options().read(true).write(true).open("/dev/null")?;
    above_stdio(null.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &CString) -> &str {
        c.to_str().expect("UTF-8")
    }

    #[test]
    fn a_launcher_gets_env_and_the_variables_then_the_program() {
        let spec = CommandSpec {
            launcher: vec!["ssh".into(), "gpu-1".into(), "--".into()],
            args: vec!["--flag".into()],
            env: vec![("PATH".into(), Some("/usr/bin:/bin".into()))],
            ..CommandSpec::default()
        };
        let told = [("A", OsString::from("1"))];
        let exec = exec(Path::new("/opt/worker"), None, &spec, &told).unwrap();
        let argv: Vec<&str> = exec.argv.iter().map(text).collect();
        assert_eq!(argv, ["ssh", "gpu-1", "--", "env", "A=1", "/opt/worker", "--flag"]);
        // `ssh` itself, found in the worker's PATH.
        assert!(text(&exec.path).ends_with("/ssh"), "{:?}", exec.path);
    }

    #[test]
    fn the_environment_is_what_the_builder_says_and_told_last() {
        let spec = CommandSpec {
            env_clear: true,
            env: vec![
                ("KEEP".into(), Some("1".into())),
                ("GONE".into(), Some("1".into())),
                ("GONE".into(), None),
                (ENV_ENTRY.into(), Some("stale".into())),
            ],
            ..CommandSpec::default()
        };
        let told = [("KEEP", OsString::from("2"))];
        let exec = exec(Path::new("/bin/sh"), Some(OsStr::new("name")), &spec, &told).unwrap();
        let envp: Vec<&str> = exec.envp.iter().map(text).collect();
        // No entry named: a stale one is removed; `told` wins.
        assert_eq!(envp, ["KEEP=2"]);
        assert_eq!(exec.argv.iter().map(text).collect::<Vec<_>>(), ["name"]);
        assert_eq!(text(&exec.path), "/bin/sh");
    }

    #[test]
    fn a_program_not_in_path_is_not_found_and_a_nul_is_refused() {
        let spec = CommandSpec {
            env: vec![("PATH".into(), Some("/nonexistent".into()))],
            ..CommandSpec::default()
        };
        let err = exec(Path::new("sh"), None, &spec, &[]).err().expect("not found");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let spec = CommandSpec { args: vec!["a\0b".into()], ..CommandSpec::default() };
        let err = exec(Path::new("/bin/sh"), None, &spec, &[]).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
