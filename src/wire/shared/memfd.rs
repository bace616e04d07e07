//! The operating system's side of a shared buffer: a memfd made and
//! sealed, a mapping of one, and the checks a received one must pass
//! before this side maps it.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
use nix::unistd::{ftruncate, lseek, Whence};

/// The seals a received buffer must carry: nobody can write to it, shrink
/// it (reading a truncated mapping would be a SIGBUS) or grow it.
pub(super) const SEALS: SealFlag =
    SealFlag::F_SEAL_WRITE.union(SealFlag::F_SEAL_SHRINK).union(SealFlag::F_SEAL_GROW);

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
            let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
            (prot, MapFlags::MAP_SHARED, MmapAdvise::MADV_POPULATE_WRITE)
        } else {
            (ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE, MmapAdvise::MADV_POPULATE_READ)
        };
        // No bytes: refused, as the kernel refuses to map none.
        let size = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh mapping of a descriptor we hold; nothing else is at
        // the address the kernel picks.
        let ptr = unsafe { mmap(None, size, prot, flags, fd, 0) }?;
        let map = Mapping { ptr: ptr.cast(), len };
        // Not copied into children this process forks (a worker being
        // started on another thread): a writable copy there, until its
        // exec, would make sealing fail (EBUSY); and a fork need not copy
        // page tables it will drop.
        // SAFETY: advice on the mapping just made.
        unsafe { madvise(ptr, len, MmapAdvise::MADV_DONTFORK) }?;
        // Every page at once, once it is not forked (before Linux 5.14,
        // which lacks this advice, page by page as it is touched).
        // SAFETY: advice on the mapping just made.
        let _ = unsafe { madvise(ptr, len, populate) };
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
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// A new memfd of `len` bytes (zero), that can be sealed.
pub(super) fn memfd(len: usize) -> io::Result<OwnedFd> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let fd = memfd_create(c"actix-webworker", flags)?;
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::other("too large"))?;
    ftruncate(&fd, size)?;
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
        let e = match fcntl(fd, FcntlArg::F_ADD_SEALS(SEALS | SealFlag::F_SEAL_SEAL)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if e != Errno::EBUSY || wait > std::time::Duration::from_millis(500) {
            return Err(e.into());
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
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS)
        .map_err(|e| format!("not a sealable memfd ({})", io::Error::from(e)))?;
    if !SealFlag::from_bits_retain(seals).contains(SEALS) {
        return Err(format!(
            "not sealed against writing, shrinking and growing (seals {seals:#x})"
        ));
    }
    let size = usize::try_from(stat.st_size).unwrap_or(0);
    if size < len {
        return Err(format!("{size} bytes where {len} were announced"));
    }
    // A memfd of ordinary pages (a huge-page one maps in larger units).
    let fs = fstatfs(fd).map_err(|e| format!("fstatfs failed: {}", io::Error::from(e)))?;
    if fs.filesystem_type() != TMPFS_MAGIC {
        let found = fs.filesystem_type().0;
        return Err(format!("not a memfd of ordinary pages (file system {found:#x})"));
    }
    // Its memory is the sender's, already there: a hole in the range
    // read (a file set large and never written, or written only past
    // it) would have the reader's page faults allocate it, charged to
    // the reader. The whole file's block count cannot tell where the
    // pages are; the first hole can.
    // It moves only the descriptor's offset, which nothing here reads from.
    let hole = lseek(fd, 0, Whence::SeekHole).map_or(0, |hole| usize::try_from(hole).unwrap_or(0));
    if hole < len {
        return Err(format!("sparse: a hole at byte {hole} of the {len} announced"));
    }
    Ok(())
}

/// The `fstat` of `fd`.
pub(super) fn stat(fd: &OwnedFd) -> Result<libc::stat, String> {
    fstat(fd).map_err(|e| format!("fstat failed: {}", io::Error::from(e)))
}
