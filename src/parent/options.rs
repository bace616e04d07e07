//! Everything a worker is started with: what to run ([`CommandSpec`]),
//! the size limits of its connection ([`Limits`], [`WhenFull`]), the
//! resource limits of its process ([`ResourceLimits`]), and the rest the
//! `Worker` actor is built from ([`Options`]). The builder fills them in.

use std::ffi::OsString;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::output::Output;
use crate::session::answers::Handlers;
use crate::supervise::RestartPolicy;

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
    pub transport: Transport,
    /// The command that starts the worker for us (`ssh host --`), the
    /// worker's program and arguments after it; empty: started directly.
    pub launcher: Vec<OsString>,
    pub start_method: super::start_method::StartMethod,
}

/// When a worker is pinged, and when it is taken for lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub every: Duration,
    pub lost_after: Duration,
}

/// How a worker's connection is made (see
/// [`WorkerBuilder::transport`](crate::WorkerBuilder::transport)): a
/// socketpair the worker inherits (the default), or TCP, in the clear or
/// over TLS, for a worker on another host that connects back and presents
/// a one-time token (with the crate's `tcp` and `tls` features).
///
/// ```no_run
/// use actix_webworker::{Protocol, Transport, Worker};
///
/// struct Calc;
/// impl Protocol for Calc {
///     type ToWorker = u64;
///     type FromWorker = u64;
/// }
///
/// # #[cfg(feature = "tls")]
/// # fn start() -> Result<(), actix_webworker::SpawnError> {
/// // A worker on `gpu-1`, started over ssh, connecting back over TLS to
/// // this host (the certificate made for this run, its SHA-256 pinned).
/// let listen = "0.0.0.0:0".parse().unwrap();
/// let worker = Worker::<Calc>::builder()
///     .entry("calc")
///     .transport(Transport::tls(listen).connect_to("head-node.example"))
///     .launcher(["ssh", "gpu-1", "--"])
///     .start()?;
/// # let _ = worker;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A UNIX socketpair the worker inherits (the default): no socket on
    /// disk or on the network, descriptors and shared buffers cross, and
    /// each side checks the other's process.
    #[default]
    Local,
    /// The worker connects back over TCP, in the clear, and presents a
    /// one-time token made for its launch. For a worker on another host
    /// (started through a [`launcher`](crate::WorkerBuilder::launcher)) on
    /// a network you trust: nothing is encrypted. Descriptors cannot
    /// cross; shared buffers go as bytes.
    #[cfg(feature = "tcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
    PlainTcp {
        /// Where the parent listens for this worker (port 0: any free
        /// port, chosen at each launch).
        listen: std::net::SocketAddr,
        /// The host the worker is told to connect to; default: the listen
        /// address's IP (set it when that is `0.0.0.0`, or behind NAT).
        connect_to: Option<String>,
    },
    /// As [`PlainTcp`](Self::PlainTcp), over TLS (rustls): the worker
    /// trusts exactly the parent's certificate, whose SHA-256 it is given
    /// at launch with its token. The certificate is one made for this run
    /// (self-signed), or the one in `cert`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    Tls {
        /// Where the parent listens.
        listen: std::net::SocketAddr,
        /// The host the worker is told to connect to.
        connect_to: Option<String>,
        /// PEM files of the certificate and its private key; `None`: a
        /// self-signed certificate made once per process.
        cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    },
}

impl Transport {
    /// [`Transport::PlainTcp`] listening on `listen` (`127.0.0.1:0` for
    /// workers on this machine, `0.0.0.0:0` for others).
    #[cfg(feature = "tcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
    pub fn plain_tcp(listen: std::net::SocketAddr) -> Self {
        Transport::PlainTcp { listen, connect_to: None }
    }

    /// [`Transport::Tls`] listening on `listen`, with a self-signed
    /// certificate made for this run.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(listen: std::net::SocketAddr) -> Self {
        Transport::Tls { listen, connect_to: None, cert: None }
    }

    /// [`Transport::Tls`] with the certificate and private key of these
    /// PEM files.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_with_cert(
        listen: std::net::SocketAddr,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        Transport::Tls { listen, connect_to: None, cert: Some((cert.into(), key.into())) }
    }

    /// The host a TCP worker connects to, when it is not the listen
    /// address's IP.
    #[cfg(feature = "tcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
    pub fn connect_to(self, host: impl Into<String>) -> Self {
        match self {
            Transport::PlainTcp { listen, .. } => {
                Transport::PlainTcp { listen, connect_to: Some(host.into()) }
            }
            #[cfg(feature = "tls")]
            Transport::Tls { listen, cert, .. } => {
                Transport::Tls { listen, connect_to: Some(host.into()), cert }
            }
            local => local,
        }
    }

    /// Whether the connection can carry descriptors.
    pub(crate) fn carries_fds(&self) -> bool {
        matches!(self, Transport::Local)
    }
}

/// Resource limits set (`setrlimit`) in the worker before its program
/// starts. `None` leaves the parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceLimits {
    /// Address space, in bytes (`RLIMIT_AS`, soft and hard): allocations
    /// past it fail, and a Rust program aborts. Every thread's stack and
    /// every glibc malloc arena (64 MiB reserved each) count against it, so
    /// leave room beyond the heap you expect.
    pub address_space: Option<u64>,
    /// CPU time, in seconds (`RLIMIT_CPU`): at this many seconds the worker
    /// gets SIGXCPU, runs `on_close` and exits with
    /// [`exit_code::CPU_LIMIT`](crate::exit_code::CPU_LIMIT) (152); one
    /// second later (the hard limit) the kernel kills it with SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Open descriptors (`RLIMIT_NOFILE`, soft and hard), at least
    /// [`MIN_OPEN_FILES`](Self::MIN_OPEN_FILES): the runtime itself needs
    /// some (its socket, its event loop, signal handling), and a smaller
    /// limit is refused by `start()`.
    pub open_files: Option<u64>,
}

impl ResourceLimits {
    /// The smallest [`open_files`](Self::open_files) limit a worker starts
    /// with.
    pub const MIN_OPEN_FILES: u64 = 32;

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

/// Size limits of one worker's connection, with their defaults.
///
/// Set them with the setters, which keep each within its range; a value
/// set on a field directly beyond its range is brought back into it when
/// the worker starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest message, in bytes, either side may send (default 64 MiB,
    /// at most 1 GiB). A larger post is refused with
    /// [`WireError::TooLarge`](crate::WireError::TooLarge); a larger incoming
    /// message is refused before its body is read.
    pub max_message_size: usize,
    /// How many messages may wait in the outgoing queue (default 65,536).
    /// Messages wait there until the handshake is done, while the socket is
    /// busy, and while a supervised worker restarts. What happens at the
    /// bound is [`when_full`](Self::when_full)'s choice.
    pub max_queued_messages: usize,
    /// How many bytes may wait in the outgoing queue (default 16 MiB; a
    /// single message larger than that is taken when the queue is empty).
    /// A deeper queue absorbs longer bursts but only adds memory once the
    /// worker is the bottleneck, and slows large posts down: their buffers
    /// stop being reused.
    ///
    /// Beyond the queue, the transport holds what is being written: the
    /// messages of the batch being framed (in tungstenite's write buffer and
    /// in the socket layer, which takes what the kernel does not at once)
    /// and the kernel's socket buffer.
    pub max_queued_bytes: usize,
    /// What a post or request meets when the queue is full (default
    /// [`WhenFull::Wait`]).
    pub when_full: WhenFull,
    /// How many of the worker's events the events recipient may have left
    /// unhandled before the worker is read no further (default 1,024, at
    /// least 4): a worker that posts faster than the recipient handles its
    /// messages is held back, its own writes waiting, instead of filling
    /// the parent's memory. Requests the worker makes of the parent, and
    /// their answers waiting to be written, are held to
    /// [`max_queued_messages`](Self::max_queued_messages) and
    /// [`max_queued_bytes`](Self::max_queued_bytes) the same way: in
    /// number, and in bytes (the requests being answered and the answers
    /// waiting to be written).
    pub event_window: usize,
    /// How many bytes the worker's unhandled events may hold together
    /// (default 64 MiB, at least 1): their payloads as received, and their
    /// shared buffers (each file once per message). Beyond, the worker is
    /// read no further, as beyond [`event_window`](Self::event_window).
    /// One event is always taken, however large (within
    /// [`max_message_size`](Self::max_message_size) and
    /// [`max_shared_bytes`](Self::max_shared_bytes)), so a worker may make
    /// the parent hold at most this or one message, whichever is more.
    pub event_window_bytes: usize,
    /// How many descriptors the worker's unhandled events may hold together
    /// (default 256, at least 1): those sent with its messages and their
    /// shared buffers'. One event is always taken.
    pub event_window_fds: usize,
    /// The most bytes the shared buffers of one message from the worker
    /// may hold together (default 128 MiB): a file named several times in
    /// one message counts once. A message over it fails with
    /// [`WireError::SharedBuffer`](crate::WireError::SharedBuffer), and
    /// the connection goes on (messages to the worker: not bounded). It
    /// bounds too what a bincode message's values take decoded beyond its
    /// bytes: over it, [`WireError::Decode`](crate::WireError::Decode).
    pub max_shared_bytes: usize,
    /// How many bytes the messages received from all workers of this
    /// process may hold together (default 1 GiB): payloads and shared
    /// buffers, from when a message is read until it is dropped (handled,
    /// or for as long as the application keeps it). At the limit, a worker
    /// with events of its own still unhandled is read no further; one
    /// whose events have all been handled still takes one more.
    pub events_total_bytes: usize,
    /// How many descriptors the messages received from all workers of
    /// this process may hold together (default 4,096), as
    /// [`events_total_bytes`](Self::events_total_bytes).
    pub events_total_fds: usize,
}

/// What happens when a worker's outgoing queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Back-pressure: a message that does not fit waits, in the `Worker`
    /// actor, until the queue has room, and so does everything sent after
    /// it; `send(..).await` resolves once its message is queued. Nothing is
    /// lost or reordered, and the actor itself goes on: terminate, exits,
    /// restarts, timeouts and `Join` are never held up.
    #[default]
    Wait,
    /// Refuse: the post or request fails at once with
    /// [`WorkerError::QueueFull`](crate::WorkerError::QueueFull) (and an
    /// [`Event::Refused`](crate::Event::Refused)).
    Fail,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: crate::handoff::DEFAULT_MAX_MESSAGE,
            max_queued_messages: 65_536,
            max_queued_bytes: 16 << 20,
            when_full: WhenFull::Wait,
            event_window: 1024,
            event_window_bytes: 64 << 20,
            event_window_fds: 256,
            max_shared_bytes: 128 << 20,
            events_total_bytes: 1 << 30,
            events_total_fds: 4096,
        }
    }
}

impl Limits {
    /// Sets [`max_message_size`](Self::max_message_size), capped at 1 GiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.min(crate::wire::codec::DECODE_LIMIT);
        self
    }

    /// Sets [`max_queued_messages`](Self::max_queued_messages) (at least 1).
    pub fn max_queued_messages(mut self, n: usize) -> Self {
        self.max_queued_messages = n.max(1);
        self
    }

    /// Sets [`when_full`](Self::when_full).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Sets [`max_queued_bytes`](Self::max_queued_bytes) (at least 1).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    /// Sets [`event_window`](Self::event_window) (at least 4).
    pub fn event_window(mut self, events: usize) -> Self {
        self.event_window = events.max(4);
        self
    }

    /// Sets [`event_window_bytes`](Self::event_window_bytes) (at least 1).
    pub fn event_window_bytes(mut self, bytes: usize) -> Self {
        self.event_window_bytes = bytes.max(1);
        self
    }

    /// Sets [`event_window_fds`](Self::event_window_fds) (at least 1).
    pub fn event_window_fds(mut self, fds: usize) -> Self {
        self.event_window_fds = fds.max(1);
        self
    }

    /// Sets [`events_total_bytes`](Self::events_total_bytes) (at least 1).
    pub fn events_total_bytes(mut self, bytes: usize) -> Self {
        self.events_total_bytes = bytes.max(1);
        self
    }

    /// Sets [`events_total_fds`](Self::events_total_fds) (at least 1).
    pub fn events_total_fds(mut self, fds: usize) -> Self {
        self.events_total_fds = fds.max(1);
        self
    }

    /// Sets [`max_shared_bytes`](Self::max_shared_bytes).
    pub fn max_shared_bytes(mut self, bytes: usize) -> Self {
        self.max_shared_bytes = bytes;
        self
    }

    /// Every field brought within its range.
    pub(crate) fn clamped(self) -> Self {
        self.max_message_size(self.max_message_size)
            .max_queued_messages(self.max_queued_messages)
            .max_queued_bytes(self.max_queued_bytes)
            .event_window(self.event_window)
            .event_window_bytes(self.event_window_bytes)
            .event_window_fds(self.event_window_fds)
            .events_total_bytes(self.events_total_bytes)
            .events_total_fds(self.events_total_fds)
    }

    /// The window through which the worker's events pace it.
    pub(crate) fn window(&self) -> super::sink::Window {
        super::sink::Window {
            events: self.event_window.max(4) as u64,
            bytes: self.event_window_bytes.max(1) as u64,
            fds: self.event_window_fds.max(1) as u64,
            total: crate::held::Holds {
                bytes: self.events_total_bytes.max(1),
                fds: self.events_total_fds.max(1),
            },
        }
    }
}

/// What the `Worker` actor is built from (a pool builds each member from a
/// copy).
#[derive(Clone)]
pub(crate) struct Options {
    /// The name its events carry.
    pub name: Arc<str>,
    pub spec: CommandSpec,
    pub limits: Limits,
    pub grace: Duration,
    pub kill_delay: Duration,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How payloads are written on its connections.
    pub codec: crate::protocol::Codec,
    /// Ping the worker after this long without a word from it, and take
    /// it for lost after that long (see `WorkerBuilder::heartbeat`).
    pub heartbeat: Option<Heartbeat>,
    /// The requests of the worker's the parent answers (shared by the
    /// members of a pool).
    pub handlers: Rc<Handlers>,
    /// The worker's data message, encoded once (see `WorkerBuilder::data`).
    pub data: Option<bytes::Bytes>,
    pub policy: RestartPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "worker".into(),
            spec: CommandSpec::default(),
            limits: Limits::default(),
            grace: Duration::from_secs(5),
            kill_delay: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(1),
            codec: crate::protocol::Codec::default(),
            heartbeat: None,
            handlers: Rc::new(Handlers::new(|| None)),
            data: None,
            policy: RestartPolicy::default(),
        }
    }
}
