//! Taking over from the parent at start-up, the mirror of `parent/spawn.rs`:
//! the inherited socket, the parent process to watch, and the watchdog that
//! takes the worker's process group down when the parent is gone.
//!
//! Whether the parent is gone is told by a pidfd of the parent process,
//! never by `getppid()`: a multi-threaded parent that is killed does not die
//! at one instant, and until its last thread has gone the kernel may keep
//! reporting it as our parent, while the socket has closed already. A pidfd
//! becomes readable exactly when the whole process has exited. (Kernels
//! without `pidfd_open`, before 5.3, fall back to watching for the socket's
//! hang-up and for `getppid()` to change.)

#[cfg(feature = "tcp")]
use std::os::fd::BorrowedFd;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag};
use nix::poll::PollFlags;

use crate::handoff::{self, ENV_CONNECT, ENV_ENTRY, ENV_FD, ENV_MAX_MESSAGE, ENV_SECRETS};
#[cfg(feature = "tcp")]
use crate::handoff::{Secrets, MAX_SECRETS};
use crate::os;
// Built without the `tls` feature, the stream's TLS that has no value: no
// connection speaks it.
#[cfg(not(feature = "tls"))]
use crate::wire::stream::secure::Client as ClientConnection;
#[cfg(feature = "tls")]
use tokio_rustls::rustls::ClientConnection;

/// How long a worker whose parent is gone may take to finish `on_close`
/// before its process group is killed.
pub(crate) const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// What the parent handed over.
pub(crate) struct Handoff {
    /// The connection: the inherited socket, or a TCP connection to a
    /// remote parent, authenticated.
    pub sock: OwnedFd,
    /// The parent process, watched for its exit; `None` for a remote
    /// parent, whose connection is all there is of it.
    pub parent: Option<Arc<ParentWatch>>,
    /// The TLS the connection speaks, its handshake done, if any.
    pub tls: Option<ClientConnection>,
}

/// Why the handover failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoffError {
    #[error("this process was not started as a worker ({ENV_FD} is not set)")]
    Missing,
    #[error("{ENV_FD} names descriptor {0}, which is not a socket")]
    BadDescriptor(RawFd),
    #[error(
        "the socket in {ENV_FD} was made by process {peer}, which did not start this one \
         (these variables must come from the parent that starts the worker)"
    )]
    ForeignSocket { peer: i32 },
    #[cfg(feature = "tcp")]
    #[error("could not connect to the parent at {address} ({ENV_CONNECT}): {source}")]
    Connect { address: String, source: std::io::Error },
    #[error(
        "no token on stdin ({ENV_SECRETS}=stdin): {0} (a launcher must pass its stdin on: \
         not `ssh -n`)"
    )]
    #[cfg(feature = "tcp")]
    Secrets(String),
    /// The parent asked for a transport this build does not have.
    #[cfg(not(feature = "tls"))]
    #[error(
        "the parent asked this worker to connect back to {address} ({ENV_CONNECT}) over \
         {feature}, and it was built without actix-webworker's `{feature}` feature: build the \
         worker's program with it"
    )]
    NotBuiltWith { address: String, feature: &'static str },
}

/// Takes the inherited socket named in the environment, checks that it
/// comes from the process that started this one, and clears the variables
/// so that processes this worker starts are not mistaken for workers.
pub(crate) fn take() -> Result<Handoff, HandoffError> {
    let fd = std::env::var(ENV_FD).ok().and_then(|v| v.parse::<RawFd>().ok());
    let connect = std::env::var(ENV_CONNECT).ok();
    let on_stdin = std::env::var(ENV_SECRETS).is_ok_and(|v| v == "stdin");
    for var in [ENV_FD, ENV_ENTRY, ENV_MAX_MESSAGE, ENV_CONNECT, ENV_SECRETS] {
        // The runtime has not started any thread yet: this runs first in
        // the worker's main.
        std::env::remove_var(var);
    }
    if let Some(address) = connect {
        #[cfg(not(feature = "tcp"))]
        {
            let _ = on_stdin;
            return Err(HandoffError::NotBuiltWith { address, feature: "tcp" });
        }
        #[cfg(feature = "tcp")]
        {
            let Secrets { token, pin, proof } = match on_stdin {
                true => read_secrets().map_err(HandoffError::Secrets)?,
                false => Secrets::default(),
            };
            #[cfg(not(feature = "tls"))]
            if pin.is_some() {
                return Err(HandoffError::NotBuiltWith { address, feature: "tls" });
            }
            let (sock, tls) = connect_back(&address, &token, pin.as_deref(), proof.as_deref())
                .map_err(|source| HandoffError::Connect { address, source })?;
            return Ok(Handoff { sock, parent: None, tls });
        }
    }
    let fd = fd.ok_or(HandoffError::Missing)?;
    // Raw: the number may not be open (nix's fstat takes a descriptor it
    // assumes is). SAFETY: fstat on any number is harmless; it tells
    // whether it is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 0
        || unsafe { libc::fstat(fd, &mut st) } != 0
        || (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK
    {
        return Err(HandoffError::BadDescriptor(fd));
    }
    // A socketpair reports its creator as the peer: the parent, which
    // started us directly or through a wrapper (`args` may run the worker
    // under a debugger).
    let peer = peer_pid(fd).ok_or(HandoffError::BadDescriptor(fd))?;
    if !is_ancestor(peer) {
        return Err(HandoffError::ForeignSocket { peer });
    }
    // SAFETY: the parent passed us this descriptor for our exclusive use,
    // and it is a socket made by that parent (checked above).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not to be inherited by what the worker itself starts.
    let cloexec = FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(&owned, cloexec).map_err(|_| HandoffError::BadDescriptor(fd))?;
    let parent = Arc::new(ParentWatch::open(peer));
    Ok(Handoff { sock: owned, parent: Some(parent), tls: None })
}

/// Reads the secrets block (`handoff::secrets_block`) from stdin, byte by
/// byte up to its empty line so that nothing after it is taken, within
/// [`CONNECT_TIMEOUT`]; then stdin becomes `/dev/null`: what the launcher
/// passes on after the block is not the worker's to read.
#[cfg(feature = "tcp")]
fn read_secrets() -> Result<Secrets, String> {
    // SAFETY: descriptor 0 stays open for the life of the process (it is
    // replaced below, never closed).
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut block = Vec::new();
    while !block.ends_with(b"\n\n") && block != b"\n" {
        if block.len() >= MAX_SECRETS {
            return Err(format!("more than {MAX_SECRETS} bytes without an empty line"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("none within {CONNECT_TIMEOUT:?}"));
        }
        if !os::ready(&[stdin], PollFlags::POLLIN, left) {
            continue;
        }
        let mut byte = [0u8];
        match nix::unistd::read(stdin, &mut byte) {
            Ok(0) => break,
            Ok(_) => block.push(byte[0]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
    let secrets = handoff::parse_secrets(&String::from_utf8_lossy(&block));
    match secrets.token.is_empty() {
        true => Err("the input ended before the token".into()),
        false => Ok(secrets),
    }
}

/// Connects to a remote parent at `address`, over TLS with a parent whose
/// certificate hashes to `pin` if there is one, and presents `token`, the
/// first message on the connection (see `parent/remote.rs`); in the clear,
/// given a `proof`, asks the parent for it and serves no other. Blocking,
/// before the runtime starts, each step within [`CONNECT_TIMEOUT`].
#[cfg(feature = "tcp")]
fn connect_back(
    address: &str,
    token: &str,
    pin: Option<&str>,
    proof: Option<&str>,
) -> std::io::Result<(OwnedFd, Option<ClientConnection>)> {
    use std::io::Write;
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in address.to_socket_addrs()? {
        let mut stream = match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(e) => {
                last = e;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        // A parent whose host is gone is noticed (the connection fails)
        // within 25 s (`os::KEEPALIVE_IDLE`), even when nothing is being sent:
        // the worker then exits as for a parent gone.
        os::keep_alive(stream.as_fd())?;
        let Some(pin) = pin else {
            stream.write_all(&auth_frame(token, proof.is_some()))?;
            if let Some(proof) = proof {
                stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
                await_proof(&mut stream, proof)?;
                stream.set_read_timeout(None)?;
            }
            return Ok((stream.into(), None));
        };
        // (Without the `tls` feature, `take` has refused a pin already.)
        #[cfg(not(feature = "tls"))]
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, format!("TLS ({pin})")));
        #[cfg(feature = "tls")]
        {
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
            let tls = crate::wire::tls::connect(&mut stream, pin, &auth_frame(token, false))?;
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            return Ok((stream.into(), Some(tls)));
        }
    }
    Err(last)
}

/// The first thing a remote worker sends: its token (`wsframe::auth_frame`),
/// asking the parent to prove itself if `ask`.
#[cfg(feature = "tcp")]
fn auth_frame(token: &str, ask: bool) -> Vec<u8> {
    let flags = if ask { crate::handoff::AUTH_ASKS_PROOF } else { 0 };
    crate::wire::wsframe::auth_frame(flags, token)
}

/// Reads the parent's first frame, which must be an `Auth` message
/// holding `proof`: whoever holds the port without it (another user who
/// bound it once the parent gave this launch up) learns the token, which
/// is worth nothing then, and is served nothing.
#[cfg(feature = "tcp")]
fn await_proof(stream: &mut std::net::TcpStream, proof: &str) -> std::io::Result<()> {
    use std::io::Read;
    let refused = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the peer did not prove itself this worker's parent: {why}"),
        )
    };
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    // Unmasked, from a server, and short: a proof is 64 characters.
    let len = usize::from(head[1]);
    if head[0] != 0x82 || len > 125 {
        return Err(refused("its first frame is no proof"));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    match payload.as_slice() {
        [kind, 0, said @ ..]
            if *kind == crate::wire::envelope::Kind::Auth as u8
                && crate::handoff::same(said, proof.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(refused("another proof than this launch's")),
    }
}

/// How long a remote worker tries to reach its parent.
#[cfg(feature = "tcp")]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pid of the process that made the socket `fd` (`SO_PEERCRED`); `fd`
/// is open (its `fstat` said so).
fn peer_pid(fd: RawFd) -> Option<i32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    // SAFETY: `fd` is open, and outlives this borrow.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let pid = getsockopt(&sock, PeerCredentials).ok()?.pid();
    (pid > 0).then_some(pid)
}

/// Whether `pid` is an ancestor of this process: its parent, or the parent
/// of a wrapper in between.
fn is_ancestor(pid: i32) -> bool {
    let parent = std::os::unix::process::parent_id() as i32;
    handoff::descends_from(parent, pid)
}

/// The parent process, watched for its exit.
pub(crate) struct ParentWatch {
    pid: i32,
    /// Readable once the parent has exited (all its threads).
    pidfd: Option<OwnedFd>,
    /// Our parent when we started, for the fallback without a pidfd.
    ppid: i32,
}

impl ParentWatch {
    fn open(pid: i32) -> ParentWatch {
        let pidfd = os::pidfd_open(pid);
        let ppid = std::os::unix::process::parent_id() as i32;
        // The parent may have died between `is_ancestor` and the open: a
        // pid reused since would be watched for nothing. Only then has our
        // own parent changed.
        let watch = ParentWatch { pid, pidfd, ppid };
        if !is_ancestor(pid) {
            return ParentWatch { pidfd: None, ppid: -1, ..watch };
        }
        watch
    }

    /// Whether the parent has exited, waiting up to `wait` for it to.
    pub(crate) fn gone_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.gone_now() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.pidfd {
                // Interrupted (the parent's death signal is SIGTERM) or not:
                // look again until the deadline.
                Some(fd) => {
                    os::ready(&[fd.as_fd()], PollFlags::POLLIN, left);
                }
                None => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
    }

    fn gone_now(&self) -> bool {
        match &self.pidfd {
            Some(fd) => os::readable_now(fd.as_fd()),
            // Without a pidfd: reparented, or (if the parent was not ours
            // directly) no longer there.
            None => {
                std::os::unix::process::parent_id() as i32 != self.ppid || !os::exists(self.pid)
            }
        }
    }
}

/// A thread that waits for the parent to exit, gives the runtime
/// [`ORPHAN_GRACE`] to finish `on_close`, then kills the worker's process
/// group: the backstop for a worker stuck in a handler when its parent
/// dies. It never acts while the parent lives, so a worker that closes
/// cleanly may take as long as it needs to tear down.
pub(crate) fn start_watchdog(parent: Arc<ParentWatch>, sock: &OwnedFd) -> std::io::Result<()> {
    // Without a pidfd, the socket's hang-up is the first sign.
    let hangup = match parent.pidfd {
        Some(_) => None,
        None => Some(sock.try_clone()?),
    };
    std::thread::Builder::new().name("actix-webworker-watchdog".into()).spawn(move || {
        match (&parent.pidfd, &hangup) {
            (Some(fd), _) => while !os::ready(&[fd.as_fd()], PollFlags::POLLIN, Duration::MAX) {},
            (None, Some(sock)) => {
                while !os::ready(&[sock.as_fd()], os::POLLRDHUP, Duration::MAX) {}
                while !parent.gone_within(Duration::from_secs(3600)) {}
            }
            (None, None) => return,
        }
        std::thread::sleep(ORPHAN_GRACE);
        os::kill_own_group();
    })?;
    Ok(())
}
