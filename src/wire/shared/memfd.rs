//! The operating system's side of a shared buffer: a memfd made and
//! sealed, a mapping of one, and the checks a received one must pass
//! before this side maps it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// The seals a received buffer must carry: nobody can write to it, shrink
/// it (reading a truncated mapping would be a SIGBUS) or grow it.
pub(super) const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A mapping, unmapped when dropped.
pub(super) struct Mapping {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; shared ones are
// read-only (sealed), the writable one is owned by one `SharedBytesMut`.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only reads.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`, every page at once (one call rather than a
    /// fault per page) and never into a forked child: writable and shared,
    /// or read-only. A read-only
    /// view of a sealed memfd is the same bytes either way; it is private
    /// because kernels before 6.7 refuse a shared mapping of a
    /// write-sealed memfd, even a read-only one.
    pub(super) fn map(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Mapping> {
        let (prot, flags, populate) = if writable {
            (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, libc::MADV_POPULATE_WRITE)
        } else {
            (libc::PROT_READ, libc::MAP_PRIVATE, libc::MADV_POPULATE_READ)
        };
        // SAFETY: a fresh mapping of a descriptor we hold; nothing else is at
        // the address the kernel picks.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
        let map = Mapping { ptr, len };
        // Not copied into children this process forks (a worker being
        // started on another thread): a writable copy there, until its
        // exec, would make sealing fail (EBUSY); and a fork need not copy
        // page tables it will drop.
        // SAFETY: advice on the mapping just made.
        if unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Every page at once, once it is not forked (before Linux 5.14,
        // which lacks this advice, page by page as it is touched).
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(ptr.as_ptr().cast(), len, populate) };
        Ok(map)
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped at `ptr` for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A new memfd of `len` bytes (zero), that can be sealed.
pub(super) fn memfd(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static name; the result is checked.
    let fd = unsafe {
        libc::memfd_create(c"actix-webworker".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel has just made for us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::other("too large"))?;
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Seals `fd` for good: no more writing, shrinking or growing, and no
/// seal taken off.
///
/// The kernel refuses (EBUSY) while a writable mapping of the file exists
/// anywhere: ours is gone by then, but a process forked in the instant
/// between our `mmap` and its `MADV_DONTFORK` (a worker being started on
/// another thread) holds a copy until its `exec`. So EBUSY is tried again,
/// for up to about a second.
pub(super) fn seal(fd: &OwnedFd) -> io::Result<()> {
    let mut wait = std::time::Duration::from_micros(100);
    loop {
        // SAFETY: fcntl on a descriptor we hold.
        let sealed =
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS | libc::F_SEAL_SEAL) };
        if sealed == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || wait > std::time::Duration::from_millis(500) {
            return Err(e);
        }
        std::thread::sleep(wait);
        wait *= 2;
    }
}

/// Whether descriptor `fd` (whose `fstat` is `stat`), received for a
/// buffer of `len` bytes (not 0), is one this side may map: a memfd of
/// ordinary pages, of at least `len` bytes, sealed against writing,
/// shrinking and growing, with no hole in its first `len` bytes. Why not,
/// if not.
pub(super) fn check_received(fd: &OwnedFd, stat: &libc::stat, len: usize) -> Result<(), String> {
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(format!("not a sealable memfd ({})", io::Error::last_os_error()));
    }
    if seals & SEALS != SEALS {
        return Err(format!(
            "not sealed against writing, shrinking and growing (seals {seals:#x})"
        ));
    }
    let size = usize::try_from(stat.st_size).unwrap_or(0);
    if size < len {
        return Err(format!("{size} bytes where {len} were announced"));
    }
    // A memfd of ordinary pages (a huge-page one maps in larger units).
    // SAFETY: an all-zero statfs is valid; fstatfs fills it.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs on a descriptor we own, into a local.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } != 0 {
        return Err(format!("fstatfs failed: {}", io::Error::last_os_error()));
    }
    if fs.f_type != libc::TMPFS_MAGIC {
        return Err(format!("not a memfd of ordinary pages (file system {:#x})", fs.f_type));
    }
    // Its memory is the sender's, already there: a hole in the range
    // read (a file set large and never written, or written only past
    // it) would have the reader's page faults allocate it, charged to
    // the reader. The whole file's block count cannot tell where the
    // pages are; the first hole can.
    // SAFETY: lseek on a descriptor we own; it moves only its offset,
    // which nothing here reads from.
    let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
    let hole = usize::try_from(hole).unwrap_or(0);
    if hole < len {
        return Err(format!("sparse: a hole at byte {hole} of the {len} announced"));
    }
    Ok(())
}

/// The `fstat` of `fd`.
pub(super) fn stat(fd: &OwnedFd) -> Result<libc::stat, String> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, into a local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(format!("fstat failed: {}", io::Error::last_os_error()));
    }
    Ok(stat)
}
