//! The calls both sides make to the kernel about processes: pidfds, waiting
//! on descriptors, signals, reaping; and the keepalive of a remote
//! worker's connection, set the same on both sides. Through nix, which wraps them safely,
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

/// A TCP connection's keepalive: probed after [`KEEPALIVE_IDLE`] without
/// a packet from the peer, then every [`KEEPALIVE_INTERVAL`]; after
/// [`KEEPALIVE_PROBES`] probes unanswered the connection fails
/// (`ETIMEDOUT`). A peer whose host is gone (crashed, cut off) is so
/// noticed within 25 s (10 + 3 × 5) of the last packet it sent. The
/// kernel answers the probes, so a peer that is merely busy, blocked or
/// stopped is never taken for gone.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_IDLE`].
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE_IDLE`].
pub(crate) const KEEPALIVE_PROBES: u32 = 3;

/// Sets the keepalive of [`KEEPALIVE_IDLE`] on TCP socket `fd`. No
/// `TCP_USER_TIMEOUT`: since Linux 5.1 it also ends a connection whose
/// peer's window stays shut that long, which is what back-pressure does
/// on purpose (a parent holding a flooding worker back, a worker busy in a
/// handler), and would make a false loss of it.
pub(crate) fn keep_alive(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from a local.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE.as_secs() as libc::c_int)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL.as_secs() as libc::c_int)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES as libc::c_int)
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
