//! Launching a worker process.
//!
//! Every fork happens on one long-lived thread of our own ("the spawner"):
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! and tokio's blocking threads come and go. The child gets its end of a
//! close-on-exec `socketpair` (no path on disk) with close-on-exec cleared
//! in the child only, becomes the leader of its own process group (so that
//! what it starts is signalled with it), and asks for SIGTERM when the
//! parent dies. A remote worker gets its token (and TLS pin) on its stdin,
//! never in an argument or the environment, which other users of either
//! host can read. What follows, from the start to the reaping, is
//! `process.rs`'s.

use super::options::{CommandSpec, Transport};
use super::output::Output;
use super::process::ChildHandle;
use crate::error::SpawnError;
use crate::handoff::{ENV_CONNECT, ENV_ENTRY, ENV_FD, ENV_MAX_MESSAGE, ENV_SECRETS};
use crate::wire::tls::TlsServer;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;

/// How the worker's standard descriptor `fd` is set up.
fn stdio(output: Output, fd: RawFd) -> Stdio {
    match output {
        // A parent with this descriptor closed gives the worker /dev/null
        // there, so that nothing the worker opens lands on it.
        Output::Inherit if !is_open(fd) => Stdio::null(),
        Output::Inherit => Stdio::inherit(),
        Output::Null => Stdio::null(),
        Output::Capture => Stdio::piped(),
    }
}

/// A started child: its handle and the parent's end of its connection.
pub(crate) struct Spawned {
    pub handle: ChildHandle,
    pub sock: Channel,
    /// The read ends of captured stdout and stderr.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The parent's end of a worker's connection.
pub(crate) enum Channel {
    /// Its end of the socketpair.
    Local(UnixStream),
    /// A TCP worker's port, and the token it must present there.
    Tcp(super::remote::Listening),
}

type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, once it runs.
static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

fn start_spawner() -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new().name("actix-webworker-spawner".into()).spawn(move || {
        for job in rx {
            job();
        }
    })?;
    Ok(tx)
}

/// Runs `f` on the spawner thread (started on first use); its result comes
/// on the receiver. When the thread cannot be started, or is gone, the job
/// is dropped with its sender: the receiver is closed, which the caller
/// reports as a `SpawnError`, and the next call tries again.
fn on_spawner<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    if spawner.is_none() {
        match start_spawner() {
            Ok(queue) => *spawner = Some(queue),
            Err(e) => tracing::warn!(error = %e, "the spawner thread could not be started"),
        }
    }
    if let Some(queue) = spawner.as_ref() {
        if queue.send(job).is_err() {
            *spawner = None;
        }
    }
    rx
}

/// Checks, without starting anything, that `spec` names a program that
/// can be run: a missing program is an error the caller sees at once.
pub(crate) fn check(spec: &CommandSpec) -> Result<(), SpawnError> {
    // Through a launcher, the program is the launcher's to find (on its
    // host); the launcher is ours.
    let launcher = spec.launcher.first().map(PathBuf::from);
    let Some(program) = launcher.as_ref().or(spec.program.as_ref()) else { return Ok(()) };
    let not_found = || SpawnError::Spawn {
        program: program.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such program"),
    };
    let runnable = |path: &Path| {
        nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
    };
    if program.components().count() > 1 || program.is_absolute() {
        let path = match &spec.cwd {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.clone(),
        };
        return if runnable(&path) { Ok(()) } else { Err(not_found()) };
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| (!spec.env_clear).then(|| std::env::var_os("PATH")).flatten());
    let found = path.is_some_and(|p| std::env::split_paths(&p).any(|d| runnable(&d.join(program))));
    if found {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// Starts the worker process described by `spec`, on the spawner thread:
/// the caller's thread never forks. The result comes on the receiver.
pub(crate) fn spawn(
    spec: &CommandSpec,
) -> tokio::sync::oneshot::Receiver<Result<Spawned, SpawnError>> {
    let spec = spec.clone();
    on_spawner(move || spawn_here(spec))
}

fn spawn_here(mut spec: CommandSpec) -> Result<Spawned, SpawnError> {
    let (channel, connect) = match &spec.transport {
        Transport::Local => {
            let (parent_end, child_end) = UnixStream::pair()
                .map_err(|source| SpawnError::Setup { what: "socketpair", source })?;
            // A parent started with standard descriptors closed would hand
            // them out here: the worker's stdout must never be its protocol
            // socket.
            let setup = |source| SpawnError::Setup { what: "socketpair", source };
            let parent_end = UnixStream::from(above_stdio(parent_end.into()).map_err(setup)?);
            let child_fd = above_stdio(child_end.into()).map_err(setup)?;
            (Channel::Local(parent_end), Connect::Inherit(child_fd))
        }
        Transport::PlainTcp { listen, connect_to } | Transport::Tls { listen, connect_to, .. } => {
            let tls = match &spec.transport {
                Transport::Tls { cert: Some((cert, key)), .. } => {
                    Some(Arc::new(TlsServer::from_files(cert, key).map_err(|source| {
                        SpawnError::Setup { what: "TLS certificate and key", source }
                    })?))
                }
                Transport::Tls { cert: None, .. } => {
                    Some(TlsServer::self_signed().map_err(|source| SpawnError::Setup {
                        what: "self-signed TLS certificate",
                        source,
                    })?)
                }
                _ => None,
            };
            let pin = tls.as_ref().map(|tls| tls.pin.clone());
            let mut listening = super::remote::Listening::bind(*listen, connect_to.as_deref(), tls)
                .map_err(|source| SpawnError::Setup { what: "listening socket", source })?;
            listening.launched = !spec.launcher.is_empty();
            let (address, token) = (listening.address.clone(), listening.token());
            (Channel::Tcp(listening), Connect::Back { address, token, pin })
        }
    };
    let (program, arg0) = match &spec.program {
        Some(p) => (p.clone(), None),
        // Through a launcher the path must mean something to the command
        // it starts: the executable's own.
        None if !spec.launcher.is_empty() => (
            std::env::current_exe().map_err(|source| SpawnError::Setup {
                what: "path to the current executable",
                source,
            })?,
            None,
        ),
        // The running executable itself, even after a deploy replaced or
        // removed the file it came from: the worker is always this exact
        // build. It keeps the name it was started with.
        None if Path::new(SELF_EXE).exists() => {
            (PathBuf::from(SELF_EXE), Some(std::env::args_os().next().unwrap_or_default()))
        }
        None => (
            std::env::current_exe().map_err(|source| SpawnError::Setup {
                what: "path to the current executable",
                source,
            })?,
            None,
        ),
    };
    // A test binary (see `testing.rs`): only the worker's own test runs.
    if spec.program.is_none() {
        if let Some(mut args) = crate::testing::worker_args() {
            args.append(&mut spec.args);
            spec.args = args;
        }
    }
    // The child's end is closed here once the child has its copy.
    let launched = launch(&program, arg0.as_deref(), &spec, &connect).map_err(|source| {
        let program = match arg0 {
            Some(_) => std::env::current_exe().unwrap_or(program),
            None => program,
        };
        SpawnError::Spawn { program, source }
    })?;
    let pidfd = crate::os::pidfd_open(launched.pid as i32);
    let pidfd = pidfd.and_then(|fd| above_stdio(fd).ok());
    Ok(Spawned {
        handle: ChildHandle::new(launched.pid, pidfd),
        sock: channel,
        stdout: launched.stdout,
        stderr: launched.stderr,
    })
}

/// The running executable, as the kernel knows it.
const SELF_EXE: &str = "/proc/self/exe";

/// `fd` itself when its number is above the standard descriptors, or a
/// close-on-exec duplicate above them.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // std duplicates with F_DUPFD_CLOEXEC from 3 up.
    fd.try_clone()
}

/// Whether this process has descriptor `fd` open.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number only reads its flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

struct Launched {
    pid: u32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// How the worker gets its connection.
enum Connect {
    /// It inherits this end of the socketpair.
    Inherit(OwnedFd),
    /// It connects back to `address` and presents `token`; over TLS to
    /// a parent whose certificate hashes to `pin`, if given.
    Back { address: String, token: String, pin: Option<String> },
}

fn launch(
    program: &Path,
    arg0: Option<&std::ffi::OsStr>,
    spec: &CommandSpec,
    connect: &Connect,
) -> io::Result<Launched> {
    // What the worker is told, in its environment: nothing secret.
    let mut told: Vec<(&str, std::ffi::OsString)> = Vec::new();
    // A remote worker's secrets, on its stdin.
    let mut stdin = Stdio::null();
    let fd = match connect {
        Connect::Inherit(child_fd) => {
            told.push((ENV_FD, child_fd.as_raw_fd().to_string().into()));
            Some(child_fd.as_raw_fd())
        }
        Connect::Back { address, token, pin } => {
            told.push((ENV_CONNECT, address.into()));
            told.push((ENV_SECRETS, "stdin".into()));
            stdin = secrets_on_a_pipe(token, pin.as_deref())?;
            None
        }
    };
    told.push((ENV_MAX_MESSAGE, spec.max_message_size.to_string().into()));
    if let Some(entry) = &spec.entry {
        told.push((ENV_ENTRY, entry.into()));
    }
    let mut cmd = match spec.launcher.split_first() {
        None => {
            let mut cmd = Command::new(program);
            if let Some(arg0) = arg0 {
                cmd.arg0(arg0);
            }
            cmd.args(&spec.args);
            cmd
        }
        // `launcher... env K=V... program args...`: the variables reach a
        // remote command whatever the launcher passes on of its own
        // environment. None of them is secret: everyone on the host can
        // read these arguments.
        Some((launcher, its_args)) => {
            let mut cmd = Command::new(launcher);
            cmd.args(its_args).arg("env");
            for (k, v) in &told {
                let mut kv = std::ffi::OsString::from(k);
                kv.push("=");
                kv.push(v);
                cmd.arg(kv);
            }
            cmd.arg(program).args(&spec.args);
            cmd
        }
    };
    if spec.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &spec.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    if spec.entry.is_none() {
        cmd.env_remove(ENV_ENTRY);
    }
    for (k, v) in &told {
        cmd.env(k, v);
    }
    cmd.stdin(stdin).stdout(stdio(spec.stdout, 1)).stderr(stdio(spec.stderr, 2));
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    let rlimits = spec.rlimits;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, syscall, open,
    // fcntl, getrlimit, setrlimit, close, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // No descriptor of the parent's leaks into the worker, even one
            // opened without close-on-exec: mark them all, then keep only
            // the socket.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                mark_all_cloexec(c"/proc/self/fd");
            }
            if let Some(fd) = fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (resource, limit) in [
                (libc::RLIMIT_AS, rlimits.address_space.map(|l| (l, l))),
                // Soft below hard: SIGXCPU first, SIGKILL a second later.
                (libc::RLIMIT_CPU, rlimits.cpu_seconds.map(|l| (l, l.saturating_add(1)))),
                (libc::RLIMIT_NOFILE, rlimits.open_files.map(|l| (l, l))),
            ] {
                if let Some((soft, hard)) = limit {
                    let rlim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                    if libc::setrlimit(resource, &rlim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Dropping std's Child neither kills nor reaps it: ChildHandle does both.
    Ok(Launched {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// A pipe that holds the secrets block (`handoff::secrets_block`) and then
/// ends: the read end, for the launcher's stdin. `ssh`, `srun`, `kubectl
/// exec -i` and a shell pass their stdin on to the command they run, and
/// no other user can read a pipe, as they can read `/proc/PID/cmdline`
/// and what a launcher puts there. Written whole before the launcher
/// starts (a few hundred bytes: the pipe's buffer holds them), so nothing
/// waits on the launcher and it can never be a broken pipe.
fn secrets_on_a_pipe(token: &str, pin: Option<&str>) -> io::Result<Stdio> {
    use std::io::Write;
    let (read, mut write) = io::pipe()?;
    write.write_all(crate::handoff::secrets_block(token, pin).as_bytes())?;
    drop(write);
    Ok(read.into())
}

/// Marks every descriptor from 3 up close-on-exec, for kernels without
/// `close_range` (before 5.11). Async-signal-safe: it runs between fork and
/// exec, reading `fd_dir` (`/proc/self/fd`) with raw `getdents64` into a
/// buffer on the stack; without it, it marks every number below the
/// descriptor limit.
///
/// # Safety
///
/// Only for a process about to exec: it changes every descriptor's flags.
unsafe fn mark_all_cloexec(fd_dir: &std::ffi::CStr) {
    let mark = |fd: libc::c_int| {
        // SAFETY: F_SETFD on any number is harmless; unknown ones fail.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    };
    // SAFETY: open with a NUL-terminated path; returns a descriptor or -1.
    let dir = unsafe {
        libc::open(fd_dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    };
    if dir < 0 {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into a local.
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1 << 16
        };
        (3..max).for_each(mark);
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut pos = 0;
        while pos + 19 < n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let mut fd: libc::c_int = 0;
            let mut digits = 0;
            for &b in &buf[pos + 19..(pos + reclen).min(n as usize)] {
                if !b.is_ascii_digit() {
                    break;
                }
                fd = fd.saturating_mul(10).saturating_add(libc::c_int::from(b - b'0'));
                digits += 1;
            }
            if digits > 0 && fd > 2 && fd != dir {
                mark(fd);
            }
            pos += reclen;
        }
    }
    // SAFETY: closing the directory we opened.
    unsafe { libc::close(dir) };
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// Runs `mark_all_cloexec(dir)` in a forked child and says whether
    /// descriptor `fd` came out close-on-exec there.
    fn marked_in_a_child(dir: &std::ffi::CStr, fd: libc::c_int) -> bool {
        // SAFETY: the child calls only async-signal-safe functions (the
        // marking, fcntl, _exit); the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                mark_all_cloexec(dir);
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::_exit(if flags >= 0 && flags & libc::FD_CLOEXEC != 0 { 0 } else { 1 });
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    }

    #[test]
    fn the_close_on_exec_fallback_covers_every_descriptor() {
        // A descriptor above 4096, without close-on-exec.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit on a local; raising the soft limit
        // to at most the hard one.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            if lim.rlim_cur < 5001 && lim.rlim_max >= 5001 {
                lim.rlim_cur = 5001;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        let high = (lim.rlim_cur.min(5001) - 1) as libc::c_int;
        let (r, _w) = std::io::pipe().unwrap();
        // SAFETY: dup2 onto a number we then own, and clear its flag.
        let fd = unsafe { libc::dup2(r.as_raw_fd(), high) };
        assert_eq!(fd, high);
        // SAFETY: the descriptor dup2 just made.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
        assert!(marked_in_a_child(c"/proc/self/fd", high), "through /proc");
        assert!(marked_in_a_child(c"/nonexistent", high), "without /proc");
    }
}
