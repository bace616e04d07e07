//! What the tests share: the test protocol, the worker they run, and helpers
//! that wait on events with generous timeouts.

use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    Entry, ErrorReport, Event, ExitStatus, Parent, Protocol, Received, Requests, RestartPolicy,
    Worker, WorkerActor, WorkerBuilder, WorkerEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Cmd {
    Echo(u64),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Post `Seq(0..n)` back.
    Flood(u64),
    /// `std::process::exit(code)`.
    Exit(i32),
    Panic(String),
    /// Block the worker's thread for this many ms.
    Block(u64),
    Pid,
    /// Panic from a timer after this many ms.
    PanicLater(u64),
    Close,
    /// Post a blob of this many bytes back; say `Refused` if that fails.
    BlobBack(usize),
    /// `println!` this.
    Print(String),
    /// Write this text to the descriptor sent along.
    WriteFd(String),
    /// Read the descriptor sent along to its end; answer `Content`.
    ReadFd,
    /// Make a pipe, write this text into it, send its read end back.
    SendPipe(String),
    /// Accept one connection on the listening socket sent along, write
    /// "hi from the worker" to it, answer `Accepted`.
    Accept,
    /// Check that a descriptor came along exactly when `n % 3 == 0`, reading
    /// `n` from it; answer `Tagged`, with a pipe holding `n` when `n % 2 == 0`.
    Tagged(u64),
    /// Answer `Count` with the worker's open descriptors.
    FdCount,
    /// Write through a null pointer.
    Segfault,
    Abort,
    /// Ignore SIGTERM, then block forever.
    IgnoreTermAndHang,
    /// Start `sleep 600` and answer `Pid` with its pid.
    SpawnGrandchild,
    /// Answer `Lines` with where each open descriptor points.
    ListFds,
    /// Answer `Lines` with `KEY=VALUE` for the whole environment.
    Env,
    /// Allocate and touch this many bytes; answer `Count` with it.
    Alloc(usize),
    /// Answer `Echo(n)`; the bytes are ballast.
    Padded(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// Spin on a thread of its own, for ever (the actor stays responsive).
    BurnCpu,
    /// Answer `Busy`, then block the worker's thread for this many ms (on
    /// the next turn, once the answer is written).
    Busy(u64),
    /// Keep the descriptor sent along; `on_close` writes "closed <pid>" to
    /// it. Answers `Count(0)`.
    NoteOnClose,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    Echo(u64),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    Seq(u64),
    Pid(u32),
    Closing,
    /// The worker saw an `Echo` out of order: expected, got.
    OutOfOrder(u64, u64),
    /// A post from the worker was refused, with the error's text.
    Refused(String),
    /// The worker's `on_error` handled this panic message.
    Handled(String),
    Content(String),
    Accepted,
    /// `n`, and whether its descriptor (or its absence) was right.
    Tagged(u64, bool),
    Count(usize),
    Lines(Vec<String>),
    /// The worker is about to block (`Cmd::Busy`).
    Busy,
}

// ---- requests -----------------------------------------------------------

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Sum(pub Vec<u64>);

/// Answered after `delay_ms`, by an async handler: answers come back out of
/// order.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct SlowEcho {
    pub n: u64,
    pub delay_ms: u64,
}

/// Its handler panics.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct PanicRequest;

/// Never answered.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Never;

/// How many `Echo` posts the worker has seen.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Seen;

/// The worker asks the parent `GetConfig(key)` and answers with that.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<String, String>")]
pub struct AskParent(pub String);

/// Served by the parent.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct GetConfig(pub String);

/// Registered by nobody.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Unregistered;

pub struct Test;

impl Protocol for Test {
    type ToWorker = Cmd;
    type FromWorker = Reply;
}

/// The same message types under another protocol version: a worker "built
/// from another version".
pub struct TestV2;

impl Protocol for TestV2 {
    type ToWorker = Cmd;
    type FromWorker = Reply;
    const VERSION: u32 = 2;
}

/// The line of the `panic!` in [`boom`].
pub const PANIC_LINE: u32 = line!() + 3;
#[inline(never)]
pub fn boom(msg: &str) -> ! {
    panic!("{msg}")
}

pub struct TestWorker<P: Protocol<FromWorker = Reply>> {
    pub parent: Parent<P>,
    next_echo: u64,
    panic_in_started: bool,
    /// How long dropping the actor takes.
    slow_drop: Duration,
    /// Where `on_close` says it ran.
    close_note: Option<std::fs::File>,
}

impl<P: Protocol<FromWorker = Reply>> TestWorker<P> {
    pub fn new(parent: Parent<P>) -> Self {
        TestWorker {
            parent,
            next_echo: 0,
            panic_in_started: false,
            slow_drop: Duration::ZERO,
            close_note: None,
        }
    }
}

impl<P: Protocol<FromWorker = Reply>> Drop for TestWorker<P> {
    fn drop(&mut self) {
        std::thread::sleep(self.slow_drop);
    }
}

impl<P: Protocol<FromWorker = Reply>> Actor for TestWorker<P> {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        if self.panic_in_started {
            boom("started panic");
        }
    }
}

impl<P: Protocol<ToWorker = Cmd, FromWorker = Reply>> Handler<Received<Cmd>> for TestWorker<P> {
    type Result = ();

    fn handle(&mut self, msg: Received<Cmd>, ctx: &mut Context<Self>) {
        let parent = &self.parent;
        let mut fds = msg.fds;
        match msg.data {
            Cmd::Echo(n) => {
                if n != self.next_echo {
                    let _ = parent.post(Reply::OutOfOrder(self.next_echo, n));
                }
                self.next_echo = n + 1;
                let _ = parent.post(Reply::Echo(n));
            }
            Cmd::Blob(b) => {
                let _ = parent.post(Reply::Blob(b));
            }
            Cmd::Flood(n) => {
                for i in 0..n {
                    parent.post(Reply::Seq(i)).expect("post");
                }
            }
            Cmd::Exit(code) => std::process::exit(code),
            Cmd::Panic(m) => boom(&m),
            Cmd::Block(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Cmd::Pid => {
                let _ = parent.post(Reply::Pid(std::process::id()));
            }
            Cmd::PanicLater(ms) => {
                ctx.run_later(Duration::from_millis(ms), |_, _| boom("late"));
            }
            Cmd::Close => parent.close(),
            Cmd::Print(text) => println!("{text}"),
            Cmd::WriteFd(text) => {
                let fd = fds.pop().expect("a descriptor");
                std::fs::File::from(fd).write_all(text.as_bytes()).expect("write");
            }
            Cmd::ReadFd => {
                let mut text = String::new();
                std::fs::File::from(fds.pop().expect("a descriptor"))
                    .read_to_string(&mut text)
                    .expect("read");
                let _ = parent.post(Reply::Content(text));
            }
            Cmd::SendPipe(text) => {
                let (r, mut w) = std::io::pipe().expect("pipe");
                w.write_all(text.as_bytes()).expect("write");
                drop(w);
                let _ = parent.post_with_fds(Reply::Content(String::new()), vec![r.into()]);
            }
            Cmd::Accept => {
                let listener = std::net::TcpListener::from(fds.pop().expect("a descriptor"));
                let (mut conn, _) = listener.accept().expect("accept");
                conn.write_all(b"hi from the worker").expect("write");
                let _ = parent.post(Reply::Accepted);
            }
            Cmd::Tagged(n) => {
                let ok = match (n % 3 == 0, fds.len()) {
                    (true, 1) => read_u64(fds.pop().expect("one fd")) == n,
                    (false, 0) => true,
                    _ => false,
                };
                if n % 2 == 0 {
                    let _ = parent.post_with_fds(Reply::Tagged(n, ok), vec![pipe_holding(n)]);
                } else {
                    let _ = parent.post(Reply::Tagged(n, ok));
                }
            }
            Cmd::Segfault => {
                // SAFETY: it is not; a real segfault is the point.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
            }
            Cmd::Abort => std::process::abort(),
            Cmd::IgnoreTermAndHang => {
                // SAFETY: setting a signal's disposition to ignore.
                unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Cmd::SpawnGrandchild => {
                let mut child =
                    std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
                let _ = parent.post(Reply::Pid(child.id()));
                // Reaped here when terminate takes the group down; the test
                // is that it does not outlive the worker.
                std::thread::spawn(move || child.wait());
            }
            Cmd::ListFds => {
                // Beyond stdio, and beyond the directory being read.
                let mut lines: Vec<String> = std::fs::read_dir("/proc/self/fd")
                    .expect("/proc/self/fd")
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok_and(|n| n > 2))
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .filter(|p| !p.starts_with("/proc/"))
                    .collect();
                lines.sort();
                let _ = parent.post(Reply::Lines(lines));
            }
            Cmd::Env => {
                let lines = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = parent.post(Reply::Lines(lines));
            }
            Cmd::Alloc(n) => {
                let v = vec![1u8; n];
                let _ = parent.post(Reply::Count(std::hint::black_box(v).len()));
            }
            Cmd::Padded(n, _) => {
                let _ = parent.post(Reply::Echo(n));
            }
            Cmd::BurnCpu => {
                std::thread::spawn(|| loop {
                    std::hint::black_box(0u64);
                });
            }
            Cmd::NoteOnClose => {
                self.close_note = fds.pop().map(std::fs::File::from);
                let _ = parent.post(Reply::Count(0));
            }
            Cmd::Busy(ms) => {
                let _ = parent.post(Reply::Busy);
                ctx.run_later(Duration::from_millis(1), move |_, _| {
                    std::thread::sleep(Duration::from_millis(ms));
                });
            }
            Cmd::FdCount => {
                let _ = parent.post(Reply::Count(open_fds()));
            }
            Cmd::BlobBack(len) => {
                if let Err(e) = parent.post(Reply::Blob(vec![7; len])) {
                    let _ = parent.post(Reply::Refused(e.to_string()));
                }
            }
        }
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<Sum> for TestWorker<P> {
    type Result = u64;

    fn handle(&mut self, msg: Sum, _: &mut Context<Self>) -> u64 {
        msg.0.iter().sum()
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<SlowEcho> for TestWorker<P> {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: SlowEcho, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(msg.delay_ms)).await;
            msg.n
        })
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<PanicRequest> for TestWorker<P> {
    type Result = u32;

    fn handle(&mut self, _: PanicRequest, _: &mut Context<Self>) -> u32 {
        boom("request handler panic")
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<Never> for TestWorker<P> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Never, _: &mut Context<Self>) -> Self::Result {
        Box::pin(std::future::pending())
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<Seen> for TestWorker<P> {
    type Result = u64;

    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> u64 {
        self.next_echo
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<AskParent> for TestWorker<P> {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, msg: AskParent, _: &mut Context<Self>) -> Self::Result {
        let asked = self.parent.ask(GetConfig(msg.0));
        Box::pin(async move { asked.await.map_err(|e| e.to_string()) })
    }
}

impl<P: Protocol<ToWorker = Cmd, FromWorker = Reply>> WorkerActor for TestWorker<P> {
    type Protocol = P;

    fn requests(requests: &mut Requests<Self>) {
        requests
            .answer::<Sum>()
            .answer::<SlowEcho>()
            .answer::<PanicRequest>()
            .answer::<Never>()
            .answer::<Seen>()
            .answer::<AskParent>();
    }

    fn on_close(&mut self, _: &mut Context<Self>) {
        if let Some(note) = &mut self.close_note {
            // One write: atomic on a pipe, whoever else writes to it.
            let _ = note.write_all(format!("closed {}\n", std::process::id()).as_bytes());
        }
        let _ = self.parent.post(Reply::Closing);
    }

    fn on_error(&mut self, error: &ErrorReport, _: &mut Context<Self>) -> bool {
        if error.message.starts_with("handled:") {
            let _ = self.parent.post(Reply::Handled(error.message.clone()));
            return true;
        }
        false
    }
}

/// The worker entries of this test binary.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry::new("test", TestWorker::<Test>::new),
        Entry::new("v2", TestWorker::<TestV2>::new),
        Entry::new("crash", |_: Parent<Test>| -> TestWorker<Test> { std::process::exit(7) }),
        Entry::new("panic-started", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.panic_in_started = true;
            worker
        }),
        Entry::new("slow-drop", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.slow_drop = Duration::from_secs(2);
            worker
        }),
    ]
}

/// Runs `f` in a fresh actix System.
pub fn run<F: Future<Output = ()>>(f: F) {
    actix::System::new().block_on(f);
}

/// Forwards events to a channel the test reads.
struct Forward<P: Protocol>(UnboundedSender<WorkerEvent<P>>);

impl<P: Protocol> Actor for Forward<P> {
    type Context = Context<Self>;
}

/// Answered once everything queued before it has been forwarded.
struct Flush;

impl Message for Flush {
    type Result = ();
}

impl<P: Protocol> Handler<Flush> for Forward<P> {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}

impl<P: Protocol> Handler<WorkerEvent<P>> for Forward<P> {
    type Result = ();

    fn handle(&mut self, ev: WorkerEvent<P>, _: &mut Context<Self>) {
        let _ = self.0.send(ev);
    }
}

/// A worker's events, read by the test.
pub struct Events<P: Protocol> {
    rx: UnboundedReceiver<WorkerEvent<P>>,
    forward: Recipient<Flush>,
}

pub fn events<P: Protocol>() -> (Recipient<WorkerEvent<P>>, Events<P>) {
    let (tx, rx) = unbounded_channel();
    let forward = Forward(tx).start();
    (forward.clone().recipient(), Events { rx, forward: forward.recipient() })
}

impl<P: Protocol> Events<P> {
    /// Every event sent before this call (by the worker's actor, say before
    /// it answered a `Join`), and nothing more: those not read yet.
    pub async fn rest(&mut self) -> Vec<Event<P>> {
        self.forward.send(Flush).await.expect("the forwarder runs");
        let mut rest = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            rest.push(ev.kind);
        }
        rest
    }
}

impl<P: Protocol<FromWorker = Reply>> Events<P> {
    pub async fn next(&mut self) -> Event<P> {
        let ev = tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a worker event")
            .expect("event channel closed");
        ev.kind
    }

    /// The next posted message, skipping `Online`; anything else fails.
    pub async fn message(&mut self) -> Received<Reply> {
        loop {
            match self.next().await {
                Event::Online => continue,
                Event::Message(m) => return m,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Skips to the next error report; fails on an exit first.
    pub async fn error(&mut self) -> ErrorReport {
        loop {
            match self.next().await {
                Event::Error(report) => return report,
                Event::Exit(s) => panic!("exited with {s} before an error was reported"),
                _ => continue,
            }
        }
    }

    /// Skips to the exit event.
    pub async fn exit(&mut self) -> ExitStatus {
        loop {
            if let Event::Exit(status) = self.next().await {
                return status;
            }
        }
    }

    /// Skips to the online event.
    pub async fn online(&mut self) {
        loop {
            match self.next().await {
                Event::Online => return,
                Event::Exit(s) => panic!("exited with {s} before coming online"),
                _ => continue,
            }
        }
    }
}

/// Restarts as `restart` says, at once (1 ms), up to 1,000 times a minute.
pub fn fast(restart: actix_webworker::Restart) -> RestartPolicy {
    RestartPolicy::default()
        .restart(restart)
        .intensity(1000, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
}

/// A builder for the standard test worker.
pub fn builder(events: Recipient<WorkerEvent<Test>>) -> WorkerBuilder<Test> {
    // Backtraces in reports would only make failures harder to read.
    // No restarts unless a test asks: most tests check how a process ended.
    Worker::<Test>::builder()
        .entry("test")
        .env("RUST_BACKTRACE", "0")
        .restart(RestartPolicy::never())
        .events(events)
}

/// Starts the standard test worker.
pub fn start() -> (Addr<Worker<Test>>, Events<Test>) {
    let (rec, events) = events::<Test>();
    (builder(rec).start().expect("worker starts"), events)
}

/// The read end of a pipe that holds `n`.
pub fn pipe_holding(n: u64) -> std::os::fd::OwnedFd {
    let (r, mut w) = std::io::pipe().expect("pipe");
    w.write_all(&n.to_le_bytes()).expect("write");
    r.into()
}

/// Reads the `u64` a [`pipe_holding`] holds.
pub fn read_u64(fd: std::os::fd::OwnedFd) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::from(fd).read_exact(&mut b).expect("read");
    u64::from_le_bytes(b)
}

/// Waits until `f` holds, checking every 10 ms, for at most 10 s: for
/// what settles without an event to wait on (a descriptor closed by a task
/// winding down, a child reaped by another thread).
pub async fn settles(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Waits until `f` holds, checking every millisecond, for at most `limit`:
/// for what must settle promptly after an event.
pub async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f()
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Children of this process (`ppid` is us), zombies included.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            out.push((pid, state));
        }
    }
    out
}

/// Waits (on a pidfd, no polling) until process `pid` has exited.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return true; // no such process
    }
    let mut pfd = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(fd as i32) };
    r > 0
}

/// This test binary, set to run test `name` alone (one of the roles, marked
/// ignored, that only run when asked for this way).
pub fn role(name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([name, "--exact", "--ignored", "--test-threads=1", "--nocapture"])
        .env("AWW_ISOLATED", "1");
    cmd
}

/// Stops the worker process (SIGSTOP) and returns its pid once it is
/// stopped: from then on it reads nothing, until SIGCONT or SIGKILL.
pub async fn freeze<P: Protocol<ToWorker = Cmd, FromWorker = Reply>>(
    worker: &Addr<Worker<P>>,
    events: &mut Events<P>,
) -> u32 {
    worker.do_send(actix_webworker::Post::new(Cmd::Pid));
    let Reply::Pid(pid) = events.message().await.data else { panic!("expected the pid") };
    // SAFETY: signalling the worker we started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    // SAFETY: waitid into a local; WNOWAIT leaves the child's state for its
    // reaper, and WSTOPPED waits only for the stop.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waiting for the worker to stop: {}", std::io::Error::last_os_error());
    pid
}

/// Runs one test of this binary alone in a fresh process (for tests that
/// count descriptors and children of the whole process) and checks it passed.
pub fn isolated(name: &str) {
    let out = role(name).output().expect("test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "isolated test {name} failed:\n{stdout}\n{stderr}"
    );
}
