//! A template worker: the worker's executable, started once by the parent
//! with [`ENV_TEMPLATE`] and kept waiting on the first line of its `main`
//! (in [`run_if_worker`](super::run_if_worker) or
//! [`run_worker`](super::run_worker)), past exec, the loader and
//! everything before that line. For each worker the parent asks for, it
//! forks: the copy becomes that worker and goes on from the same line, as
//! if it had just been started. The parent's side, and why, is
//! `parent/spawn/server.rs`.
//!
//! The copy is made with `clone(CLONE_PARENT | CLONE_PIDFD)`: it is the
//! *parent's* child, not the template's, so the parent reaps it, reads
//! its exit status and holds a pidfd of it (the one the fork made, sent
//! with the answer) as of any worker, and its parent-death
//! signal follows the parent's spawner thread, as an exec'd worker's does.
//! Before it runs anything of the worker's it takes the steps an exec'd
//! worker's start takes: its own stdio as asked, its own process group,
//! SIGTERM when the parent dies, its resource limits. It closes the
//! template's end of the exchange and the request's descriptors but its
//! socket. Nothing of the parent's is open in it: the template was exec'd
//! with every descriptor of the parent's closed, as a worker is, and
//! keeps none of a request's past its fork. What the program itself
//! opened before that first line stays open, as its memory stays: it is
//! the program's own state, as it would be after an exec.
//!
//! A process can be forked safely only with one thread and no runtime: a
//! template that has either (`run_if_worker` called from an async `main`,
//! or from a test harness's thread) says so and exits, and the parent
//! starts its workers by exec.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::setrlimit;
use nix::sys::signal::Signal;
use nix::unistd::{getppid, setpgid, Pid};

use crate::handoff::template::{
    self, Answer, Request, ENV_TEMPLATE, FDS, LIMITED, MAGIC, MAX_PACKET, READY, REFUSED,
};
use crate::handoff::{exit_code, ENV_ENTRY, ENV_FD, ENV_MAX_MESSAGE};

/// When this process was started as a template, serves the parent's
/// requests, and returns (true) only in a worker it forked, ready to run
/// as one, on a thread of its own (`entry.rs`); otherwise returns false
/// at once.
pub(crate) fn serve_if_template() -> bool {
    let Some(value) = std::env::var_os(ENV_TEMPLATE) else { return false };
    // Single-threaded here, or `forkable` below says so.
    std::env::remove_var(ENV_TEMPLATE);
    let Some(control) = value.to_str().and_then(|v| v.parse::<RawFd>().ok()).and_then(socket)
    else {
        tracing::error!("{ENV_TEMPLATE} names no socket; not a template");
        std::process::exit(exit_code::NOT_A_WORKER);
    };
    let parent = getppid();
    if let Err(why) = forkable() {
        let refusal = [&MAGIC[..], REFUSED, why.as_bytes()].concat();
        let _ = template::send(control.as_fd(), &refusal, &[]);
        std::process::exit(0);
    }
    if template::send(control.as_fd(), &[&MAGIC[..], READY].concat(), &[]).is_err() {
        std::process::exit(exit_code::IO);
    }
    let mut packet = vec![0u8; MAX_PACKET];
    loop {
        let (len, fds) = match template::receive(control.as_fd(), &mut packet) {
            Ok(Some(received)) => received,
            // The parent let go of us: nothing more to start.
            Ok(None) => std::process::exit(0),
            Err(e) => {
                tracing::error!(error = %e, "the template's exchange with its parent failed");
                std::process::exit(exit_code::IO);
            }
        };
        let request = Request::decode(&packet[..len]).filter(|_| fds.len() == FDS);
        let Some(request) = request else {
            let _ = template::send(
                control.as_fd(),
                &Answer::NotForked(Errno::EINVAL as i32).encode(),
                &[],
            );
            continue;
        };
        let (answer, pidfd) = match fork_worker() {
            Forked::Copy(report) => {
                announce(control.as_fd());
                become_worker(control, request, fds, parent, report);
                return true;
            }
            Forked::Answer(answer, pidfd) => (answer, pidfd),
        };
        drop(fds);
        let proof: Vec<RawFd> = pidfd.iter().map(AsRawFd::as_raw_fd).collect();
        if template::send(control.as_fd(), &answer.encode(), &proof).is_err() {
            std::process::exit(exit_code::IO);
        }
    }
}

/// In the copy, before any step: tells the parent its pid, with a pidfd
/// of itself, so that the parent can end and reap it even if the template
/// dies before it answers. Not told (the parent gone), the copy goes on:
/// its steps see its parent gone.
fn announce(control: BorrowedFd<'_>) {
    let pid = std::process::id() as i32;
    let me = crate::os::pidfd_open(pid);
    let fds: Vec<RawFd> = me.iter().map(AsRawFd::as_raw_fd).collect();
    let _ = template::send(control, &template::copy_packet(pid), &fds);
}

/// Where a fork left this process.
enum Forked {
    /// In the copy, with the pipe to report a failed step on.
    Copy(OwnedFd),
    /// In the template, with the answer for the parent and the pidfd of
    /// the worker it names.
    Answer(Answer, Option<OwnedFd>),
}

/// Forks a worker and waits until it has taken its start's steps (or
/// failed one, and said which error): a step that fails is the start's
/// error, as a failed exec's is.
fn fork_worker() -> Forked {
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(errno) => return Forked::Answer(Answer::NotForked(errno as i32), None),
    };
    let (pid, pidfd) = match fork() {
        Ok((0, _)) => return Forked::Copy(write),
        Ok(made) => made,
        Err(errno) => return Forked::Answer(Answer::NotForked(errno as i32), None),
    };
    drop(write);
    // Closed by the copy once its steps are taken; its error number first
    // if one failed. Ended as well if the copy is killed meanwhile, which
    // its parent then sees as its exit.
    let mut errno = [0u8; 4];
    let reported = std::io::Read::read_exact(&mut std::fs::File::from(read), &mut errno).is_ok();
    match i32::from_le_bytes(errno) {
        errno if reported && errno > 0 => Forked::Answer(Answer::Failed { pid, errno }, None),
        _ => Forked::Answer(Answer::Started(pid), pidfd),
    }
}

/// `fd`, owned, if it is an open socket.
fn socket(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fstat on any number is harmless; it tells whether it is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 3
        || unsafe { libc::fstat(fd, &mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
    {
        return None;
    }
    // SAFETY: the parent handed us this descriptor for the exchange alone.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(&owned, cloexec).ok()?;
    Some(owned)
}

/// Whether this process can be forked: one thread, no runtime.
fn forkable() -> Result<(), String> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err("called inside a runtime (an async main)".into());
    }
    match crate::os::status().threads {
        Some(1) => Ok(()),
        Some(n) => Err(format!("{n} threads (a fork keeps only one)")),
        None => Err("/proc/self/status cannot say how many threads".into()),
    }
}

/// `clone(CLONE_PARENT | CLONE_PIDFD)`: 0 in the copy; here its pid, and
/// a pidfd of it (made by the kernel in this process only, after the copy
/// has its own table), which the parent is sent as proof of what was made.
fn fork() -> Result<(i32, Option<OwnedFd>), Errno> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    // No exit signal of its own: with CLONE_PARENT the copy has the
    // template's (SIGCHLD, to the same parent), and clone3 refuses one.
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        ..Default::default()
    };
    // Raw: neither nix nor libc wraps clone3 (Linux 5.3), and glibc's
    // `fork` cannot make a sibling. With no stack given the copy runs on
    // its copy of ours, as after a fork. SAFETY: this process has one
    // thread (`forkable`) and holds no lock here, so the copy's memory is
    // consistent.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok((0, None)),
        // SAFETY: the kernel wrote a descriptor it just made for us.
        pid => Ok((pid as i32, (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }))),
    }
}

/// In the copy: takes the steps an exec'd worker's start takes, and sets
/// the variables an exec'd worker is given, for the entry to read. A step
/// that fails is reported on `report`, for the template to answer with,
/// and ends the copy (exit code 127, as a failed exec's child).
fn become_worker(
    control: OwnedFd,
    request: Request,
    fds: Vec<OwnedFd>,
    parent: Pid,
    report: OwnedFd,
) {
    drop(control);
    if let Err(errno) = steps(&request, fds, parent) {
        let _ = nix::unistd::write(&report, &(errno as i32).to_le_bytes());
        // SAFETY: ends this copy at once, running nothing of the template's.
        unsafe { libc::_exit(127) };
    }
    // Its steps taken: the template may answer.
    drop(report);
}

fn steps(request: &Request, fds: Vec<OwnedFd>, parent: Pid) -> nix::Result<()> {
    let [sock, stdin, stdout, stderr] =
        <[OwnedFd; FDS]>::try_from(fds).map_err(|_| Errno::EINVAL)?;
    nix::unistd::dup2_stdin(&stdin)?;
    nix::unistd::dup2_stdout(&stdout)?;
    nix::unistd::dup2_stderr(&stderr)?;
    drop((stdin, stdout, stderr));
    let sock = sock.into_raw_fd();
    setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    set_pdeathsig(Signal::SIGTERM)?;
    // The parent may have died before the prctl took effect.
    if getppid() != parent {
        // SAFETY: ends this copy at once.
        unsafe { libc::_exit(1) };
    }
    for (resource, limit) in LIMITED.into_iter().zip(request.limits) {
        if let Some((soft, hard)) = limit {
            setrlimit(resource, soft, hard)?;
        }
    }
    // One thread: nothing reads the environment beside us.
    std::env::set_var(ENV_FD, sock.to_string());
    std::env::set_var(ENV_MAX_MESSAGE, request.max_message.to_string());
    match &request.entry {
        Some(entry) => std::env::set_var(ENV_ENTRY, entry),
        None => std::env::remove_var(ENV_ENTRY),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::forkable;

    #[test]
    fn a_process_with_threads_is_not_forked() {
        // The test harness runs this on a thread of its own.
        let why = forkable().unwrap_err();
        assert!(why.contains("threads"), "{why}");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let why = runtime.block_on(async { forkable().unwrap_err() });
        assert!(why.contains("runtime"), "{why}");
    }
}
