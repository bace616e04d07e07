//! The test protocol, its requests, and the worker every test runs.

use std::io::{Read, Write};
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    Entry, ErrorReport, Parent, Protocol, Received, Requests, SharedBytes, WorkerActor,
};
use serde::{Deserialize, Serialize};

use super::{open_fds, pipe_holding, read_u64};

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
    /// Pin the handling thread (`pthread_self()`) to the first CPU it may
    /// run on; answer `Pid` with the thread's id as the kernel knows it.
    PinSelf,
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
    /// Answer `Lines` with the signal lines (`Sig...:`) of the handling
    /// thread's `/proc/thread-self/status`, then the lines of
    /// `/proc/self/limits`. The thread's own: `/proc/self/status` shows the
    /// main thread's mask, and a forked worker runs its actor on a thread
    /// the main thread starts (`child/entry.rs`), which may answer while
    /// the main thread is still in `pthread_create`, every signal blocked.
    Status,
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
    /// As `NoteOnClose`, appending to the file at this path (for a worker
    /// that takes no descriptors); answer `Count(0)`.
    NoteOnCloseIn(String),
    /// `on_close` exits the process with this code (after its other work);
    /// answers `Count(0)`.
    ExitInOnClose(i32),
    /// Answers `Shared` with these buffers, then one of its own (the text
    /// "from the worker").
    Shared(Vec<SharedBytes>),
    /// Panic with "tick" from an interval of this many ms, every tick.
    PanicEvery(u64),
    /// Panic with this message from a future spawned on the context.
    PanicInSpawned(String),
    /// Panic with this message from a `run_later` timer after this many ms.
    PanicLaterWith(u64, String),
    /// Hold the process's main thread (its first, whose mask
    /// `/proc/self/status` shows) in a signal handler with every signal
    /// blocked, until `ReleaseMain`: the state glibc's `pthread_create`
    /// leaves the thread that calls it in around its clone, which the new
    /// thread may outrun on a loaded machine. Answers `Count(1)` once it is
    /// held, `Count(0)` where the handling thread is the main thread (an
    /// exec'd worker runs its actor there): nothing to hold.
    HoldMain,
    /// Let the main thread held by `HoldMain` go; answers `Count(0)`.
    ReleaseMain,
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
    /// The handler of `Hold(n)` or `HoldInActor(n)` has started.
    Holding(u64),
    /// The future answering `Hold(n)` or `HoldInActor(n)` was dropped
    /// before it answered.
    Dropped(u64),
    /// Shared buffers (see `Cmd::Shared`).
    Shared(Vec<SharedBytes>),
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

/// Answered after a minute by a `ResponseFuture`; says `Dropped(n)` if that
/// future is dropped first (the request cancelled).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Hold(pub u64);

/// The same with a `ResponseActFuture`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct HoldInActor(pub u64);

/// Posts `Dropped(n)` when dropped.
struct DropNote<P: Protocol<FromWorker = Reply>>(Parent<P>, u64);

impl<P: Protocol<FromWorker = Reply>> Drop for DropNote<P> {
    fn drop(&mut self) {
        let _ = self.0.post(Reply::Dropped(self.1));
    }
}

/// Answered with the sum of the buffer's bytes, and whether the worker
/// got it as a mapping.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "(u64, bool)")]
pub struct Checksum(pub SharedBytes);

/// Answered with a shared buffer of `len` bytes, each `fill`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "SharedBytes")]
pub struct MakeShared(pub usize, pub u8);

/// Answered with the worker's pid.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct WhichPid;

/// Answered with the value of each of these environment variables in the
/// worker (`None` for one it does not have): where it runs, as its
/// launcher set it up (a Slurm job step's `SLURM_JOB_ID`).
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "Vec<Option<String>>")]
pub struct Getenv(pub Vec<String>);

/// Its handler panics.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct PanicRequest;

/// Its handler's `ResponseActFuture` panics once polled again.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct PanicInActor;

/// Its handler's `ResponseFuture` panics once polled again.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct PanicInFuture;

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

/// The worker sends this buffer to the parent (`Reversed`) and answers
/// with what came back: its bytes, and whether it came mapped.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<(Vec<u8>, bool), String>")]
pub struct AskParentShared(pub Vec<u8>);

/// Served by the parent: the buffer's bytes reversed, in a buffer of its
/// own, and whether the one it got was mapped.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "(SharedBytes, bool)")]
pub struct Reversed(pub SharedBytes);

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

/// `Cmd::HoldMain` and `Cmd::ReleaseMain`.
mod main_thread {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    static HELD: AtomicBool = AtomicBool::new(false);
    static RELEASED: AtomicBool = AtomicBool::new(false);

    /// SIGURG's handler, run on the main thread with every signal blocked
    /// (its `sa_mask`): waits there until released. Only atomics and
    /// `nanosleep`: async-signal-safe.
    extern "C" fn hold_here(_: libc::c_int) {
        HELD.store(true, Ordering::SeqCst);
        let pause = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
        while !RELEASED.load(Ordering::SeqCst) {
            // SAFETY: sleeps; no memory but the local.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
        HELD.store(false, Ordering::SeqCst);
    }

    /// 1 once the main thread is held, 0 if this is the main thread.
    pub fn hold() -> usize {
        // SAFETY: no memory.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        if pid == tid {
            return 0;
        }
        RELEASED.store(false, Ordering::SeqCst);
        // SAFETY: a handler that only touches atomics and sleeps; every
        // signal blocked while it runs; tgkill names the main thread.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = hold_here as *const () as libc::sighandler_t;
            // All ones, as glibc's `pthread_create` blocks them (its own
            // signals too; `sigfillset` would leave those out).
            std::ptr::write_bytes(&mut action.sa_mask, 0xff, 1);
            assert_eq!(libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()), 0);
            assert_eq!(libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGURG), 0);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !HELD.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the main thread never ran the handler");
            std::thread::sleep(Duration::from_millis(1));
        }
        1
    }

    pub fn release() {
        RELEASED.store(true, Ordering::SeqCst);
    }
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
    /// `started` panics with a message `on_error` handles.
    handled_panic_in_started: bool,
    /// How long dropping the actor takes.
    slow_drop: Duration,
    /// Where `on_close` says it ran.
    close_note: Option<std::fs::File>,
    /// `on_close` asks the parent `GetConfig("on_close")` and does not
    /// wait for the answer.
    ask_on_close: bool,
    /// The code `on_close` exits with, if any.
    exit_in_on_close: Option<i32>,
}

impl<P: Protocol<FromWorker = Reply>> TestWorker<P> {
    pub fn new(parent: Parent<P>) -> Self {
        TestWorker {
            parent,
            next_echo: 0,
            panic_in_started: false,
            handled_panic_in_started: false,
            slow_drop: Duration::ZERO,
            close_note: None,
            ask_on_close: false,
            exit_in_on_close: None,
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
        if self.handled_panic_in_started {
            boom("handled: started panic");
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
            Cmd::PinSelf => {
                // SAFETY: a CPU set on the stack, for the calling thread.
                let tid = unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
                    let first = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set));
                    libc::CPU_ZERO(&mut set);
                    libc::CPU_SET(first.unwrap_or(0), &mut set);
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    libc::pthread_setaffinity_np(libc::pthread_self(), size, &set);
                    libc::gettid()
                };
                let _ = parent.post(Reply::Pid(tid as u32));
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
            Cmd::Status => {
                let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
                let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
                let signals = status.lines().filter(|l| l.starts_with("Sig"));
                let lines = signals.chain(limits.lines()).map(str::to_owned).collect();
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
            Cmd::NoteOnCloseIn(path) => {
                let file = std::fs::OpenOptions::new().append(true).create(true).open(path);
                self.close_note = Some(file.expect("the note's file"));
                let _ = parent.post(Reply::Count(0));
            }
            Cmd::ExitInOnClose(code) => {
                self.exit_in_on_close = Some(code);
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
            Cmd::Shared(mut buffers) => {
                buffers.push(SharedBytes::copy_from_slice(b"from the worker").expect("a memfd"));
                if let Err(e) = parent.post(Reply::Shared(buffers)) {
                    let _ = parent.post(Reply::Refused(e.to_string()));
                }
            }
            Cmd::BlobBack(len) => {
                if let Err(e) = parent.post(Reply::Blob(vec![7; len])) {
                    let _ = parent.post(Reply::Refused(e.to_string()));
                }
            }
            Cmd::PanicEvery(ms) => {
                ctx.run_interval(Duration::from_millis(ms), |_, _| boom("tick"));
            }
            Cmd::PanicInSpawned(m) => {
                ctx.spawn(async move { boom(&m) }.into_actor(self));
            }
            Cmd::PanicLaterWith(ms, m) => {
                ctx.run_later(Duration::from_millis(ms), move |_, _| boom(&m));
            }
            Cmd::HoldMain => {
                let _ = parent.post(Reply::Count(main_thread::hold()));
            }
            Cmd::ReleaseMain => {
                main_thread::release();
                let _ = parent.post(Reply::Count(0));
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

impl<P: Protocol<FromWorker = Reply>> Handler<Hold> for TestWorker<P> {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: Hold, _: &mut Context<Self>) -> Self::Result {
        let _ = self.parent.post(Reply::Holding(msg.0));
        let note = DropNote(self.parent.clone(), msg.0);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            std::mem::forget(note);
            msg.0
        })
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<HoldInActor> for TestWorker<P> {
    type Result = ResponseActFuture<Self, u64>;

    fn handle(&mut self, msg: HoldInActor, _: &mut Context<Self>) -> Self::Result {
        let _ = self.parent.post(Reply::Holding(msg.0));
        let note = DropNote(self.parent.clone(), msg.0);
        Box::pin(
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                std::mem::forget(note);
                msg.0
            }
            .into_actor(self),
        )
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<Checksum> for TestWorker<P> {
    type Result = actix::MessageResult<Checksum>;

    fn handle(&mut self, msg: Checksum, _: &mut Context<Self>) -> Self::Result {
        let sum = msg.0.iter().map(|&b| u64::from(b)).sum();
        actix::MessageResult((sum, msg.0.is_mapped()))
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<MakeShared> for TestWorker<P> {
    type Result = actix::MessageResult<MakeShared>;

    fn handle(&mut self, msg: MakeShared, _: &mut Context<Self>) -> Self::Result {
        let mut buf = actix_webworker::SharedBytesMut::new(msg.0).expect("a memfd");
        buf.fill(msg.1);
        actix::MessageResult(buf.freeze().expect("sealed"))
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<WhichPid> for TestWorker<P> {
    type Result = u32;

    fn handle(&mut self, _: WhichPid, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<Getenv> for TestWorker<P> {
    type Result = actix::MessageResult<Getenv>;

    fn handle(&mut self, msg: Getenv, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(msg.0.iter().map(|k| std::env::var(k).ok()).collect())
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

impl<P: Protocol<FromWorker = Reply>> Handler<PanicInActor> for TestWorker<P> {
    type Result = ResponseActFuture<Self, u32>;

    fn handle(&mut self, _: PanicInActor, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            async {
                tokio::task::yield_now().await;
                panic!("request future panic")
            }
            .into_actor(self),
        )
    }
}

impl<P: Protocol<FromWorker = Reply>> Handler<PanicInFuture> for TestWorker<P> {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, _: PanicInFuture, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async {
            tokio::task::yield_now().await;
            panic!("request future panic")
        })
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

impl<P: Protocol<FromWorker = Reply>> Handler<AskParentShared> for TestWorker<P> {
    type Result = ResponseFuture<Result<(Vec<u8>, bool), String>>;

    fn handle(&mut self, msg: AskParentShared, _: &mut Context<Self>) -> Self::Result {
        let buf = SharedBytes::copy_from_slice(&msg.0).expect("a memfd");
        let asked = self.parent.ask(Reversed(buf));
        Box::pin(async move {
            let (back, parent_got_it_mapped) = asked.await.map_err(|e| e.to_string())?;
            if !parent_got_it_mapped {
                return Err("the parent got the buffer as bytes".into());
            }
            Ok((back.to_vec(), back.is_mapped()))
        })
    }
}

impl<P: Protocol<ToWorker = Cmd, FromWorker = Reply>> WorkerActor for TestWorker<P> {
    type Protocol = P;

    fn requests(requests: &mut Requests<Self>) {
        requests
            .answer::<Sum>()
            .answer::<SlowEcho>()
            .answer::<PanicRequest>()
            .answer::<PanicInActor>()
            .answer::<PanicInFuture>()
            .answer::<Never>()
            .answer::<Seen>()
            .answer::<AskParent>()
            .answer::<AskParentShared>()
            .answer::<WhichPid>()
            .answer::<Getenv>()
            .answer::<Hold>()
            .answer::<HoldInActor>()
            .answer::<Checksum>()
            .answer::<MakeShared>();
    }

    fn on_close(&mut self, _: &mut Context<Self>) {
        if let Some(note) = &mut self.close_note {
            // One write: atomic on a pipe, whoever else writes to it.
            let _ = note.write_all(format!("closed {}\n", std::process::id()).as_bytes());
        }
        if self.ask_on_close {
            let asked = self.parent.ask(GetConfig("on_close".into()));
            actix::spawn(async move {
                let _ = asked.await;
            });
        }
        let _ = self.parent.post(Reply::Closing);
        if let Some(code) = self.exit_in_on_close {
            std::process::exit(code);
        }
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
    let mut entries = vec![
        Entry::new("test", TestWorker::<Test>::new),
        crate::conformance::entry(),
        Entry::new("v2", TestWorker::<TestV2>::new),
        Entry::new("crash", |_: Parent<Test>| -> TestWorker<Test> { std::process::exit(7) }),
        Entry::new("panic-started", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.panic_in_started = true;
            worker
        }),
        Entry::new("ask-on-close", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.ask_on_close = true;
            worker
        }),
        Entry::new("slow-drop", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.slow_drop = Duration::from_secs(2);
            worker
        }),
        Entry::new("panic-started-handled", |parent| {
            let mut worker = TestWorker::<Test>::new(parent);
            worker.handled_panic_in_started = true;
            worker
        }),
    ];
    entries.extend(crate::declared::entries());
    entries.extend(crate::data::entries());
    entries.extend(crate::inline::entries());
    entries.extend(crate::streams::entries());
    entries.extend(crate::channels::entries());
    entries.extend(crate::trace::entries());
    entries.extend(crate::review_pool::entries());
    entries
}
