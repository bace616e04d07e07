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
//! Everything the start needs is settled here first (`plan.rs`): the file
//! (the `PATH` searched in the parent), arguments, environment, directory,
//! standard descriptors. Then the process is made by
//! `clone(CLONE_VM | CLONE_VFORK)` (`vfork.rs`), as `posix_spawn` does:
//! no page table is copied and no allocator lock taken, where a fork did
//! both and held the parent's event loop up when many workers started at
//! once (issue 27). Where the kernel refuses that clone (`EPERM` from a
//! seccomp filter, `ENOSYS`), and in the tests that set
//! [`ENV_SPAWN_WITH_FORK`], it is made by fork with `std::process::Command`
//! instead (`forked.rs`), with the same steps before the exec. Either way
//! a step or exec that fails is the start's error, `SpawnError::Spawn`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
#[cfg(feature = "tls")]
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg};

use self::plan::{above_stdio, dev_null, Plan};
use self::vfork::Failed;
use super::options::{CommandSpec, Transport};
use super::output::Output;
use super::process::ChildHandle;
#[cfg(feature = "tcp")]
use super::remote::{self, Listening};
use super::spawner::{admit, on_spawner, Starting};
use super::start_method::StartMethod;
use crate::error::SpawnError;
use crate::handoff::template::Request;
#[cfg(feature = "tcp")]
use crate::handoff::{ENV_CONNECT, ENV_SECRETS};
use crate::handoff::{ENV_ENTRY, ENV_FD, ENV_MAX_MESSAGE};
use crate::os;
#[cfg(feature = "tls")]
use crate::wire::tls::TlsServer;

mod forked;
mod inherited;
mod plan;
mod server;
mod verdict;
mod vfork;

/// A started child: its handle and the parent's end of its connection.
pub(crate) struct Spawned {
    pub handle: ChildHandle,
    pub sock: Channel,
    /// The read ends of captured stdout and stderr.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Counted among the local starts under way until its link is opened
    /// (`spawner.rs`); `None` through a launcher.
    pub starting: Option<Starting>,
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
    if program.components().count() > 1 || program.is_absolute() {
        let path = match &spec.cwd {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.clone(),
        };
        return if plan::runnable(&path) { Ok(()) } else { Err(not_found()) };
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| (!spec.env_clear).then(|| std::env::var_os("PATH")).flatten());
    // As the start will look for it (a relative directory of PATH then
    // means from the worker's directory).
    match plan::find(program.as_os_str(), path.as_deref(), spec) {
        Ok(_) => Ok(()),
        Err(_) => Err(not_found()),
    }
}

/// Starts the worker process described by `spec`, on the spawner thread:
/// the caller's thread never forks. The result comes on the receiver.
pub(crate) fn spawn(
    spec: &CommandSpec,
) -> tokio::sync::oneshot::Receiver<Result<Spawned, SpawnError>> {
    let spec = spec.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Dropped unrun if the spawner is gone: `tx` with it, which closes `rx`.
    drop(on_spawner(move || {
        // A launcher's start is another host's (or engine's) to run.
        let starting = spec.launcher.is_empty().then(admit);
        let (result, highest) = match spawn_here(spec) {
            Ok((spawned, highest)) => (Ok(Spawned { starting, ..spawned }), highest),
            Err(e) => (Err(e), None),
        };
        let _ = tx.send(result);
        // The descriptor table grows here, not under the loop (`link.rs`,
        // which dups each worker's socket): once this start's result is
        // out, and before the next start. Queued behind the starts of a
        // burst, it came after all of them, and the loop grew the table,
        // waiting for an RCU grace period (8-11 ms seen in a mass start).
        if let Some(fd) = highest {
            os::reserve_descriptors(fd);
        }
    }));
    rx
}

/// Starts the worker; with the highest descriptor it holds for it.
fn spawn_here(mut spec: CommandSpec) -> Result<(Spawned, Option<RawFd>), SpawnError> {
    let (program, arg0) = program(&spec)?;
    // A test binary (see `testing.rs`): only the worker's own test runs.
    if spec.program.is_none() {
        if let Some(mut args) = crate::testing::worker_args() {
            args.append(&mut spec.args);
            spec.args = args;
        }
    }
    let mut may_fork = true;
    let (channel, launched) = loop {
        let (channel, connect) = connection(&spec)?;
        // The child's end is closed here once the child has its copy.
        match launch(&program, arg0.as_deref(), &spec, &connect, may_fork) {
            Ok(launched) => break (channel, launched),
            // The fork server's template died with this start's request
            // (killed, the OOM killer): a fork may hold its descriptors,
            // so they go, and the start is made once more with new ones,
            // exec'd, not failed: the template is the parent's own
            // business. (The next start makes a new template.)
            Err(e) if may_fork && server::died_with_the_request(&e) => may_fork = false,
            Err(source) => {
                let program = match arg0 {
                    Some(_) => std::env::current_exe().unwrap_or(program),
                    None => program,
                };
                return Err(SpawnError::Spawn { program, source });
            }
        }
    };
    let pidfd = launched.pidfd.or_else(|| os::pidfd_open(launched.pid as i32));
    let pidfd = pidfd.and_then(|fd| above_stdio(fd).ok());
    let highest = pidfd.as_ref().map(AsRawFd::as_raw_fd);
    let spawned = Spawned {
        handle: ChildHandle::new(launched.pid, pidfd),
        sock: channel,
        stdout: launched.stdout,
        stderr: launched.stderr,
        starting: None,
    };
    Ok((spawned, highest))
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
    // In the clear the parent proves itself with a second secret; over
    // TLS its certificate does.
    let proof = pin.is_none().then(|| listening.proof());
    Ok((Channel::Tcp(listening), Connect::Back { address, token, pin, proof }))
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

/// Whether this process has descriptor `fd` open.
fn is_open(fd: BorrowedFd<'_>) -> bool {
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

struct Launched {
    pid: u32,
    /// A pidfd of it, when the start made one (a fork server's).
    pidfd: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// How the worker gets its connection.
enum Connect {
    /// It inherits this end of the socketpair.
    Inherit(OwnedFd),
    /// It connects back to `address` and presents `token`; over TLS to
    /// a parent whose certificate hashes to `pin`, if given; in the clear
    /// to a parent that sends back `proof`.
    #[cfg(feature = "tcp")]
    Back { address: String, token: String, pin: Option<String>, proof: Option<String> },
}

/// Starts the worker: from its template under the fork server, if
/// `may_fork`, else (or where no template serves) exec'd.
fn launch(
    program: &Path,
    arg0: Option<&std::ffi::OsStr>,
    spec: &CommandSpec,
    connect: &Connect,
    may_fork: bool,
) -> io::Result<Launched> {
    // What the worker is told, in its environment: nothing secret.
    let mut told: Vec<(&str, OsString)> = Vec::new();
    // The descriptor the worker inherits; a remote worker's secrets, on
    // its stdin.
    let (socket, stdin) = match connect {
        Connect::Inherit(child_fd) => {
            told.push((ENV_FD, child_fd.as_raw_fd().to_string().into()));
            (Some(child_fd.as_raw_fd()), dev_null()?)
        }
        #[cfg(feature = "tcp")]
        Connect::Back { address, token, pin, proof } => {
            told.push((ENV_CONNECT, address.into()));
            told.push((ENV_SECRETS, "stdin".into()));
            (
                None,
                secrets_on_a_pipe(&crate::handoff::secrets_block(
                    token,
                    pin.as_deref(),
                    proof.as_deref(),
                ))?,
            )
        }
    };
    let (stdout, read_stdout) = stdio(spec.stdout, io::stdout().as_fd())?;
    let (stderr, read_stderr) = stdio(spec.stderr, io::stderr().as_fd())?;
    if let (StartMethod::ForkServer, Some(socket), true) = (spec.start_method, socket, may_fork) {
        let request = Request {
            entry: spec.entry.clone(),
            max_message: spec.max_message_size as u64,
            limits: plan::limits(spec.rlimits).map(|(_, limit)| limit),
        };
        // Its outputs always sent: the parent's own are what they are now,
        // not what they were when the template started.
        let raw = |fd: &Option<OwnedFd>, own: RawFd| fd.as_ref().map_or(own, AsRawFd::as_raw_fd);
        let fds = [socket, stdin.as_raw_fd(), raw(&stdout, 1), raw(&stderr, 2)];
        let command = plan::exec(program, arg0, spec, &[])?;
        if let Some(started) = server::start(command, &request, &fds, start) {
            let (pid, pidfd) = started?;
            let (stdout, stderr) = (read_stdout, read_stderr);
            return Ok(Launched { pid, pidfd: Some(pidfd), stdout, stderr });
        }
    }
    told.push((ENV_MAX_MESSAGE, spec.max_message_size.to_string().into()));
    if let Some(entry) = &spec.entry {
        told.push((ENV_ENTRY, entry.into()));
    }
    let exec = plan::exec(program, arg0, spec, &told)?;
    let stdio = [Some(stdin), stdout, stderr];
    let pid = start(Plan { exec, stdio, socket, rlimits: spec.rlimits })?;
    Ok(Launched { pid, pidfd: None, stdout: read_stdout, stderr: read_stderr })
}

/// Starts `plan`'s process by clone (`vfork.rs`), or by fork (`forked.rs`)
/// where the kernel refuses that clone, or the tests ask for it
/// ([`ENV_SPAWN_WITH_FORK`]); its pid.
fn start(plan: Plan) -> io::Result<u32> {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    // Cleared at the first refusal: the kernel will not change its mind.
    static CLONE_WORKS: AtomicBool = AtomicBool::new(true);
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| std::env::var_os(ENV_SPAWN_WITH_FORK).is_some());
    if !forced && CLONE_WORKS.load(Relaxed) {
        match vfork::start(&plan) {
            Ok(pid) => return Ok(pid),
            Err(Failed::Start(e)) => return Err(e),
            Err(Failed::Unavailable(e)) => {
                tracing::debug!(error = %e, "clone(CLONE_VM | CLONE_VFORK) refused: forking");
                CLONE_WORKS.store(false, Relaxed);
            }
        }
    }
    forked::start(plan)
}

/// Set (to anything) in the parent's environment, workers are started by
/// fork, the fallback (`forked.rs`), and never by clone: for the tests
/// that check the fallback keeps every guarantee. Read once per process.
const ENV_SPAWN_WITH_FORK: &str = "ACTIX_WEBWORKER_TEST_SPAWN_WITH_FORK";

/// What becomes the worker's standard descriptor `fd` (this process's
/// own): a descriptor (`None`: this process's own `fd`), and the read end
/// of a captured one.
fn stdio(output: Output, fd: BorrowedFd<'_>) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    Ok(match output {
        // A parent with this descriptor closed gives the worker /dev/null
        // there, so that nothing the worker opens lands on it.
        Output::Inherit if !is_open(fd) => (Some(dev_null()?), None),
        Output::Inherit => (None, None),
        Output::Null => (Some(dev_null()?), None),
        Output::Capture => {
            let (read, write) = io::pipe()?;
            (Some(above_stdio(write.into())?), Some(read.into()))
        }
    })
}

/// A pipe that holds the secrets block (`handoff::secrets_block`) and then
/// ends: the read end, for the launcher's stdin. `ssh`, `srun`, `kubectl
/// exec -i` and a shell pass their stdin on to the command they run, and
/// no other user can read a pipe, as they can read `/proc/PID/cmdline`
/// and what a launcher puts there. Written whole before the launcher
/// starts (a few hundred bytes: the pipe's buffer holds them), so nothing
/// waits on the launcher and it can never be a broken pipe.
#[cfg(feature = "tcp")]
fn secrets_on_a_pipe(block: &str) -> io::Result<OwnedFd> {
    use std::io::Write;
    let (read, mut write) = io::pipe()?;
    write.write_all(block.as_bytes())?;
    drop(write);
    above_stdio(read.into())
}
