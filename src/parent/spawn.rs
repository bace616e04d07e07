//! Launching a worker process, on the spawner thread (`spawner.rs`).
//!
//! The child gets its end of a close-on-exec `socketpair` (no path on disk)
//! with close-on-exec cleared in the child only, becomes the leader of its
//! own process group (so that what it starts is signalled with it), and
//! asks for SIGTERM when the parent dies. Every other descriptor of the
//! parent's is marked close-on-exec in the child, whether or not it was
//! opened so. A remote worker gets its token (and TLS pin) on its stdin,
//! never in an argument or the environment, which other users of either
//! host can read. What follows, from the start to the reaping, is
//! `process.rs`'s.
//!
//! Between fork and exec the child may only make async-signal-safe calls,
//! and none that allocates (another thread of the parent may have held the
//! allocator's lock at the fork): each is one system call, through nix
//! where nix wraps it without allocating, raw `libc` where it does not.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
#[cfg(feature = "tls")]
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid};

use super::options::{CommandSpec, ResourceLimits, Transport};
use super::output::Output;
use super::process::ChildHandle;
#[cfg(feature = "tcp")]
use super::remote::{self, Listening};
use super::spawner::on_spawner;
use crate::error::SpawnError;
#[cfg(feature = "tcp")]
use crate::handoff::{ENV_CONNECT, ENV_SECRETS};
use crate::handoff::{ENV_ENTRY, ENV_FD, ENV_MAX_MESSAGE};
use crate::os;
#[cfg(feature = "tls")]
use crate::wire::tls::TlsServer;

/// How the worker's standard descriptor `fd` (this process's own) is set
/// up.
fn stdio(output: Output, fd: BorrowedFd<'_>) -> Stdio {
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
    #[cfg(feature = "tcp")]
    Tcp(Listening),
}

impl Channel {
    /// Whether the worker is started through a launcher, whose exit
    /// status is what the parent sees (a remote worker only).
    pub(crate) fn launched(&self) -> bool {
        match self {
            Channel::Local(_) => false,
            #[cfg(feature = "tcp")]
            Channel::Tcp(listening) => listening.launched,
        }
    }
}

/// Whether `launcher` ends in a shell and its `-c` (`sh -c`, `bash -lc`,
/// also after `ssh host`): what we append would then be the shell's
/// script (only its first word, `env`, run) and its positional arguments.
fn swallows_command(launcher: &[std::ffi::OsString]) -> bool {
    const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"];
    let [.., shell, flag] = launcher else { return false };
    let flag = flag.to_string_lossy();
    let is_c = flag.starts_with('-') && !flag.starts_with("--") && flag[1..].contains('c');
    let name = Path::new(shell).file_name().map(|n| n.to_string_lossy().into_owned());
    is_c && name.is_some_and(|n| SHELLS.contains(&n.as_str()))
}

/// Checks, without starting anything, that `spec` names a program that
/// can be run: a missing program is an error the caller sees at once.
pub(crate) fn check(spec: &CommandSpec) -> Result<(), SpawnError> {
    if swallows_command(&spec.launcher) {
        return Err(SpawnError::SwallowingLauncher { launcher: spec.launcher.clone() });
    }
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
    let (channel, connect) = connection(&spec)?;
    let (program, arg0) = program(&spec)?;
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
    let pidfd = os::pidfd_open(launched.pid as i32);
    let pidfd = pidfd.and_then(|fd| above_stdio(fd).ok());
    // The table grows here, not under the loop (`link.rs`), once out.
    if let Some(fd) = pidfd.as_ref().map(AsRawFd::as_raw_fd) {
        drop(on_spawner(move || os::reserve_descriptors(fd)));
    }
    Ok(Spawned {
        handle: ChildHandle::new(launched.pid, pidfd),
        sock: channel,
        stdout: launched.stdout,
        stderr: launched.stderr,
    })
}

/// The parent's end of the worker's connection, and how the worker gets
/// its own: a socketpair, or a port of its own to connect back to.
fn connection(spec: &CommandSpec) -> Result<(Channel, Connect), SpawnError> {
    match &spec.transport {
        Transport::Local => {
            let (parent_end, child_end) = UnixStream::pair()
                .map_err(|source| SpawnError::Setup { what: "socketpair", source })?;
            // A parent started with standard descriptors closed would hand
            // them out here: the worker's stdout must never be its protocol
            // socket.
            let setup = |source| SpawnError::Setup { what: "socketpair", source };
            let parent_end = UnixStream::from(above_stdio(parent_end.into()).map_err(setup)?);
            let child_fd = above_stdio(child_end.into()).map_err(setup)?;
            Ok((Channel::Local(parent_end), Connect::Inherit(child_fd)))
        }
        #[cfg(feature = "tcp")]
        Transport::PlainTcp { listen, connect_to } => {
            listen_for(spec, *listen, connect_to.as_deref(), None, None)
        }
        #[cfg(feature = "tls")]
        Transport::Tls { listen, connect_to, cert } => {
            let tls = match cert {
                Some((cert, key)) => {
                    Arc::new(TlsServer::from_files(cert, key).map_err(|source| {
                        SpawnError::Setup { what: "TLS certificate and key", source }
                    })?)
                }
                None => TlsServer::self_signed().map_err(|source| SpawnError::Setup {
                    what: "self-signed TLS certificate",
                    source,
                })?,
            };
            let pin = Some(tls.pin.clone());
            listen_for(spec, *listen, connect_to.as_deref(), Some(tls), pin)
        }
    }
}

/// A remote worker's port, listening on `listen` (speaking `tls` first,
/// if given), and what the worker is told to connect back to it.
#[cfg(feature = "tcp")]
fn listen_for(
    spec: &CommandSpec,
    listen: std::net::SocketAddr,
    connect_to: Option<&str>,
    tls: remote::Secure,
    pin: Option<String>,
) -> Result<(Channel, Connect), SpawnError> {
    let mut listening = Listening::bind(listen, connect_to, tls)
        .map_err(|source| SpawnError::Setup { what: "listening socket", source })?;
    listening.launched = !spec.launcher.is_empty();
    let (address, token) = (listening.address.clone(), listening.token());
    Ok((Channel::Tcp(listening), Connect::Back { address, token, pin }))
}

/// The program to run, and the name it is started with (`None`: its path).
fn program(spec: &CommandSpec) -> Result<(PathBuf, Option<OsString>), SpawnError> {
    let current_exe = || {
        std::env::current_exe()
            .map_err(|source| SpawnError::Setup { what: "path to the current executable", source })
    };
    Ok(match &spec.program {
        Some(p) => (p.clone(), None),
        // Through a launcher the path must mean something to the command
        // it starts: the executable's own.
        None if !spec.launcher.is_empty() => (current_exe()?, None),
        // The running executable itself, even after a deploy replaced or
        // removed the file it came from: the worker is always this exact
        // build. It keeps the name it was started with.
        None if Path::new(SELF_EXE).exists() => {
            (PathBuf::from(SELF_EXE), Some(std::env::args_os().next().unwrap_or_default()))
        }
        None => (current_exe()?, None),
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
fn is_open(fd: BorrowedFd<'_>) -> bool {
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
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
    #[cfg(feature = "tcp")]
    Back { address: String, token: String, pin: Option<String> },
}

fn launch(
    program: &Path,
    arg0: Option<&std::ffi::OsStr>,
    spec: &CommandSpec,
    connect: &Connect,
) -> io::Result<Launched> {
    // What the worker is told, in its environment: nothing secret.
    let mut told: Vec<(&str, OsString)> = Vec::new();
    // The descriptor the worker inherits; a remote worker's secrets, on
    // its stdin.
    let (fd, stdin) = match connect {
        Connect::Inherit(child_fd) => {
            told.push((ENV_FD, child_fd.as_raw_fd().to_string().into()));
            (Some(child_fd.as_raw_fd()), Stdio::null())
        }
        #[cfg(feature = "tcp")]
        Connect::Back { address, token, pin } => {
            told.push((ENV_CONNECT, address.into()));
            told.push((ENV_SECRETS, "stdin".into()));
            (None, secrets_on_a_pipe(token, pin.as_deref())?)
        }
    };
    told.push((ENV_MAX_MESSAGE, spec.max_message_size.to_string().into()));
    if let Some(entry) = &spec.entry {
        told.push((ENV_ENTRY, entry.into()));
    }
    let mut cmd = command(program, arg0, spec, &told);
    let (stdout, stderr) =
        (stdio(spec.stdout, io::stdout().as_fd()), stdio(spec.stderr, io::stderr().as_fd()));
    cmd.stdin(stdin).stdout(stdout).stderr(stderr);
    cmd.process_group(0);
    before_exec(&mut cmd, fd, spec.rlimits);
    let mut child = cmd.spawn()?;
    // Dropping std's Child neither kills nor reaps it: ChildHandle does both.
    Ok(Launched {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// The command that starts the worker (through its launcher, if any),
/// with its arguments, its environment (the variables in `told` last) and
/// its directory.
fn command(
    program: &Path,
    arg0: Option<&std::ffi::OsStr>,
    spec: &CommandSpec,
    told: &[(&str, OsString)],
) -> Command {
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
            for (k, v) in told {
                let mut kv = OsString::from(k);
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
    for (k, v) in told {
        cmd.env(k, v);
    }
    cmd
}

/// What the child does between fork and exec (see the module docs): asks
/// for SIGTERM when its parent dies (and exits if it has already), marks
/// every descriptor close-on-exec but `fd` (its end of the socketpair), and
/// sets its resource limits.
fn before_exec(cmd: &mut Command, fd: Option<RawFd>, rlimits: ResourceLimits) {
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions that do not allocate (prctl,
    // getppid, close_range, fcntl, setrlimit, _exit; and the fallback's
    // open, getdents64, getrlimit, close).
    unsafe {
        cmd.pre_exec(move || {
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
            for (resource, limit) in [
                (Resource::RLIMIT_AS, rlimits.address_space.map(|l| (l, l))),
                // Soft below hard: SIGXCPU first, SIGKILL a second later.
                (Resource::RLIMIT_CPU, rlimits.cpu_seconds.map(|l| (l, l.saturating_add(1)))),
                (Resource::RLIMIT_NOFILE, rlimits.open_files.map(|l| (l, l))),
            ] {
                if let Some((soft, hard)) = limit {
                    setrlimit(resource, soft, hard)?;
                }
            }
            Ok(())
        });
    }
}

/// A pipe that holds the secrets block (`handoff::secrets_block`) and then
/// ends: the read end, for the launcher's stdin. `ssh`, `srun`, `kubectl
/// exec -i` and a shell pass their stdin on to the command they run, and
/// no other user can read a pipe, as they can read `/proc/PID/cmdline`
/// and what a launcher puts there. Written whole before the launcher
/// starts (a few hundred bytes: the pipe's buffer holds them), so nothing
/// waits on the launcher and it can never be a broken pipe.
#[cfg(feature = "tcp")]
fn secrets_on_a_pipe(token: &str, pin: Option<&str>) -> io::Result<Stdio> {
    use std::io::Write;
    let (read, mut write) = io::pipe()?;
    write.write_all(crate::handoff::secrets_block(token, pin).as_bytes())?;
    drop(write);
    Ok(read.into())
}
