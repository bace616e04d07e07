//! A worker's events, as the test reads them, and the standard builders.

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    ErrorReport, Event, ExitStatus, PoolEvent, Protocol, Received, RestartPolicy, Worker,
    WorkerBuilder, WorkerEvent,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::os::{kill, Signal};
use super::{Cmd, Reply, Test, WAIT};

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

impl<P: Protocol> Events<P>
where
    P::FromWorker: std::fmt::Debug,
{
    pub async fn next(&mut self) -> Event<P> {
        let ev = tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a worker event")
            .expect("event channel closed");
        ev.kind
    }

    /// The next posted message, skipping `Online`; anything else fails.
    pub async fn message(&mut self) -> Received<P::FromWorker> {
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

    /// Skips to the first exit with code 0 (past those of processes
    /// killed before it, which restarts followed).
    pub async fn successful_exit(&mut self) {
        while !self.exit().await.success() {}
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
        .start_method(start_method())
}

/// Set (to anything), the standard test worker is forked from a template
/// (`StartMethod::ForkServer`): `.ci/run` runs the suite once so.
pub const FORK_SERVER: &str = "AWW_FORK_SERVER";

/// A worker exec'd whatever [`FORK_SERVER`] says: one whose process runs
/// something of its own before `run_if_worker` that a fork of a template
/// would not run again (a raw peer's hook, keyed on its entry; a span
/// recorder that names its file after the process).
pub trait ByExec {
    fn by_exec(self) -> Self;
}

impl<P: Protocol, K> ByExec for WorkerBuilder<P, K> {
    fn by_exec(self) -> Self {
        self.start_method(actix_webworker::StartMethod::Exec)
    }
}

/// How the standard test worker is started: [`FORK_SERVER`] says.
pub fn start_method() -> actix_webworker::StartMethod {
    match std::env::var_os(FORK_SERVER) {
        Some(_) => actix_webworker::StartMethod::ForkServer,
        None => actix_webworker::StartMethod::Exec,
    }
}

/// Starts the standard test worker.
pub fn start() -> (Addr<Worker<Test>>, Events<Test>) {
    let (rec, events) = events::<Test>();
    (builder(rec).start().expect("worker starts"), events)
}

/// Stops the worker process (SIGSTOP) and returns its pid once it is
/// stopped: from then on it reads nothing, until SIGCONT or SIGKILL.
pub async fn freeze<P: Protocol<ToWorker = Cmd, FromWorker = Reply>>(
    worker: &Addr<Worker<P>>,
    events: &mut Events<P>,
) -> u32 {
    worker.do_send(actix_webworker::Post::new(Cmd::Pid));
    let Reply::Pid(pid) = events.message().await.data else { panic!("expected the pid") };
    kill(pid, Signal::SIGSTOP);
    // SAFETY: waitid into a local; WNOWAIT leaves the child's state for its
    // reaper, and WSTOPPED waits only for the stop.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waiting for the worker to stop: {}", std::io::Error::last_os_error());
    pid
}

/// Forwards a pool's events to the test.
struct PoolForward(UnboundedSender<PoolEvent<Test>>);

impl Actor for PoolForward {
    type Context = Context<Self>;
}

impl Handler<PoolEvent<Test>> for PoolForward {
    type Result = ();

    fn handle(&mut self, ev: PoolEvent<Test>, _: &mut Context<Self>) {
        let _ = self.0.send(ev);
    }
}

/// A recipient for a pool's events, and the test's end of them.
pub fn pool_events() -> (Recipient<PoolEvent<Test>>, UnboundedReceiver<PoolEvent<Test>>) {
    let (tx, rx) = unbounded_channel();
    (PoolForward(tx).start().recipient(), rx)
}

/// Reads a pool's events until `f` holds for one; returns it.
pub async fn pool_until(
    rx: &mut UnboundedReceiver<PoolEvent<Test>>,
    mut f: impl FnMut(&PoolEvent<Test>) -> bool,
) -> PoolEvent<Test> {
    loop {
        let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("event in time");
        let ev = ev.expect("events go on");
        if f(&ev) {
            return ev;
        }
    }
}

/// Waits until `n` members of a pool are online.
pub async fn pool_online(rx: &mut UnboundedReceiver<PoolEvent<Test>>, n: usize) {
    for _ in 0..n {
        let online = |ev: &PoolEvent<Test>| matches!(ev, PoolEvent::Member { event, .. } if matches!(event.kind, Event::Online));
        pool_until(rx, online).await;
    }
}
