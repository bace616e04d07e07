//! A worker started through a launcher (`ssh`, `srun`, `kubectl exec`):
//! its connection is cut when the launcher exits while it is up.
//!
//! When the launcher exits first (an `ssh` client killed, a `kubectl` that
//! lost its API server), the worker can no longer be signalled, and its
//! status would never be known. Its connection is ended instead: its write
//! side at once, so that the worker reads the end of its input and exits as
//! for a parent gone (no orphan on the other host); then, after a grace for
//! what it still sends on its way out, the read side too, so that the link
//! ends even when the worker cannot be reached. The exit is then lost
//! (`Lost::Disconnected`, with the launcher's status), and restarted on
//! failure. (A launcher that stays up once the connection has ended is
//! signalled: `ChildHandle::wait_signalling`.)

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_rt::task::JoinHandle;
use nix::sys::socket::{shutdown, Shutdown};

use super::process::Exit;
use crate::error::ExitStatus;

/// The cut of a launched worker's connection, armed while it is up.
pub(crate) struct Cut(Rc<RefCell<Cutting>>);

impl Cut {
    /// Arms the cut of `sock`, a duplicate of the connection: `exit.wait`
    /// now cuts it, after `grace`, when the launcher exits first.
    pub(crate) fn arm(exit: &mut Exit, sock: OwnedFd, grace: Duration) -> Cut {
        let cutting = Rc::new(RefCell::new(Cutting::Connected));
        let inner = std::mem::replace(&mut exit.wait, Box::pin(std::future::pending()));
        exit.wait = cut_when_launcher_exits(inner, sock, grace, cutting.clone());
        Cut(cutting)
    }

    /// The connection has ended: nothing is left to cut. Whether the
    /// launcher's exit had cut it.
    pub(crate) fn end(&self) -> bool {
        let cut = Cutting::set(&self.0, Cutting::Ended);
        if let Some(task) = &cut {
            task.abort();
        }
        cut.is_some()
    }
}

/// Where a launched worker's connection is, for its launcher's exit.
enum Cutting {
    /// Up: a launcher's exit cuts it.
    Connected,
    /// The launcher has exited: the connection is cut (fully) when this
    /// task's grace is over.
    Cut(JoinHandle<()>),
    /// Ended: a launcher's exit now cuts nothing.
    Ended,
}

impl Cutting {
    /// Puts `with` in `cell`; the task that was to cut, if any.
    fn set(cell: &RefCell<Cutting>, with: Cutting) -> Option<JoinHandle<()>> {
        match std::mem::replace(&mut *cell.borrow_mut(), with) {
            Cutting::Cut(task) => Some(task),
            _ => None,
        }
    }
}

/// `wait`, which cuts the connection (`sock`, a duplicate of it) when the
/// launcher exits while it is up (see the module docs).
fn cut_when_launcher_exits(
    wait: Pin<Box<dyn Future<Output = ExitStatus>>>,
    sock: OwnedFd,
    grace: Duration,
    cutting: Rc<RefCell<Cutting>>,
) -> Pin<Box<dyn Future<Output = ExitStatus>>> {
    Box::pin(async move {
        let status = wait.await;
        if matches!(*cutting.borrow(), Cutting::Connected) {
            tracing::debug!(%status, "the launcher exited while its worker was connected");
            let _ = shutdown(sock.as_raw_fd(), Shutdown::Write);
            let cut = actix_rt::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = shutdown(sock.as_raw_fd(), Shutdown::Both);
            });
            Cutting::set(&cutting, Cutting::Cut(cut));
        }
        status
    })
}
