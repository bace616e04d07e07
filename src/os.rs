//! The calls both sides make to the kernel about processes: pidfds, waiting
//! on descriptors, signals, reaping; the keepalive of a remote worker's
//! connection, set the same on both sides; and what a new worker runs
//! between its start and its exec: the close-on-exec fallback, the reset
//! of its signals. Through nix, which wraps them
//! safely, except `pidfd_open` and `getdents64`, which it does not wrap,
//! `waitpid`, whose status nix cannot give whole, and `fcntl` on a number
//! that may not be an open descriptor.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::signal::{self, Signal};
#[cfg(feature = "tcp")]
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::error::ExitStatus;

pub(crate) use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// A descriptor that becomes readable once process `pid` has exited (all
/// its threads), close-on-exec; `None` if the kernel cannot give one (before
/// Linux 5.3, or no such process).
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // Raw: nix does not wrap `pidfd_open`.
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a descriptor nothing else owns
    // (opened close-on-exec by the kernel).
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// Kills the process pidfd `fd` names (that exact process, whatever has
/// become of its pid); false if it could not.
pub(crate) fn pidfd_kill(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: a descriptor, a signal number, no siginfo, no flags.
    let sent = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGKILL, 0usize, 0)
    };
    sent == 0
}

/// The process a pidfd names, from `/proc/self/fdinfo` (its `Pid:`
/// line); `None` if it is no pidfd, or its process is gone (`-1`); `Err`
/// if `/proc` could not be read (this process out of descriptors, say).
pub(crate) fn pidfd_pid_read(fd: BorrowedFd<'_>) -> std::io::Result<Option<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
    Ok(proc_field(&info?, "Pid:").filter(|&pid| pid > 0))
}

/// Whether the process pidfd `fd` names is a child of this process not
/// reaped yet, asked of the kernel (no descriptor needed).
pub(crate) fn pidfd_child(fd: BorrowedFd<'_>) -> bool {
    unreaped(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t)
}

/// Whether `pid` is a child of this process not reaped yet (so its pid
/// is its own), asked of the kernel: no descriptor needed, as `/proc` is.
pub(crate) fn unreaped_child(pid: i32) -> bool {
    pid > 0 && unreaped(libc::P_PID, pid as libc::id_t)
}

/// Whether `waitid` finds the child `id` (a pid or a pidfd, as `idtype`
/// says) among this process's, without waiting and without reaping it.
fn unreaped(idtype: libc::idtype_t, id: libc::id_t) -> bool {
    // SAFETY: zeroed is a valid siginfo_t; waitid only writes it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: an id of `idtype`, a pointer to our siginfo, flags that
    // neither block nor reap.
    unsafe { libc::waitid(idtype, id, &mut info, flags) == 0 }
}

/// Whether `e` says this process ran short (of descriptors, of memory):
/// nothing a peer or a template did.
pub(crate) fn scarce(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The value of the line `name` (`"Pid:"`, `"Threads:"`) of a `/proc`
/// text of such lines.
fn proc_field<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines().find_map(|l| l.strip_prefix(name))?.trim().parse().ok()
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
#[cfg(feature = "tcp")]
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_IDLE`].
#[cfg(feature = "tcp")]
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE_IDLE`].
#[cfg(feature = "tcp")]
pub(crate) const KEEPALIVE_PROBES: u32 = 3;

/// Sets the keepalive of [`KEEPALIVE_IDLE`] on TCP socket `fd`. No
/// `TCP_USER_TIMEOUT`: since Linux 5.1 it also ends a connection whose
/// peer's window stays shut that long, which is what back-pressure does
/// on purpose (a parent holding a flooding worker back, a worker busy in a
/// handler), and would make a false loss of it.
#[cfg(feature = "tcp")]
pub(crate) fn keep_alive(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    setsockopt(&fd, sockopt::TcpKeepIdle, &(KEEPALIVE_IDLE.as_secs() as u32))?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &(KEEPALIVE_INTERVAL.as_secs() as u32))?;
    setsockopt(&fd, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)?;
    Ok(())
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
        // Raw: see above.
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

/// Marks every descriptor from 3 up close-on-exec, for kernels without
/// `close_range` (before 5.11). Async-signal-safe, and allocates nothing:
/// it runs between fork and exec, reading `fd_dir` (`/proc/self/fd`) with
/// raw `getdents64` into a buffer on the stack; without it, it marks every
/// number below the descriptor limit.
///
/// # Safety
///
/// Only for a process about to exec: it changes every descriptor's flags.
pub(crate) unsafe fn mark_all_cloexec(fd_dir: &CStr) {
    let mark = |fd: libc::c_int| {
        // Raw: any number, open or not; nix's fcntl takes an open one.
        // SAFETY: F_SETFD on any number is harmless; unknown ones fail.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(dir) = nix::fcntl::open(fd_dir, flags, Mode::empty()) else {
        let max = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => soft.min(1 << 20) as libc::c_int,
            Err(_) => 1 << 16,
        };
        (3..max).for_each(mark);
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        // Raw: nix does not wrap `getdents64` (its `Dir` is `opendir`,
        // which allocates).
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len())
        };
        if n <= 0 {
            break;
        }
        let mut pos = 0;
        while pos + 19 < n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let mut fd: libc::c_int = 0;
            let mut digits = 0;
            for &b in &buf[pos + 19..(pos + reclen).min(n as usize)] {
                if !b.is_ascii_digit() {
                    break;
                }
                fd = fd.saturating_mul(10).saturating_add(libc::c_int::from(b - b'0'));
                digits += 1;
            }
            if digits > 0 && fd > 2 && fd != dir.as_raw_fd() {
                mark(fd);
            }
            pos += reclen;
        }
    }
    // The directory closes with `dir`.
}

/// Gives every signal with a handler its default action back, and SIGPIPE
/// too (Rust's runtime ignores it; `Command` restores it for a child),
/// then unblocks every signal: a new worker starts with no signal of its
/// parent's blocked. Ignored signals stay ignored, as across any exec.
/// For a child sharing its parent's memory (a `CLONE_VM` clone), the
/// handlers are the parent's code, which must not run in the child: it
/// calls this with all signals blocked, so none can run before. Raw
/// `sigaction`: nix's cannot read an action without setting one, nor name
/// the real-time signals. Async-signal-safe, and allocates nothing.
///
/// # Safety
///
/// Only for a process about to exec: it changes its signal actions.
pub(crate) unsafe fn reset_signals() -> nix::Result<()> {
    for number in 1..=64 {
        if number == libc::SIGKILL || number == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a plain C struct, for which zeroes are a valid value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the action into a local; glibc's own signals (32,
        // 33) and numbers past the last fail with EINVAL, left alone.
        if unsafe { libc::sigaction(number, std::ptr::null(), &mut action) } != 0 {
            continue;
        }
        let handler = action.sa_sigaction;
        if handler == libc::SIG_DFL || (handler == libc::SIG_IGN && number != libc::SIGPIPE) {
            continue;
        }
        // SAFETY: as above; zeroes, then SIG_DFL, no flags, an empty mask.
        let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
        default.sa_sigaction = libc::SIG_DFL;
        // SAFETY: sets the default action, which runs no code of ours.
        unsafe { libc::sigaction(number, &default, std::ptr::null_mut()) };
    }
    signal::pthread_sigmask(signal::SigmaskHow::SIG_SETMASK, Some(&signal::SigSet::empty()), None)
}

/// What this process's `/proc/self/status` says of it: its threads
/// (`Threads:`) and the size of its descriptor table (`FDSize:`), each
/// `None` if it cannot say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    pub threads: Option<usize>,
    pub table: Option<i32>,
}

/// [`Status`] now.
pub(crate) fn status() -> Status {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Status { threads: proc_field(&text, "Threads:"), table: proc_field(&text, "FDSize:") }
}

/// Grows the descriptor table as [`reserve_descriptors`] would, now, if
/// this process has one thread: then no other task shares its table, and
/// the kernel does not wait for an RCU grace period (it waits only when
/// the table is shared), so the growth costs microseconds where, once the
/// spawner thread exists, it costs a grace period (10-35 ms on a VM) that
/// the next start waits for. Called before the spawner thread is started;
/// a process that already has threads is left to `reserve_descriptors`
/// after its first start. (A process of one thread whose table another
/// process shares, made by `clone(CLONE_FILES)` without `CLONE_THREAD`,
/// would wait for one grace period here, once.)
pub(crate) fn reserve_descriptors_while_alone() {
    if let Status { threads: Some(1), table: Some(table) } = status() {
        // Everything in use is below the table's size.
        reserve_descriptors(table - 1);
    }
}

/// How far this process's descriptor table has been grown by
/// [`reserve_descriptors`] (0: not yet).
static RESERVED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// How far the descriptor table has been grown ahead so far (0: not yet).
pub(crate) fn reserved() -> i32 {
    RESERVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Grows this process's descriptor table now, on the calling thread, so
/// that descriptors well above `highest` (the highest one in use) come
/// without growing it again: at once to 256 beyond it (a start of 64
/// workers makes about that many), then again whenever those in use come
/// within 64 of what was reserved.
/// The kernel grows the table when a descriptor beyond it is made; in a
/// process of several threads it then waits for an RCU grace period
/// (milliseconds), blocking whichever thread made the descriptor, and
/// those that make one beyond it meanwhile. Called on the spawner thread,
/// after the spawn's result is out, so that neither the event loop, which
/// dups and registers each new worker's socket, nor the start itself waits
/// for it; in a process that had one thread before its spawner, done
/// already by [`reserve_descriptors_while_alone`] for the first 256. The
/// table grows to twice what is in use (at least 256 more), within the
/// soft `RLIMIT_NOFILE`; it never shrinks.
pub(crate) fn reserve_descriptors(highest: i32) {
    use std::sync::atomic::Ordering::Relaxed;
    let n = highest;
    if n + 64 < RESERVED.load(Relaxed) {
        return;
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let target = ((n as u64 + 1) * 2).max(n as u64 + 256).min(limit) as i32;
    // The lowest free number from `target - 1` up is `target - 1` itself
    // when nothing above is open: the table grows to hold it. Duplicated
    // from a standard descriptor, so that no descriptor of ours is held
    // meanwhile (the growth waits for the grace period); closed at once.
    // With every standard descriptor closed (a daemon), from /dev/null,
    // opened for it. Nothing grown is nothing reserved: tried next time.
    if target - 1 > n {
        let grown = (0..=2).any(|source| dup_above(source, target - 1));
        let null =
            || nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty());
        if !grown && !null().is_ok_and(|null| dup_above(null.as_raw_fd(), target - 1)) {
            return;
        }
    }
    RESERVED.fetch_max(target, Relaxed);
}

/// Duplicates `source` to `at` or above, and closes the copy at once;
/// false if `source` is not open (or the copy could not be made).
fn dup_above(source: std::os::fd::RawFd, at: i32) -> bool {
    // Raw: the number may not be an open descriptor.
    // SAFETY: F_DUPFD_CLOEXEC on a number that may not be open fails with
    // EBADF; it touches no memory.
    let fd = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, at) };
    if fd >= 0 {
        // SAFETY: `fd` was just made here and nothing else has it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    fd >= 0
}

#[cfg(test)]
mod tests;
