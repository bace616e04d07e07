//! Starting a worker's process with `clone(CLONE_VM | CLONE_VFORK)`, as
//! glibc's `posix_spawn` does, instead of `fork`.
//!
//! A fork copies the parent's page tables (then every page either side
//! writes is copied on its fault) and, in glibc, takes the allocator's
//! arena locks around it: with many starts at once the parent's event
//! loop waited on both (issue 27). Here the child shares the parent's
//! memory and runs on a small stack of its own until it execs; the
//! calling thread (the spawner's) is suspended meanwhile, nothing else of
//! the parent is. Nothing is copied and no lock is taken.
//!
//! The price: the child runs in the parent's memory, with the parent's
//! thread-local storage, while other threads of the parent run on. So it
//! does system calls and nothing else: no allocation, no lock, no std I/O,
//! no panic, no signal handler of the parent's (all signals are blocked
//! around the clone and reset to their defaults in the child before it
//! unblocks them). Everything it reads was made by the parent beforehand
//! (`plan.rs`). Its steps are those `std::process::Command` and our
//! `pre_exec` take after a fork (`forked.rs`, the fallback): standard
//! descriptors, directory, process group, then the steps both share
//! (`plan::last_steps`: signals reset, parent-death signal, close-on-exec
//! of all but the socket, resource limits), exec (and, as
//! `execvp` does, `/bin/sh` with the file when the kernel does not know
//! its format). If a step or the exec fails, the child writes the error
//! number where the parent reads it once `clone` returns (the child has
//! exited by then) and exits.
//!
//! `libc::clone`, glibc's wrapper: it switches to the new stack and calls
//! a function there, which a raw `clone`/`clone3` system call cannot do
//! safely from Rust (the child would return into the parent's frames on a
//! stack of its own); nix's `sched::clone` would do, but boxes the
//! callback and needs nix's `sched` feature for nothing more.

use std::cell::RefCell;
use std::convert::Infallible;
use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::unistd::{chdir, dup2_stderr, dup2_stdin, dup2_stdout, getpid, setpgid, Pid};

use super::plan::{last_steps, Plan};
use crate::os;

/// Why a start by clone did not happen.
pub(crate) enum Failed {
    /// The kernel refuses the clone itself (`EPERM` from a seccomp filter,
    /// `ENOSYS`): a start by fork may still work.
    Unavailable(io::Error),
    /// Any other error: the start's own.
    Start(io::Error),
}

/// What the child reads, all made by the parent before the clone, and
/// where it writes why it did not exec.
struct Child<'a> {
    plan: &'a Plan,
    /// `plan`'s arguments and environment, as the null-terminated arrays
    /// of pointers `execve` takes.
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// The arguments that run the file with `/bin/sh` instead, as `execvp`
    /// does when the kernel does not know its format (a script without
    /// `#!`): `/bin/sh`, the file, then the arguments after the name.
    sh_argv: *const *const c_char,
    /// The parent's process id, taken before the clone.
    parent: Pid,
    /// The error number of the step that failed; 0 while none did.
    errno: AtomicI32,
}

/// Starts `plan`'s process; its pid.
pub(crate) fn start(plan: &Plan) -> Result<u32, Failed> {
    let argv = pointers(&plan.exec.argv);
    let envp = pointers(&plan.exec.envp);
    let sh_argv: Vec<*const c_char> = [SH.as_ptr(), plan.exec.path.as_ptr()]
        .into_iter()
        .chain(argv.iter().skip(1).copied())
        .collect();
    let child = Child {
        plan,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sh_argv: sh_argv.as_ptr(),
        parent: getpid(),
        errno: AtomicI32::new(0),
    };
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let (pid, errno) = STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        let top = match &mut *stack {
            Some(stack) => stack.top(),
            empty => empty.insert(Stack::new().map_err(|e| Failed::Start(e.into()))?).top(),
        };
        // No handler of the parent's may run in the child, on the child's
        // stack, before it has reset them: glibc's posix_spawn does the same.
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old))
            .map_err(|e| Failed::Start(e.into()))?;
        // SAFETY: `run` is called on the top of a stack mapped for it alone
        // (the thread that owns it is suspended until the child has exec'd
        // or exited, CLONE_VFORK), with a pointer to `child`, which lives on
        // this frame until after the clone returns; it makes only system
        // calls, allocates nothing and never returns (see `run`). SIGCHLD:
        // the child is an ordinary one, reaped by `waitpid` (`os::reap`).
        let pid = unsafe { libc::clone(run, top, flags, ptr::from_ref(&child) as *mut c_void) };
        let errno = Errno::last();
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        Ok((pid, errno))
    })?;
    if pid < 0 {
        return Err(match errno {
            Errno::EPERM | Errno::ENOSYS => Failed::Unavailable(errno.into()),
            _ => Failed::Start(errno.into()),
        });
    }
    // The child has exec'd or exited: whatever it wrote is written.
    match child.errno.load(Ordering::Acquire) {
        0 => Ok(pid as u32),
        errno => {
            // It exited: reaped here, as a start that never was.
            os::reap(pid);
            Err(Failed::Start(io::Error::from_raw_os_error(errno)))
        }
    }
}

/// `strings` as the null-terminated array of pointers `execve` takes;
/// valid while `strings` is.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([ptr::null()]).collect()
}

/// The child's side of the clone: runs the plan's steps and execs; on a
/// failure, writes its error number for the parent and exits with 127.
extern "C" fn run(child: *mut c_void) -> c_int {
    // SAFETY: the pointer `start` passed to clone, to a `Child` that lives
    // until the clone returns, which is after this function has exec'd or
    // exited.
    let child = unsafe { &*(child as *const Child<'_>) };
    // SAFETY: this is the cloned child before its exec.
    let Err(errno) = unsafe { exec(child) };
    child.errno.store(errno as i32, Ordering::Release);
    // Raw: nix has no `_exit`, and std's `exit` runs the parent's exit
    // handlers. SAFETY: ends the child at once; its stack is the parent's
    // to reuse.
    unsafe { libc::_exit(127) }
}

/// What the child does between the clone and its program, each step one
/// system call (see the module docs); returns only with the error of the
/// step that failed.
///
/// # Safety
///
/// Only in the child of `start`'s clone.
unsafe fn exec(child: &Child<'_>) -> nix::Result<Infallible> {
    let plan = child.plan;
    let dups: [fn(&OwnedFd) -> nix::Result<()>; 3] =
        [|fd| dup2_stdin(fd), |fd| dup2_stdout(fd), |fd| dup2_stderr(fd)];
    // Each above the standard descriptors (`Plan`), so none is overwritten
    // before it is duplicated, and each copy is open across the exec.
    for (dup, fd) in dups.iter().zip(&plan.stdio) {
        if let Some(fd) = fd {
            dup(fd)?;
        }
    }
    if let Some(dir) = &plan.exec.cwd {
        chdir(dir.as_c_str())?;
    }
    setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    // Signals stay blocked until these reset them.
    // SAFETY: this is the child of the clone, about to exec.
    unsafe { last_steps(child.parent, plan.socket, plan.limits()) }?;
    // Raw: nix's `execve` builds its pointer arrays in a Vec.
    // SAFETY: the path and both arrays, null-terminated, were made by the
    // parent and live until the clone returns.
    unsafe { libc::execve(plan.exec.path.as_ptr(), child.argv, child.envp) };
    let errno = Errno::last();
    if errno == Errno::ENOEXEC {
        // SAFETY: as above; `sh_argv` is null-terminated (`argv`'s end).
        unsafe { libc::execve(SH.as_ptr(), child.sh_argv, child.envp) };
    }
    Err(errno)
}

/// The shell `execvp` runs a file of no known format with.
const SH: &std::ffi::CStr = c"/bin/sh";

/// The size of the child's stack: what `exec` needs (the close-on-exec
/// fallback reads a directory into 4 KiB on it), with a wide margin for
/// debug builds.
const STACK_SIZE: usize = 128 << 10;
/// Below it, a guard: an overflow kills the child (SIGSEGV) instead of
/// writing over the parent's memory. A multiple of every page size.
const GUARD_SIZE: usize = 64 << 10;

thread_local! {
    /// The calling thread's child stack, mapped on its first start and
    /// kept: it is only ever in use while that thread is suspended in the
    /// clone, and unmapping it after each start would interrupt every
    /// other thread of the parent to flush its TLB.
    static STACK: RefCell<Option<Stack>> = const { RefCell::new(None) };
}

/// An anonymous mapping for the child's stack, with its guard.
struct Stack {
    base: NonNull<c_void>,
}

impl Stack {
    fn new() -> Result<Stack, Errno> {
        let len = NonZeroUsize::new(GUARD_SIZE + STACK_SIZE).ok_or(Errno::EINVAL)?;
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new private mapping where the kernel chooses; nothing
        // else refers to it.
        let base =
            unsafe { mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK) }?;
        let stack = Stack { base };
        // SAFETY: the lowest part of the mapping just made, unused.
        unsafe { mprotect(base, GUARD_SIZE, ProtFlags::PROT_NONE) }?;
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.as_ptr().byte_add(GUARD_SIZE + STACK_SIZE) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made; no child runs on it (the thread
        // that owns it is exiting).
        let _ = unsafe { munmap(self.base, GUARD_SIZE + STACK_SIZE) };
    }
}
