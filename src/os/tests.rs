//! The kernel calls of `os.rs`, checked in forked children where they
//! change the process.

use std::os::fd::AsFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::resource::setrlimit;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::*;

/// Runs `mark_all_cloexec(dir)` in a forked child and says whether
/// descriptor `fd` came out close-on-exec there.
fn marked_in_a_child(dir: &CStr, fd: BorrowedFd<'_>) -> bool {
    // SAFETY: the child calls only async-signal-safe functions that do
    // not allocate (the marking, fcntl, _exit); the parent waits for it.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // SAFETY: the child execs nothing; it exits below.
            unsafe { mark_all_cloexec(dir) };
            let flags = fcntl(fd, FcntlArg::F_GETFD);
            let marked =
                flags.is_ok_and(|f| FdFlag::from_bits_retain(f).contains(FdFlag::FD_CLOEXEC));
            // Raw: nix has no `_exit`, and std's `exit` runs exit handlers.
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if marked { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            matches!(waitpid(child, None).expect("waitpid"), WaitStatus::Exited(_, 0))
        }
    }
}

#[test]
fn the_close_on_exec_fallback_covers_every_descriptor() {
    // A descriptor above 4096, without close-on-exec.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < 5001 && hard >= 5001 {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, 5001, hard);
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let high = (soft.min(5001) - 1) as libc::c_int;
    let (r, _w) = std::io::pipe().unwrap();
    let fd = fcntl(&r, FcntlArg::F_DUPFD(high)).expect("F_DUPFD");
    assert_eq!(fd, high);
    // SAFETY: the descriptor F_DUPFD just made, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())).expect("F_SETFD");
    assert!(marked_in_a_child(c"/proc/self/fd", fd.as_fd()), "through /proc");
    assert!(marked_in_a_child(c"/nonexistent", fd.as_fd()), "without /proc");
}

/// The table's size, as the kernel says (`FDSize`).
fn table_size() -> u64 {
    status().table.expect("FDSize") as u64
}

/// The hard `RLIMIT_NOFILE`, as a descriptor number.
fn hard_limit() -> i32 {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    i32::try_from(hard).unwrap_or(i32::MAX)
}

#[test]
fn a_process_with_its_standard_descriptors_closed_still_grows_its_table() {
    let grown = || {
        let table = status().table.unwrap();
        for fd in 0..=2 {
            // SAFETY: closes the child's own standard descriptors.
            unsafe { libc::close(fd) };
        }
        reserve_descriptors(table - 1);
        let reserved = reserved();
        status().table.unwrap() >= (table + 255).min(hard_limit()) && reserved > 0
    };
    assert!(in_a_fresh_child(grown), "the table did not grow from /dev/null");
}

/// Runs `f` in a forked child, as a process that has reserved nothing
/// yet, with its soft descriptor limit at the hard one (room to grow):
/// true if `f` returned true there.
fn in_a_fresh_child(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child reads /proc, dups, may start a thread, and
    // ends with _exit; glibc's fork leaves its allocator usable there.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            RESERVED.store(0, std::sync::atomic::Ordering::Relaxed);
            let raised = getrlimit(Resource::RLIMIT_NOFILE)
                .and_then(|(_, hard)| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
            let f = std::panic::AssertUnwindSafe(f);
            let ok = raised.is_ok() && std::panic::catch_unwind(f).unwrap_or(false);
            // SAFETY: ends the child at once, running no exit handler.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            matches!(waitpid(child, None).expect("waitpid"), WaitStatus::Exited(_, 0))
        }
    }
}

#[test]
fn a_process_of_one_thread_grows_its_table_before_its_spawner_exists() {
    // Alone (a fork has one thread): grown at once, 256 beyond it.
    let grown = || {
        let (before, hard) = (status(), hard_limit());
        reserve_descriptors_while_alone();
        let (table, after) = (before.table.unwrap(), status().table.unwrap());
        before.threads == Some(1) && after >= (table + 255).min(hard)
    };
    assert!(in_a_fresh_child(grown), "a process of one thread did not grow its table");
    // With a second thread the growth would wait for a grace period:
    // left to `reserve_descriptors` on the spawner thread.
    let left = || {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let before = status();
        reserve_descriptors_while_alone();
        let after = status();
        drop(tx);
        let _ = other.join();
        let reserved = reserved();
        before.threads == Some(2) && after.table == before.table && reserved == 0
    };
    assert!(in_a_fresh_child(left), "a process of two threads grew its table");
}

#[test]
fn the_descriptor_table_is_grown_ahead() {
    // Near the end of the table a process starts with.
    let (r, _w) = std::io::pipe().unwrap();
    let r = fcntl(&r, FcntlArg::F_DUPFD_CLOEXEC(40)).expect("F_DUPFD");
    // SAFETY: the descriptor F_DUPFD just made, ours alone.
    let r = unsafe { OwnedFd::from_raw_fd(r) };
    let n = r.as_raw_fd() as u64;
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    reserve_descriptors(r.as_raw_fd());
    let want = ((n + 1) * 2).max(n + 256).min(soft);
    assert!(table_size() >= want, "the table holds {} < {want}", table_size());
}
