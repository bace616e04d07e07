//! What a template says, believed (`server.rs`): the fork it says it
//! made, its answer, each only as far as it can be proven, and the end of
//! a fork its template failed.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use crate::handoff::template::Answer;
use crate::os;

/// How long a template has to answer a request: one fork, and the new
/// worker's steps.
pub(super) const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Why a template's answer is not used.
pub(super) enum Failed {
    /// Before the request reached it: the worker may be exec'd with the
    /// same descriptors.
    Before(io::Error),
    /// After: a fork may have been made with the request's descriptors,
    /// so they are not used again; the start fails.
    After(io::Error),
}

/// A template's answer, believed.
pub(super) enum Believed {
    /// The worker, and the pidfd its fork made.
    Started(i32, OwnedFd),
    Failed {
        pid: i32,
        errno: i32,
    },
    NotForked(i32),
}

/// What a fork said of itself before its steps (`template::copy_packet`):
/// its pid, and a pidfd of it when one came.
pub(super) struct Copy {
    pub(super) pid: i32,
    pub(super) pidfd: Option<OwnedFd>,
}

impl Copy {
    /// Whether it is a child of ours, named by the pidfd it sent; `Err`
    /// if this process is too short of descriptors to read which process
    /// its pidfd names.
    fn proven(&self) -> io::Result<bool> {
        let Some(fd) = &self.pidfd else { return Ok(false) };
        Ok(os::pidfd_pid_read(fd.as_fd())? == Some(self.pid) && os::unreaped_child(self.pid))
    }

    /// Ends the fork and reaps it, within a bound: its template failed
    /// (died, or answered what it must not). Only through the pidfd it
    /// sent, naming a child of ours: never by a bare pid, and no other
    /// process is signalled or reaped. This process too short of
    /// descriptors to read which process the pidfd names, the kernel says
    /// whether it is a child of ours (`waitid`); a fork whose pidfd could
    /// not be installed at all is left, a zombie until the parent exits.
    pub(super) fn end(self) {
        let Some(fd) = &self.pidfd else { return };
        let ours = match self.proven() {
            Ok(ours) => ours,
            Err(e) if os::scarce(&e) => os::pidfd_child(fd.as_fd()),
            Err(_) => false,
        };
        if ours && os::pidfd_kill(fd.as_fd()) && readable_within(fd.as_fd(), ANSWER_WAIT) {
            os::reap(self.pid);
        }
    }
}

/// An answer, if its pid is a child of ours, and the fork that said it
/// was made: a worker's or a failed step's pid must be that fork's, and a
/// worker's must come with the pidfd that fork made (`CLONE_PIDFD`), which
/// names it. The parent signals and reaps a worker's process, never
/// another's, and no other worker's. A fork the answer does not account
/// for is ended.
pub(super) fn believed(
    answer: Answer,
    proof: Vec<OwnedFd>,
    copy: Option<Copy>,
) -> Result<Believed, Failed> {
    let proven = copy.as_ref().map(|copy| (copy.pid, copy.proven()));
    let verdict = match proven {
        Some((_, Err(e))) => Err(Failed::After(e)),
        proven => judged(answer, proof, proven.map(|(pid, p)| (pid, p.unwrap_or(false)))),
    };
    if verdict.is_err() {
        copy.into_iter().for_each(Copy::end);
    }
    verdict
}

/// [`believed`]'s verdict, `copy` the pid the fork said it has, and
/// whether its pidfd proved it a child of ours.
fn judged(
    answer: Answer,
    proof: Vec<OwnedFd>,
    copy: Option<(i32, bool)>,
) -> Result<Believed, Failed> {
    let invalid = |what: String| Failed::After(io::Error::new(io::ErrorKind::InvalidData, what));
    let pid = match answer {
        Answer::Started(pid) | Answer::Failed { pid, .. } => pid,
        Answer::NotForked(errno) if copy.is_none() => return Ok(Believed::NotForked(errno)),
        Answer::NotForked(_) => return Err(invalid("not forked, yet a fork was made".into())),
    };
    // The fork must have said so itself: a template's answer alone (a
    // pidfd it may have opened of any process) names no fork.
    let Some((copy, proven)) = copy.filter(|&(copy, _)| copy == pid) else {
        return Err(invalid(format!("pid {pid} is not the fork that was made")));
    };
    // A failed step's process is reaped by its pid: only one proven ours.
    if let (Answer::Failed { .. }, false) = (&answer, proven) {
        return Err(invalid(format!("failed fork {copy} without a pidfd of it")));
    }
    if !os::unreaped_child(pid) {
        return Err(invalid(format!("pid {pid} is not our child")));
    }
    if let Answer::Failed { errno, .. } = answer {
        return Ok(Believed::Failed { pid, errno });
    }
    let mut proof = proof.into_iter();
    let (pidfd, more) = (proof.next(), proof.next());
    let named = pidfd.as_ref().map(|fd| os::pidfd_pid_read(fd.as_fd()));
    match (pidfd, more, named) {
        (Some(pidfd), None, Some(Ok(named))) if named == Some(pid) => {
            Ok(Believed::Started(pid, pidfd))
        }
        // This process out of descriptors: nothing held against the
        // template.
        (_, _, Some(Err(e))) if os::scarce(&e) => Err(Failed::After(e)),
        _ => Err(invalid(format!("pid {pid} without the pidfd of the fork that made it"))),
    }
}

/// Whether this process is out of descriptors now: `fd` cannot be
/// duplicated for want of one.
pub(super) fn short_of_descriptors(fd: BorrowedFd<'_>) -> bool {
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)) {
        // SAFETY: the duplicate just made, ours alone.
        Ok(dup) => drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) }),
        Err(e) => return matches!(e, nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE),
    }
    false
}

/// Waits up to [`ANSWER_WAIT`] for child `pid` to exit, and reaps it;
/// false if it lives on.
pub(super) fn exits_in_time(pid: i32) -> bool {
    let Some(pidfd) = os::pidfd_open(pid) else {
        // Gone already (reaped), or a kernel without pidfds: reap, or not.
        return os::reap(pid).is_some() || !os::exists(pid);
    };
    if !readable_within(pidfd.as_fd(), ANSWER_WAIT) {
        return false;
    }
    os::reap(pid);
    true
}

/// Waits until `fd` is readable (or hung up), up to `wait`, whatever
/// signals interrupt the wait: the spawner thread is the parent of every
/// worker, and gets their SIGCHLD.
pub(super) fn readable_within(fd: BorrowedFd<'_>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if os::ready(&[fd], PollFlags::POLLIN, left) {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}
