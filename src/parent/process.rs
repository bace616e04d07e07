//! A running worker process, from its start until it has been reaped: its
//! handle, the wait for its exit, signals to its group, and what happens to
//! it when its parent lets go of it.
//!
//! Reaping uses a pidfd where the kernel has one (Linux 5.3+): the pidfd
//! becomes readable when the child exits, the group is killed (anything the
//! worker left behind goes with it) while the child is still a zombie, so
//! its pid (and group id) cannot have been reused, and only then is it
//! reaped.
//!
//! A parent lets go of running workers without a terminate when the actix
//! System stops: its runtime is dropped with every task in it, and the
//! handles of running processes go with them. The first such handle dropped
//! on a thread closes every worker still running on that thread, together:
//! each gets a terminate message (written straight to its socket when what
//! was written to it ends between two frames) or, if that cannot be, its
//! socket shut, so that its `on_close` runs and it exits. They have their
//! shutdown timeout for that, then get SIGTERM, then SIGKILL after the kill
//! delay. Every one is reaped before the drop returns: before `System::run`
//! (or the `block_on` of an `#[actix::main]`) returns. A handle of a
//! process that never ran as a worker is killed and reaped off-thread: no
//! path leaves a zombie.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::signal::Signal;
use nix::sys::socket::Shutdown;
use tokio::io::unix::AsyncFd;

use crate::error::ExitStatus;
use crate::handoff;
use crate::os;
use crate::wire::stream::queues::FdQueues;
use crate::wire::wsframe;

/// How long [`Terminate`](crate::Terminate) waits before it signals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grace {
    /// The worker's configured grace period (default 5 s).
    #[default]
    Default,
    /// This long, then SIGTERM, then SIGKILL.
    After(Duration),
    /// Wait for the worker to exit on its own; never signal it.
    Never,
}

/// A running (or exited but not yet reaped) worker process.
pub(crate) struct ChildHandle {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
    pidfd: Option<OwnedFd>,
    /// Counted among its thread's running workers (see [`close_all`]).
    registered: AtomicBool,
    farewell: Mutex<Farewell>,
}

impl ChildHandle {
    pub(crate) fn new(pid: u32, pidfd: Option<OwnedFd>) -> Self {
        ChildHandle {
            pid: pid as libc::pid_t,
            reaped: Mutex::new(false),
            pidfd,
            registered: Default::default(),
            farewell: Default::default(),
        }
    }

    /// How it is asked to close if its parent lets go of it.
    pub(crate) fn farewell(&self) -> MutexGuard<'_, Farewell> {
        self.registered.store(true, Ordering::Relaxed);
        self.farewell.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_reaped(&self) -> bool {
        *self.reaped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps the child if it has exited, taking its group down first;
    /// true once it is reaped (now or before). Never blocks.
    pub(crate) fn reap_if_exited(&self) -> bool {
        if self.is_reaped() {
            return true;
        }
        let exited = match &self.pidfd {
            Some(fd) => os::readable_now(fd.as_fd()),
            None => true, // no way to wait for it: it is killed below
        };
        if !exited {
            return false;
        }
        self.signal_group(os::SIGKILL);
        self.reap_blocking();
        true
    }

    /// Waits up to `wait` for any of `handles` to exit.
    pub(crate) fn wait_any<'a>(handles: impl Iterator<Item = &'a ChildHandle>, wait: Duration) {
        let fds: Vec<BorrowedFd<'_>> =
            handles.filter_map(|h| h.pidfd.as_ref()).map(|fd| fd.as_fd()).collect();
        os::ready(&fds, PollFlags::POLLIN, wait);
    }

    /// The child's pid (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Whether process `pid` is the child or was started by it (a wrapper
    /// such as a debugger may run the worker as its own child).
    pub(crate) fn is_self_or_descendant(&self, pid: u32) -> bool {
        pid as libc::pid_t == self.pid || handoff::descends_from(pid as i32, self.pid)
    }

    /// Sends `signal` to the child's whole process group, unless it has been
    /// reaped already (its ids may then belong to someone else).
    pub(crate) fn signal_group(&self, signal: Signal) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            // The group cannot have been reused while its leader is unreaped.
            os::signal_group(self.pid, signal);
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
                self.signal_group(os::SIGKILL);
                self.reap_blocking()
            }
            _ => {
                let pid = self.pid;
                let status = tokio::task::spawn_blocking(move || os::reap(pid));
                self.finish(status.await.unwrap_or(None))
            }
        }
    }

    /// Waits for `exited` (this process's exit), then signals its group
    /// along its farewell's ladder: for a launcher whose worker's
    /// connection has ended, which may stay up (a shell that runs something
    /// after it, a `kubectl` that waits for its pod). It gets the time to
    /// exit a closing worker gets, then SIGTERM, then SIGKILL after the kill
    /// delay.
    pub(crate) async fn wait_signalling(
        &self,
        mut exited: Pin<&mut dyn Future<Output = ExitStatus>>,
    ) -> ExitStatus {
        let (timeout, kill_delay) = self.farewell().limits();
        for (after, signal) in [(timeout, os::SIGTERM), (kill_delay, os::SIGKILL)] {
            match tokio::time::timeout(after, exited.as_mut()).await {
                Ok(status) => return status,
                Err(_) => self.signal_group(signal),
            }
        }
        exited.await
    }

    fn reap_blocking(&self) -> ExitStatus {
        let status = os::reap(self.pid);
        self.finish(status)
    }

    fn finish(&self, status: Option<ExitStatus>) -> ExitStatus {
        *self.reaped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        status.unwrap_or(ExitStatus { code: None, signal: None, lost: None })
    }
}

/// A process's exit, as the task that follows it waits for it.
pub(crate) struct Exit {
    /// Resolves (once) to its status.
    pub wait: Pin<Box<dyn Future<Output = ExitStatus>>>,
    /// The status, once `wait` has given it.
    pub status: Option<ExitStatus>,
}

impl Exit {
    /// The exit of `handle`'s process, not waited for yet.
    pub(crate) fn of(handle: &Arc<ChildHandle>) -> Exit {
        let handle = handle.clone();
        Exit { wait: Box::pin(async move { handle.wait().await }), status: None }
    }

    /// The status: known already, or waited for. A launcher (`launched`)
    /// whose worker's connection has ended is signalled if it stays up
    /// ([`ChildHandle::wait_signalling`]).
    pub(crate) async fn status_of(self, handle: &ChildHandle, launched: bool) -> ExitStatus {
        let Exit { mut wait, status } = self;
        match status {
            Some(status) => status,
            None if launched => handle.wait_signalling(wait.as_mut()).await,
            None => wait.await,
        }
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        if *self.reaped.get_mut().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        // A running worker whose parent lets go of it (the System stops):
        // closed the polite way, with the others of its thread.
        if *self.registered.get_mut() && self.pidfd.is_some() {
            close_all(self);
            return;
        }
        // Nobody will wait for it any more: kill and reap off-thread.
        // See signal_group: the leader is not reaped yet.
        os::signal_group(self.pid, os::SIGKILL);
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("actix-webworker-reaper".into())
            .spawn(move || os::reap(pid));
    }
}

thread_local! {
    /// The running workers whose links run on this thread.
    static FLEET: RefCell<Vec<Weak<ChildHandle>>> = const { RefCell::new(Vec::new()) };
}

/// How a running worker is asked to close when its parent lets go.
#[derive(Default)]
pub(crate) struct Farewell {
    /// How long it has to exit, then how long after SIGTERM until SIGKILL.
    timeout: Duration,
    kill_delay: Duration,
    /// Its connection, once the handshake is done: a duplicate of the
    /// parent's socket, and what was written to it.
    conn: Option<(OwnedFd, Arc<FdQueues>)>,
}

/// Counts `handle` among this thread's running workers.
pub(crate) fn register(handle: &Arc<ChildHandle>, timeout: Duration, kill_delay: Duration) {
    let mut farewell = handle.farewell();
    farewell.timeout = timeout;
    farewell.kill_delay = kill_delay;
    drop(farewell);
    FLEET.with(|fleet| {
        let mut fleet = fleet.borrow_mut();
        fleet.retain(|h| h.strong_count() > 0);
        fleet.push(Arc::downgrade(handle));
    });
}

/// Notes the connection of a registered worker, once its handshake is done.
pub(crate) fn connected(handle: &ChildHandle, sock: OwnedFd, fds: Arc<FdQueues>) {
    handle.farewell().conn = Some((sock, fds));
}

impl Farewell {
    /// How long a worker has to exit, then how long after SIGTERM until
    /// SIGKILL.
    pub(crate) fn limits(&self) -> (Duration, Duration) {
        (self.timeout, self.kill_delay)
    }

    /// Asks the worker to close: a terminate message if it can go whole,
    /// else its socket shut (it then closes as for a parent gone).
    fn ask(&mut self) {
        let Some((sock, fds)) = self.conn.take() else { return };
        let terminate = wsframe::binary_frame(&crate::wire::envelope::bare(
            crate::wire::envelope::Kind::Terminate,
        ));
        // Without blocking, and without SIGPIPE.
        if fds.send_whole_now(&terminate) {
            return;
        }
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), Shutdown::Both);
    }
}

/// Closes `dropping` and every other worker still running on this thread,
/// and reaps them all; see the module docs.
pub(crate) fn close_all(dropping: &ChildHandle) {
    let others: Vec<Arc<ChildHandle>> = FLEET
        .try_with(|fleet| fleet.borrow_mut().drain(..).filter_map(|h| h.upgrade()).collect())
        .unwrap_or_default();
    let mut closing: Vec<Closing<'_>> = std::iter::once(dropping)
        .chain(others.iter().map(|h| &**h))
        .filter(|h| !h.is_reaped())
        .map(|handle| {
            let mut farewell = handle.farewell();
            farewell.ask();
            let term_at = Instant::now() + farewell.timeout;
            Closing { handle, term_at, kill_at: term_at + farewell.kill_delay, signalled: 0 }
        })
        .collect();
    while !closing.is_empty() {
        closing.retain(|c| !c.handle.reap_if_exited());
        let now = Instant::now();
        for c in &mut closing {
            if c.signalled < 2 && now >= c.kill_at {
                c.handle.signal_group(os::SIGKILL);
                c.signalled = 2;
            } else if c.signalled < 1 && now >= c.term_at {
                c.handle.signal_group(os::SIGTERM);
                c.signalled = 1;
            }
        }
        let next =
            closing.iter().map(|c| if c.signalled == 0 { c.term_at } else { c.kill_at }).min();
        let Some(next) = next else { break };
        let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        ChildHandle::wait_any(closing.iter().map(|c| c.handle), wait);
    }
}

/// One worker being closed.
struct Closing<'a> {
    handle: &'a ChildHandle,
    term_at: Instant,
    kill_at: Instant,
    /// 0: nothing yet, 1: SIGTERM, 2: SIGKILL.
    signalled: u8,
}
