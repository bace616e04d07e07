//! Options for starting a worker: the `new Worker(path, opts)` of the
//! original, as a builder.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use actix::{Addr, Recipient};

use super::events::WorkerEvent;
use super::options::{Limits, Options, ResourceLimits};
use super::output::Output;
use super::sink::{EventSink, WorkerEvents};
use super::worker::Worker;
use crate::error::SpawnError;
use crate::protocol::Protocol;
use crate::protocol::Request;
use crate::session::answers::Handlers;
use crate::session::data::message;
use crate::session::declared::table;
use crate::supervise::RestartPolicy;

impl<P: Protocol> Worker<P> {
    /// Options for a new worker speaking protocol `P`.
    pub fn builder() -> WorkerBuilder<P> {
        WorkerBuilder::new()
    }
}

/// Builds and starts a [`Worker`] (get one from [`Worker::builder`]), or a
/// pool of them (from [`WorkerPool::builder`](crate::WorkerPool::builder)):
/// every option of one worker is an option of each member of a pool. The
/// original's `new Worker(path, { args })` is [`program`](Self::program)
/// and [`args`](Self::args); by default the worker is this executable
/// again, run for the [`entry`](Self::entry) it names.
///
/// ```no_run
/// use std::time::Duration;
///
/// use actix_webworker::{Protocol, Restart, RestartPolicy, Worker};
///
/// struct Echo;
/// impl Protocol for Echo {
///     type ToWorker = String;
///     type FromWorker = String;
/// }
///
/// # async fn start() -> Result<(), actix_webworker::SpawnError> {
/// let (worker, mut events) = Worker::<Echo>::builder()
///     .entry("echo")                                   // run_if_worker's entry
///     .env("RUST_LOG", "info")
///     .restart(RestartPolicy::default().restart(Restart::OnFailure))
///     .shutdown_timeout(Duration::from_secs(2))
///     .start_with_events()?;                           // or .events(recipient).start()
/// # let _ = (worker, events.next().await);
/// # Ok(())
/// # }
/// ```
pub struct WorkerBuilder<P: Protocol, K = Single<P>> {
    name: Option<String>,
    pub(super) options: Options,
    /// The worker's requests the parent answers, until started.
    pub(super) handlers: Handlers,
    /// The worker's data, encoded at the start with the final codec.
    data: Option<EncodeData>,
    /// What only one worker, or only a pool, has.
    kind: K,
    _protocol: PhantomData<fn() -> P>,
}

/// Encodes a worker's data with a connection's codec, within its largest
/// message.
type EncodeData =
    Box<dyn FnOnce(crate::protocol::Codec, usize) -> Result<bytes::Bytes, SpawnError>>;

/// What a builder of one worker has beyond the options every worker has:
/// where its events go ([`events`](WorkerBuilder::events) or
/// [`start_with_events`](WorkerBuilder::start_with_events)). Never named in
/// your code: it is the default second parameter of [`WorkerBuilder`],
/// which [`Worker::builder`](crate::Worker::builder) returns; a pool's
/// builder has [`Pooled`](crate::Pooled) there instead.
pub struct Single<P: Protocol> {
    events: Option<Recipient<WorkerEvent<P>>>,
}

impl<P: Protocol> Default for Single<P> {
    fn default() -> Self {
        Single { events: None }
    }
}

impl<P: Protocol, K: Default> WorkerBuilder<P, K> {
    pub(crate) fn new() -> Self {
        WorkerBuilder {
            name: None,
            options: Options::default(),
            handlers: Handlers::new(|| None),
            data: None,
            kind: K::default(),
            _protocol: PhantomData,
        }
    }
}

impl<P: Protocol, K> WorkerBuilder<P, K> {
    /// What only this kind of builder has (a pool's options).
    pub(crate) fn kind_mut(&mut self) -> &mut K {
        &mut self.kind
    }

    /// The worker entry to run, registered in the child with
    /// [`run_if_worker`](crate::run_if_worker). Not needed when the program
    /// is a worker binary that calls [`run_worker`](crate::run_worker).
    pub fn entry(mut self, entry: impl Into<String>) -> Self {
        self.options.spec.entry = Some(entry.into());
        self
    }

    /// The program to run (the original's `path`). Default: the current
    /// executable, so one binary can be both parent and worker.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.options.spec.program = Some(program.into());
        self
    }

    /// Arguments given to the program (the original's `args`). The worker
    /// entry and the socket travel in the environment, so arguments can
    /// wrap the worker, e.g. `program("gdb").args(["-batch", "-ex", "run", "--args", exe])`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.options.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the worker.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.options.spec.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable from the worker's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.options.spec.env.push((key.into(), None));
        self
    }

    /// Starts the worker from an empty environment: it sees only what
    /// [`env`](Self::env) sets (and the two variables the runtime needs).
    pub fn env_clear(mut self) -> Self {
        self.options.spec.env_clear = true;
        self.options.spec.env.clear();
        self
    }

    /// The worker's working directory. Default: the parent's.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.spec.cwd = Some(dir.into());
        self
    }

    /// Where the worker's standard output goes (default: the parent's).
    pub fn stdout(mut self, output: Output) -> Self {
        self.options.spec.stdout = output;
        self
    }

    /// Where the worker's standard error goes (default: the parent's).
    pub fn stderr(mut self, output: Output) -> Self {
        self.options.spec.stderr = output;
        self
    }

    /// Captures both standard output and error line by line into `tracing`
    /// events tagged with the worker's name and pid (see [`Output::Capture`]).
    pub fn capture_output(self) -> Self {
        self.stdout(Output::Capture).stderr(Output::Capture)
    }

    /// Resource limits for the worker process (address space, CPU seconds,
    /// open files), set with `setrlimit` before its program starts. A worker
    /// over its memory limit fails to allocate (a Rust program aborts) and
    /// its exit is reported like any other.
    pub fn resource_limits(mut self, limits: ResourceLimits) -> Self {
        self.options.spec.rlimits = limits;
        self
    }

    /// A name for the worker, carried by its events. Default: the entry, or
    /// the program's file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Size limits; see [`Limits`] for the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.options.limits = limits;
        self
    }

    /// How long `terminate` waits for the worker's `on_close` and exit before
    /// sending SIGTERM to its process group (default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.options.grace = grace;
        self
    }

    /// How long a worker has to run `on_close` and exit when its parent
    /// lets go of it without a terminate (default 1 s): the actix System
    /// stops, or the last address of the worker is dropped. Then its
    /// process group gets SIGTERM, and SIGKILL after the kill delay. When
    /// the System stops, every worker is reaped before `System::run` (or
    /// the `main` of `#[actix::main]`) returns.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// How long after SIGTERM a worker still running gets SIGKILL
    /// (default 500 ms).
    pub fn kill_delay(mut self, delay: Duration) -> Self {
        self.options.kill_delay = delay;
        self
    }

    /// How long the worker process may take to start and shake hands
    /// (default 10 s). One that has not by then (stuck before
    /// `run_if_worker`, or not a worker at all) is reported with
    /// [`WireError::HandshakeTimeout`](crate::WireError::HandshakeTimeout),
    /// killed, and restarted as the policy says; requests waiting for it
    /// fail with its exit.
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.options.handshake_timeout = limit;
        self
    }

    /// How the worker's connection is made (default
    /// [`Transport::Local`](crate::Transport::Local), an inherited
    /// socketpair). `Transport::plain_tcp` (the `tcp` feature) and
    /// `Transport::tls` have the worker connect back over TCP with a
    /// one-time token, for a
    /// worker on another host started through a
    /// [`launcher`](Self::launcher). Everything else (restarts,
    /// `on_close`, terminate, exit statuses, requests) works the same.
    pub fn transport(mut self, transport: super::options::Transport) -> Self {
        self.options.spec.transport = transport;
        self
    }

    /// A command that starts the worker for the parent, such as
    /// `["ssh", "host", "--"]`, `["srun", "-N1", "--"]` or
    /// `["kubectl", "exec", "-i", "pod", "--"]`: it is run with `env`, the
    /// worker's variables (`ACTIX_WEBWORKER_CONNECT`, `_ENTRY`,
    /// `_MAX_MESSAGE`, `_SECRETS=stdin`), then the program and its
    /// arguments appended, so that they reach a remote command through any
    /// launcher. The one-time token and the TLS pin are written to the
    /// launcher's stdin, never put in an argument or the environment: keep
    /// its stdin open (no `ssh -n`). The program must be there on the host
    /// the launcher reaches (for this program itself, the default, the path
    /// of its executable here). The launcher's exit is the worker's: `ssh`
    /// exits with the remote command's code.
    ///
    /// A shell goes in as `["sh", "-c", "exec \"$@\"", "sh"]` (a script
    /// that runs what follows it). A launcher that ends in a shell's `-c`
    /// (`["sh", "-c"]`) would run only the first word of the worker's
    /// command: `start()` refuses it with
    /// [`SpawnError::SwallowingLauncher`](crate::SpawnError::SwallowingLauncher).
    pub fn launcher<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.options.spec.launcher = command.into_iter().map(Into::into).collect();
        self
    }

    /// Heartbeats: when nothing has come from the worker for `every`, the
    /// parent pings it (it answers at once); when nothing has come for
    /// `lost_after`, pings unanswered, it is taken for lost:
    /// [`WireError::Silent`](crate::WireError::Silent), its process (or
    /// launcher) killed, and restarted as the policy says. For remote
    /// workers, whose connection can go silent without closing (a host
    /// gone, a network cut); a local worker's socket tells at once. Off by
    /// default. Pings are answered by the worker's runtime on the actor's
    /// thread: a handler that blocks that thread for longer than
    /// `lost_after` (rather than awaiting), or a message that takes longer
    /// than that to arrive whole, looks like silence.
    pub fn heartbeat(mut self, every: Duration, lost_after: Duration) -> Self {
        let lost_after = lost_after.max(every);
        self.options.heartbeat = Some(super::options::Heartbeat { every, lost_after });
        self
    }

    /// How payloads are written on the worker's connection (default
    /// [`Codec::Bincode`](crate::Codec::Bincode)). [`Codec::Json`](crate::Codec::Json)
    /// is for workers written in another language, which read and write
    /// JSON without our Rust types (see `PROTOCOL.md` and `python/`). The
    /// parent names it in its hello, and a Rust worker follows.
    pub fn codec(mut self, codec: crate::protocol::Codec) -> Self {
        self.options.codec = codec;
        self
    }

    /// When and how often the worker is restarted after it exits (default:
    /// on failure, at most 5 times in 60 s, backoff from 100 ms to 5 s; see
    /// [`RestartPolicy`]). `RestartPolicy::never()` turns restarts off.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.options.policy = policy;
        self
    }

    /// Answers the worker's requests of type `R` with `recipient` (an actor of
    /// the parent): the worker's [`Parent::ask`](crate::Parent::ask) gets
    /// the typed answer.
    pub fn serve<R: Request>(mut self, recipient: Recipient<R>) -> Self {
        let tag = crate::session::declared::answered_tag::<P, R>();
        self.handlers.insert::<R>(tag, move |req, mut reply| {
            // Cancelled by the worker: the wait stops, nothing is sent.
            let (answer, abort) = futures_util::future::abortable(recipient.send(req));
            reply.on_cancel(move || abort.abort());
            crate::session::spawn_boxed(async move {
                // Ok(Err): the serving actor is gone; the dropped reply says so.
                if let Ok(Ok(answer)) = answer.await {
                    reply.answer(&answer);
                }
            });
        });
        self
    }

    /// The worker's data (the `workerData` of Node): a typed value the
    /// worker reads with [`Parent::data`](crate::Parent::data), typically
    /// as its actor is made. Each worker started gets it, restarted ones
    /// and every member of a pool too. It goes over the worker's
    /// connection right after the handshake, never in its arguments or
    /// environment (which other users of the host can read), written once
    /// with the connection's codec; `start()` fails with
    /// [`SpawnError::Data`] when it is larger than the largest message
    /// ([`Limits::max_message_size`]).
    ///
    /// ```no_run
    /// # use actix_webworker::{Protocol, Worker};
    /// # struct Calc;
    /// # impl Protocol for Calc { type ToWorker = (); type FromWorker = (); }
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Config { scale: u32, model: String }
    ///
    /// # fn start() -> Result<(), actix_webworker::SpawnError> {
    /// let config = Config { scale: 3, model: "small".into() };
    /// let worker = Worker::<Calc>::builder().entry("calc").data(config).start()?;
    /// // In the worker: `let config: Config = parent.data()?;`
    /// # Ok(())
    /// # }
    /// ```
    pub fn data<T>(mut self, value: T) -> Self
    where
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.data = Some(Box::new(move |codec, max| message(&value, codec, max)));
        self
    }

    /// The options every worker is built from, checked and completed: a
    /// pool builds each member from a copy.
    pub(crate) fn into_options(mut self) -> Result<(Options, K), SpawnError> {
        self.options.limits = self.options.limits.clamped();
        self.options.spec.max_message_size = self.options.limits.max_message_size;
        self.options.name = self.display_name().into();
        let unserved = table::<P>()?.unanswered(true, |tag| self.handlers.answers(tag));
        if !unserved.is_empty() {
            return Err(SpawnError::Unserved(unserved));
        }
        self.options.handlers = std::rc::Rc::new(self.handlers);
        let (codec, max) = (self.options.codec, self.options.limits.max_message_size);
        self.options.data = self.data.map(|encode| encode(codec, max)).transpose()?;
        if let Some(n) = self.options.spec.rlimits.open_files {
            if n < ResourceLimits::MIN_OPEN_FILES {
                return Err(SpawnError::Option(format!(
                    "open_files({n}) is below the {} descriptors a worker needs",
                    ResourceLimits::MIN_OPEN_FILES
                )));
            }
        }
        Ok((self.options, self.kind))
    }

    fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if let Some(entry) = &self.options.spec.entry {
            return entry.clone();
        }
        self.options
            .spec
            .program
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "worker".to_owned())
    }
}

impl<P: Protocol> WorkerBuilder<P> {
    /// Where the worker's events go: online, messages, errors, exit.
    pub fn events(mut self, recipient: Recipient<WorkerEvent<P>>) -> Self {
        self.kind.events = Some(recipient);
        self
    }

    /// Starts the worker process and its actor. Messages sent to the
    /// address before the worker is up are queued and delivered in order.
    ///
    /// Must be called inside a running actix System.
    pub fn start(self) -> Result<Addr<Worker<P>>, SpawnError> {
        let events = match &self.kind.events {
            Some(recipient) => EventSink::Recipient(recipient.clone()),
            None => EventSink::Log,
        };
        self.start_into(events)
    }

    /// [`start`](Self::start), with the worker's events as a stream
    /// (instead of any recipient given to [`events`](Self::events)): for
    /// tests and small programs that would rather not write an actor.
    ///
    /// ```no_run
    /// # use actix_webworker::{Event, Protocol, Worker, WorkerAddrExt};
    /// # struct P; impl Protocol for P { type ToWorker = (); type FromWorker = (); }
    /// # async fn f() {
    /// let (worker, mut events) = Worker::<P>::builder().entry("e").start_with_events().unwrap();
    /// while let Some(event) = events.next().await {
    ///     println!("{}: {:?}", event.name, event.kind);
    /// }
    /// # }
    /// ```
    pub fn start_with_events(self) -> Result<(Addr<Worker<P>>, WorkerEvents<P>), SpawnError> {
        let (sink, events) = super::sink::stream();
        Ok((self.start_into(sink)?, events))
    }

    fn start_into(self, events: EventSink<P>) -> Result<Addr<Worker<P>>, SpawnError> {
        let (options, _) = self.into_options()?;
        Worker::start_with(options, events)
    }
}
