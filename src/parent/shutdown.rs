//! What becomes of running workers when their parent lets go of them
//! without a terminate: the actix System stops, its runtime is dropped with
//! every task in it, and the handles of running processes go with them.
//!
//! The first such handle dropped on a thread closes every worker still
//! running on that thread, together: each gets a terminate message (written
//! straight to its socket when what was written to it ends between two
//! frames) or, if that cannot be, its socket shut, so that its `on_close`
//! runs and it exits. They have their shutdown timeout for that, then get
//! SIGTERM, then SIGKILL after the kill delay. Every one is reaped before
//! the drop returns: before `System::run` (or the `block_on` of an
//! `#[actix::main]`) returns.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::spawn::ChildHandle;
use crate::wire::fd::FdQueues;
use crate::wire::socket;

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
    /// Asks the worker to close: a terminate message if it can go whole,
    /// else its socket shut (it then closes as for a parent gone).
    fn ask(&mut self) {
        let Some((sock, fds)) = self.conn.take() else { return };
        let terminate =
            socket::binary_frame(&crate::wire::frame::bare(crate::wire::frame::Kind::Terminate));
        if fds.ledger().between_frames() {
            // SAFETY: send on a socket we own a duplicate of, from a local
            // buffer, without blocking or SIGPIPE.
            let sent = unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    terminate.as_ptr().cast(),
                    terminate.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent == terminate.len() as isize {
                return;
            }
        }
        // SAFETY: shutdown on a socket we own a duplicate of.
        unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
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
                c.handle.signal_group(libc::SIGKILL);
                c.signalled = 2;
            } else if c.signalled < 1 && now >= c.term_at {
                c.handle.signal_group(libc::SIGTERM);
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

/// The farewell of a handle, behind its lock.
pub(crate) type FarewellLock = Mutex<Farewell>;
