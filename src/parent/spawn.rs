//! Launching a worker process and reaping it.
//!
//! Every fork happens on one long-lived thread of our own ("the spawner"):
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! and tokio's blocking threads come and go. The child gets its end of a
//! close-on-exec `socketpair` (no path on disk) with close-on-exec cleared
//! in the child only, becomes the leader of its own process group (so that
//! what it starts is signalled with it), and asks for SIGTERM when the
//! parent dies.
//!
//! Reaping uses a pidfd where the kernel has one (Linux 5.3+): the pidfd
//! becomes readable when the child exits, the group is killed (anything the
//! worker left behind goes with it) while the child is still a zombie, so
//! its pid (and group id) cannot have been reused, and only then is it
//! reaped. A [`ChildHandle`] dropped before its child was reaped kills the
//! group and reaps from a short-lived thread, so no path leaves a zombie.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;

use super::output::Output;
use crate::error::{ExitStatus, SpawnError};

/// Environment variable that tells the child which descriptor is its socket.
pub(crate) const ENV_FD: &str = "ACTIX_WEBWORKER_FD";
/// Environment variable that names the worker entry to run.
pub(crate) const ENV_ENTRY: &str = "ACTIX_WEBWORKER_ENTRY";
/// Environment variable with the largest message either side may send.
pub(crate) const ENV_MAX_MESSAGE: &str = "ACTIX_WEBWORKER_MAX_MESSAGE";

/// What to run: the `path` and `args` of the original, and more.
#[derive(Clone, Debug, Default)]
pub(crate) struct CommandSpec {
    pub program: Option<PathBuf>,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, Option<OsString>)>,
    pub env_clear: bool,
    pub cwd: Option<PathBuf>,
    pub entry: Option<String>,
    pub stdout: Output,
    pub stderr: Output,
    pub max_message_size: usize,
    pub rlimits: ResourceLimits,
}

/// Resource limits set (`setrlimit`, soft and hard) in the worker before
/// its program starts. `None` leaves the parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceLimits {
    /// Address space, in bytes (`RLIMIT_AS`): allocations past it fail.
    pub address_space: Option<u64>,
    /// CPU time, in seconds (`RLIMIT_CPU`): SIGXCPU, then SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Open descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

impl ResourceLimits {
    /// Sets [`address_space`](Self::address_space).
    pub fn address_space(mut self, bytes: u64) -> Self {
        self.address_space = Some(bytes);
        self
    }

    /// Sets [`cpu_seconds`](Self::cpu_seconds).
    pub fn cpu_seconds(mut self, seconds: u64) -> Self {
        self.cpu_seconds = Some(seconds);
        self
    }

    /// Sets [`open_files`](Self::open_files).
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }
}

fn stdio(output: Output) -> Stdio {
    match output {
        Output::Inherit => Stdio::inherit(),
        Output::Null => Stdio::null(),
        Output::Capture => Stdio::piped(),
    }
}

/// A started child: its handle and the parent's end of the socket.
pub(crate) struct Spawned {
    pub handle: ChildHandle,
    pub sock: UnixStream,
    /// The read ends of captured stdout and stderr.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("actix-webworker-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("the spawner thread could not be started");
        Mutex::new(tx)
    })
}

/// Runs `f` on the spawner thread and waits for its result.
fn on_spawner<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .expect("the spawner thread is gone");
    rx.recv().expect("the spawner thread is gone")
}

/// Starts the worker process described by `spec`.
pub(crate) fn spawn(spec: &CommandSpec) -> Result<Spawned, SpawnError> {
    let (parent_end, child_end) =
        UnixStream::pair().map_err(|source| SpawnError::Setup { what: "socketpair", source })?;
    let program = match &spec.program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|source| SpawnError::Setup {
            what: "path to the current executable",
            source,
        })?,
    };
    let spec = spec.clone();
    let child_fd: OwnedFd = child_end.into();
    // The child's end is closed here once the child has its copy.
    let launched = on_spawner(move || {
        launch(&program, &spec, &child_fd).map_err(|source| SpawnError::Spawn { program, source })
    })?;
    Ok(Spawned {
        handle: ChildHandle::new(launched.pid),
        sock: parent_end,
        stdout: launched.stdout,
        stderr: launched.stderr,
    })
}

struct Launched {
    pid: u32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

fn launch(program: &PathBuf, spec: &CommandSpec, child_fd: &OwnedFd) -> io::Result<Launched> {
    let mut cmd = Command::new(program);
    cmd.args(&spec.args);
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
    let fd = child_fd.as_raw_fd();
    cmd.env(ENV_FD, fd.to_string());
    cmd.env(ENV_MAX_MESSAGE, spec.max_message_size.to_string());
    match &spec.entry {
        Some(entry) => cmd.env(ENV_ENTRY, entry),
        None => cmd.env_remove(ENV_ENTRY),
    };
    cmd.stdin(Stdio::null()).stdout(stdio(spec.stdout)).stderr(stdio(spec.stderr));
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    let rlimits = spec.rlimits;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, syscall, fcntl,
    // setrlimit, _exit).
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
                for other in 3..4096 {
                    libc::fcntl(other, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            for (resource, limit) in [
                (libc::RLIMIT_AS, rlimits.address_space),
                (libc::RLIMIT_CPU, rlimits.cpu_seconds),
                (libc::RLIMIT_NOFILE, rlimits.open_files),
            ] {
                if let Some(limit) = limit {
                    let rlim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
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

/// A running (or exited but not yet reaped) worker process.
pub(crate) struct ChildHandle {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
    pidfd: Option<OwnedFd>,
}

impl ChildHandle {
    fn new(pid: u32) -> Self {
        let pid = pid as libc::pid_t;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative return is a descriptor we now own.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
        if let Some(fd) = &pidfd {
            // SAFETY: plain fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        ChildHandle { pid, reaped: Mutex::new(false), pidfd }
    }

    /// The child's pid (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `signal` to the child's whole process group, unless it has been
    /// reaped already (its ids may then belong to someone else).
    pub(crate) fn signal_group(&self, signal: i32) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            // SAFETY: kill(2) with a negative pid signals that group; the
            // group cannot have been reused while its leader is unreaped.
            unsafe { libc::kill(-self.pid, signal) };
        }
    }

    /// Waits for the child to exit, takes its group down, and reaps it.
    pub(crate) async fn wait(&self) -> ExitStatus {
        // SAFETY: the pidfd is owned by `self`, which outlives this call and
        // so the registration, which ends when `afd` drops below.
        let registered = self.pidfd.as_ref().map(|fd| unsafe {
            AsyncFd::register_with_interest(fd.as_raw_fd(), tokio::io::Interest::READABLE)
        });
        match registered {
            Some(Ok(afd)) => {
                // Readable once the process has exited.
                if let Ok(mut guard) = afd.readable().await {
                    guard.retain_ready();
                }
                self.signal_group(libc::SIGKILL);
                self.reap_blocking()
            }
            _ => {
                let pid = self.pid;
                let raw =
                    tokio::task::spawn_blocking(move || wait_raw(pid, 0)).await.unwrap_or(None);
                self.finish(raw)
            }
        }
    }

    fn reap_blocking(&self) -> ExitStatus {
        let raw = wait_raw(self.pid, 0);
        self.finish(raw)
    }

    fn finish(&self, raw: Option<i32>) -> ExitStatus {
        *self.reaped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        match raw {
            Some(raw) => ExitStatus::from_wait_status(raw),
            None => ExitStatus { code: None, signal: None },
        }
    }
}

fn wait_raw(pid: libc::pid_t, flags: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Some(status);
        }
        if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        if *self.reaped.get_mut().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        // Nobody will wait for it any more: kill and reap off-thread.
        // SAFETY: see signal_group; the leader is not reaped yet.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("actix-webworker-reaper".into())
            .spawn(move || wait_raw(pid, 0));
    }
}
