//! The calls both sides make to the kernel about processes: pidfds, waiting
//! on descriptors, signals, reaping. Through nix, which wraps them safely,
//! except `pidfd_open`, which it does not wrap, and `waitpid`, whose status
//! nix cannot give whole.
//!
//! (What runs between fork and exec stays with raw `libc` in
//! `parent/spawn.rs`: there, only async-signal-safe calls may run, and each
//! is named where it is made.)

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::ExitStatus;

pub(crate) use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// A descriptor that becomes readable once process `pid` has exited (all
/// its threads), close-on-exec; `None` if the kernel cannot give one (before
/// Linux 5.3, or no such process).
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a descriptor nothing else owns
    // (opened close-on-exec by the kernel).
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// Waits up to `wait` (`Duration::MAX`: for ever) until one of `fds` has
/// one of `events`, or a hang-up or error; true if one has. An
/// interrupted wait counts as nothing yet.
pub(crate) fn ready(fds: &[BorrowedFd<'_>], events: PollFlags, wait: Duration) -> bool {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, events)).collect();
    let timeout = match wait {
        Duration::MAX => PollTimeout::NONE,
        wait => PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
    };
    matches!(nix::poll::poll(&mut pfds, timeout), Ok(n) if n > 0)
}

/// Whether `fd` is readable now (a pidfd: its process has exited).
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    ready(&[fd], PollFlags::POLLIN, Duration::ZERO)
}

/// The peer of a socket hung up (nix does not name it).
pub(crate) const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(libc::POLLRDHUP);

/// Sends `signal` to process group `pgid`. The caller makes sure the group
/// is the one it means (its leader not reaped yet).
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    let _ = signal::killpg(Pid::from_raw(pgid), signal);
}

/// Kills this process's own group: what it started, and itself last.
pub(crate) fn kill_own_group() {
    let _ = signal::kill(Pid::from_raw(0), Signal::SIGKILL);
}

/// Whether process `pid` exists (signal 0: nothing is sent).
pub(crate) fn exists(pid: i32) -> bool {
    signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// Waits for child `pid` to exit and reaps it; `None` if it is not ours to
/// reap (reaped already). Raw `waitpid`: nix's `WaitStatus` cannot hold a
/// real-time signal (34 and up), and a worker killed by one must say so.
pub(crate) fn reap(pid: i32) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let mut raw = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into a local.
        let r = unsafe { libc::waitpid(pid, &mut raw, 0) };
        if r == pid {
            let status = std::process::ExitStatus::from_raw(raw);
            return Some(ExitStatus { code: status.code(), signal: status.signal(), lost: None });
        }
        if r == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}
