//! Byte buffers that cross the process boundary without a copy:
//! [`SharedBytes`], filled in place through [`SharedBytesMut`].
//!
//! A buffer is a memfd. Frozen, it is sealed against writing, shrinking and
//! growing (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`) and mapped
//! read-only. A message that holds one is encoded with the buffer's
//! descriptor attached (as descriptors of [`Post::with_fds`] are) and only
//! an index and a length in the payload; the receiver checks the seals and
//! the size, and maps it read-only. No byte of it goes through the socket,
//! and neither side can change it afterwards.
//!
//! Encoded where descriptors cannot go (outside a message to a peer that
//! takes them), a buffer is written inline, as bytes, and read back as a
//! buffer of its own.
//!
//! [`Post::with_fds`]: crate::Post::with_fds

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::held::Holds;

/// The seals a received buffer must carry: nobody can write to it, shrink
/// it (reading a truncated mapping would be a SIGBUS) or grow it.
const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A mapping, unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
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
    fn map(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Mapping> {
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

    fn bytes(&self) -> &[u8] {
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
fn memfd(len: usize) -> io::Result<OwnedFd> {
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
fn seal(fd: &OwnedFd) -> io::Result<()> {
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

/// A buffer being filled, before it is shared: writable, owned by one.
/// [`freeze`](Self::freeze) seals it into a [`SharedBytes`].
///
/// ```no_run
/// # use actix_webworker::SharedBytesMut;
/// let mut buf = SharedBytesMut::new(1 << 20)?;
/// buf.fill(7);
/// let shared = buf.freeze()?; // read-only from now on, on both sides
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SharedBytesMut {
    /// The memfd and its writable mapping; none when empty.
    inner: Option<(OwnedFd, Mapping)>,
}

impl SharedBytesMut {
    /// A buffer of `len` zero bytes.
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Ok(SharedBytesMut { inner: None });
        }
        let fd = memfd(len)?;
        let map = Mapping::map(&fd, len, true)?;
        Ok(SharedBytesMut { inner: Some((fd, map)) })
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> io::Result<Self> {
        let mut buf = SharedBytesMut::new(bytes.len())?;
        buf.copy_from_slice(bytes);
        Ok(buf)
    }

    /// Seals the buffer (no more writing, shrinking or growing, by anyone):
    /// what is sent.
    pub fn freeze(self) -> io::Result<SharedBytes> {
        let Some((fd, map)) = self.inner else { return Ok(SharedBytes::default()) };
        let len = map.len;
        // The writable mapping goes first: a memfd with one cannot be
        // sealed against writing.
        drop(map);
        seal(&fd)?;
        Ok(sealed(Sealed::new(fd, len)))
    }
}

impl Deref for SharedBytesMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.inner.as_ref().map_or(&[], |(_, map)| map.bytes())
    }
}

impl DerefMut for SharedBytesMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            // SAFETY: a writable mapping of `len` bytes, owned by this value
            // alone (`&mut self`).
            Some((_, map)) => unsafe { std::slice::from_raw_parts_mut(map.ptr.as_ptr(), map.len) },
            None => &mut [],
        }
    }
}

impl fmt::Debug for SharedBytesMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytesMut({} bytes)", self.len())
    }
}

/// A sealed memfd, mapped read-only when first read.
struct Sealed {
    fd: OwnedFd,
    len: usize,
    map: OnceLock<Mapping>,
}

impl Sealed {
    fn new(fd: OwnedFd, len: usize) -> Sealed {
        Sealed { fd, len, map: OnceLock::new() }
    }

    fn bytes(&self) -> &[u8] {
        // A sealed memfd of this size maps read-only unless the address
        // space is exhausted.
        self.try_bytes().unwrap_or_else(|e| panic!("cannot map a shared buffer: {e}"))
    }

    fn try_bytes(&self) -> io::Result<&[u8]> {
        if let Some(map) = self.map.get() {
            return Ok(map.bytes());
        }
        let map = Mapping::map(&self.fd, self.len, false)?;
        // Another thread may have mapped it meanwhile: theirs is kept.
        Ok(self.map.get_or_init(|| map).bytes())
    }
}

/// Read-only bytes that travel between parent and worker without a copy,
/// as a field of any message (see the module's head): cheap to clone,
/// dereferences to `[u8]`. Made with [`SharedBytesMut`], or
/// [`SharedBytes::copy_from_slice`].
#[derive(Clone, Default)]
pub struct SharedBytes(Repr);

#[derive(Clone)]
enum Repr {
    Sealed(Arc<Sealed>),
    /// Empty, or read back from inline bytes.
    Inline(Arc<[u8]>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Inline(Arc::from(&[][..]))
    }
}

impl SharedBytes {
    /// A shared buffer holding a copy of `bytes`: written into a new memfd
    /// (by the kernel, with no mapping on this side until it is read), then
    /// sealed.
    pub fn copy_from_slice(bytes: &[u8]) -> io::Result<Self> {
        if bytes.is_empty() {
            return Ok(SharedBytes::default());
        }
        let fd = memfd(0)?;
        let mut file = std::fs::File::from(fd);
        io::Write::write_all(&mut file, bytes)?;
        let fd = OwnedFd::from(file);
        seal(&fd)?;
        Ok(sealed(Sealed::new(fd, bytes.len())))
    }

    /// How many bytes it holds (without mapping it).
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Sealed(sealed) => sealed.len,
            Repr::Inline(bytes) => bytes.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether its bytes are in a shared memfd (rather than inline: an
    /// empty buffer, or one that came as bytes).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Sealed(_))
    }

    /// A buffer received: descriptor `fd` (whose `fstat` is `stat`) must
    /// be a memfd of ordinary pages, of at least `len` bytes, sealed
    /// against writing, shrinking and growing, with no hole in its first
    /// `len` bytes. It is mapped when first read, not now: what a peer
    /// sends costs this side no page table, and no thread time, until
    /// this side reads it.
    fn adopt(fd: OwnedFd, stat: &libc::stat, len: usize) -> Result<SharedBytes, String> {
        if len == 0 {
            return Ok(SharedBytes::default());
        }
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
        Ok(sealed(Sealed::new(fd, len)))
    }

    /// Its bytes, mapped now if they were not yet: the error [`Deref`]
    /// would panic with (the address space is exhausted).
    pub fn try_as_slice(&self) -> io::Result<&[u8]> {
        match &self.0 {
            Repr::Sealed(sealed) => sealed.try_bytes(),
            Repr::Inline(bytes) => Ok(bytes),
        }
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Sealed(sealed) => sealed.bytes(),
            Repr::Inline(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.is_mapped() { "mapped" } else { "inline" };
        write!(f, "SharedBytes({} bytes, {how})", self.len())
    }
}

// ---- encoding and decoding ------------------------------------------------

thread_local! {
    /// While a message is encoded for a peer that takes descriptors: those
    /// of its shared buffers, in order.
    static OUTGOING: Cell<Option<Vec<OwnedFd>>> = const { Cell::new(None) };
    /// While a message is decoded: its descriptors, taken by index by its
    /// shared buffers; and why one was refused.
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    refused: Option<String>,
    /// The most bytes the message's shared buffers may hold together.
    max: usize,
    /// What the buffers taken so far hold: bytes (each file once however
    /// often it is named) and descriptors.
    taken: Holds,
    /// The files taken so far, by device, inode and length: a file named
    /// again is the same buffer, counted and mapped once.
    seen: Vec<((u64, u64, usize), SharedBytes)>,
}

/// Whether this process has ever had a sealed buffer: until it has, no
/// value can hold one, and encoding need not look out for them.
static EVER: AtomicBool = AtomicBool::new(false);

/// A sealed buffer exists (made, or received).
fn sealed(buf: Sealed) -> SharedBytes {
    EVER.store(true, Ordering::Relaxed);
    SharedBytes(Repr::Sealed(Arc::new(buf)))
}

/// Runs `encode` with shared buffers sent as descriptors: the result, and
/// the descriptors to send ahead of any others of the message, in order.
#[inline]
pub(crate) fn collecting<R>(encode: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    if !EVER.load(Ordering::Relaxed) {
        return (encode(), Vec::new());
    }
    /// Puts back what was there before, also when `encode` panics (a
    /// user's `Serialize`): no stale list is left for the next message.
    struct Restore(Option<Option<Vec<OwnedFd>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                OUTGOING.with(|o| o.set(outer));
            }
        }
    }
    let mut restore = Restore(Some(OUTGOING.with(|o| o.replace(Some(Vec::new())))));
    let result = encode();
    let outer = restore.0.take().unwrap_or_default();
    let fds = OUTGOING.with(|o| o.replace(outer)).unwrap_or_default();
    (result, fds)
}

thread_local! {
    /// While a type's shape is traced (`session/shape.rs`): a buffer read
    /// by descriptor with no message there is an empty one.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `trace` with buffers read by descriptor, outside any message, as
/// empty ones: the shape's tracing makes up such values.
pub(crate) fn tracing<R>(trace: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRACING.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TRACING.with(|t| t.replace(true)));
    trace()
}

/// Runs `decode` with the message's descriptors `fds` there for its shared
/// buffers, which may hold `max` bytes together: the result, the
/// descriptors they did not take (in order: the message's own), why a
/// buffer was refused, if one was, and what they hold.
pub(crate) fn providing<R>(
    fds: Vec<OwnedFd>,
    max: usize,
    decode: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>, Option<String>, Holds) {
    let fds = fds.into_iter().map(Some).collect();
    /// Puts back what was there before, also when `decode` panics (a
    /// user's `Deserialize`): no stale descriptors are left for the next
    /// message to take.
    struct Restore(Option<Option<Incoming>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                INCOMING.with(|i| *i.borrow_mut() = outer);
            }
        }
    }
    let incoming = Incoming { fds, refused: None, max, taken: Holds::default(), seen: Vec::new() };
    let outer = INCOMING.with(|i| i.borrow_mut().replace(incoming));
    let mut restore = Restore(Some(outer));
    let result = decode();
    let outer = restore.0.take().unwrap_or(None);
    let ours = INCOMING.with(|i| std::mem::replace(&mut *i.borrow_mut(), outer));
    match ours {
        Some(Incoming { fds, refused, taken, .. }) => {
            (result, fds.into_iter().flatten().collect(), refused, taken)
        }
        None => (result, Vec::new(), None, Holds::default()),
    }
}

/// Decodes a whole payload whose message came with `fds`: its shared
/// buffers take theirs, holding at most `max_shared` bytes together; the
/// rest (the message's own, in order) are given back, with what the
/// buffers hold. A refused buffer is [`WireError::SharedBuffer`].
#[inline]
pub(crate) fn decode_with<T: serde::de::DeserializeOwned>(
    codec: super::codec::Codec,
    payload: &[u8],
    fds: Vec<OwnedFd>,
    max_shared: usize,
) -> (Result<T, WireError>, Vec<OwnedFd>, Holds) {
    if fds.is_empty() {
        return (super::codec::decode_as(codec, payload), fds, Holds::default());
    }
    let (result, rest, refused, taken) =
        providing(fds, max_shared, || super::codec::decode_as(codec, payload));
    match refused {
        Some(why) if result.is_err() => (Err(WireError::SharedBuffer { why }), rest, taken),
        _ => (result, rest, taken),
    }
}

const NAME: &str = "SharedBytes";

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Repr::Sealed(sealed) = &self.0 {
            let sent = OUTGOING.with(|o| {
                let mut fds = o.take()?;
                let index = sealed.fd.try_clone().map(|fd| {
                    fds.push(fd);
                    fds.len() - 1
                });
                o.set(Some(fds));
                Some(index)
            });
            if let Some(index) = sent {
                let index = index.map_err(|e| {
                    serde::ser::Error::custom(format!(
                        "a shared buffer's descriptor cannot be duplicated: {e}"
                    ))
                })?;
                return s.serialize_newtype_variant(
                    NAME,
                    1,
                    "Descriptor",
                    &(index as u32, sealed.len as u64),
                );
            }
        }
        s.serialize_newtype_variant(NAME, 0, "Inline", &AsBytes(self))
    }
}

/// Bytes, written as one block.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Bytes, read as one block.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What is written (see `Serialize`): a real enum, so that the
        /// shape's tracing tells its variants apart.
        #[derive(Deserialize)]
        #[serde(rename = "SharedBytes")]
        enum Wire {
            Inline(ByteBuf),
            Descriptor((u32, u64)),
        }
        match Wire::deserialize(d)? {
            Wire::Inline(ByteBuf(bytes)) => Ok(SharedBytes(Repr::Inline(bytes.into()))),
            Wire::Descriptor((index, len)) => {
                received(index as usize, len).map_err(de::Error::custom)
            }
        }
    }
}

/// The buffer that came as descriptor `index` of the message being
/// decoded. Outside a message's decoding: an error, or, while a type's
/// shape is traced, an empty buffer.
fn received(index: usize, len: u64) -> Result<SharedBytes, String> {
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let Some(incoming) = i.as_mut() else {
            if TRACING.with(Cell::get) {
                return Ok(SharedBytes::default());
            }
            return Err(format!("descriptor {index} claimed by a message that came with none"));
        };
        let result = match incoming.fds.get_mut(index).and_then(Option::take) {
            None => Err(format!("descriptor {index} of the message is missing or taken")),
            Some(fd) => usize::try_from(len)
                .map_err(|_| format!("{len} bytes cannot be mapped here"))
                .and_then(|len| take(incoming, fd, len)),
        };
        if let Err(why) = &result {
            incoming.refused.get_or_insert_with(|| why.clone());
        }
        result
    })
}

/// Takes descriptor `fd` of the message being decoded as a buffer of `len`
/// bytes: the same buffer as before if the message named its file already
/// (this duplicate closed), else a new one, within the message's bound.
fn take(incoming: &mut Incoming, fd: OwnedFd, len: usize) -> Result<SharedBytes, String> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, into a local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(format!("fstat failed: {}", io::Error::last_os_error()));
    }
    let key = (stat.st_dev, stat.st_ino, len);
    if let Some((_, buf)) = incoming.seen.iter().find(|(k, _)| *k == key) {
        return Ok(buf.clone());
    }
    let total = incoming.taken.bytes.saturating_add(len);
    if total > incoming.max {
        return Err(format!(
            "{total} bytes of shared buffers in one message, over the limit of {}",
            incoming.max
        ));
    }
    let buf = SharedBytes::adopt(fd, &stat, len)?;
    incoming.taken.bytes = total;
    incoming.taken.fds += 1;
    incoming.seen.push((key, buf.clone()));
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_buffer_is_sealed_and_read_only() {
        let mut buf = SharedBytesMut::new(4096).unwrap();
        buf[..5].copy_from_slice(b"hello");
        let shared = buf.freeze().unwrap();
        assert_eq!(&shared[..5], b"hello");
        let Repr::Sealed(sealed) = &shared.0 else { panic!("mapped") };
        // SAFETY: fcntl on a descriptor the buffer owns.
        let seals = unsafe { libc::fcntl(sealed.fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & SEALS, SEALS);
        // Writing through the descriptor fails.
        // SAFETY: write from a local buffer.
        let n = unsafe { libc::pwrite(sealed.fd.as_raw_fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(n, -1);
    }

    #[test]
    fn descriptors_go_with_the_message_and_come_back_as_buffers() {
        let a = SharedBytes::copy_from_slice(b"first").unwrap();
        let b = SharedBytes::copy_from_slice(&[9u8; 100_000]).unwrap();
        let msg = (a.clone(), 7u32, b.clone(), SharedBytes::default());
        let (encoded, fds) = collecting(|| {
            let mut buf = Vec::new();
            crate::wire::codec::encode_into(&msg, &mut buf).unwrap();
            buf
        });
        assert_eq!(fds.len(), 2, "one descriptor per mapped buffer");
        assert!(encoded.len() < 64, "no bytes of the buffers inline: {}", encoded.len());
        let own = SharedBytesMut::new(1).unwrap().freeze().unwrap();
        let Repr::Sealed(own) = &own.0 else { panic!() };
        let mut all = fds;
        all.push(own.fd.try_clone().unwrap());
        let (back, rest, refused, taken) = providing(all, usize::MAX, || {
            crate::wire::codec::decode::<(SharedBytes, u32, SharedBytes, SharedBytes)>(&encoded)
        });
        let back = back.unwrap();
        assert!(refused.is_none());
        assert_eq!(back, msg);
        assert!(back.0.is_mapped() && back.2.is_mapped());
        assert_eq!(rest.len(), 1, "the message's own descriptor is left to it");
        assert_eq!(taken, Holds { bytes: 5 + 100_000, fds: 2 });
        // Without descriptors: inline, and read back as bytes.
        let mut inline = Vec::new();
        crate::wire::codec::encode_into(&a, &mut inline).unwrap();
        let back: SharedBytes = crate::wire::codec::decode(&inline).unwrap();
        assert_eq!(back, a);
        assert!(!back.is_mapped());
    }

    #[test]
    fn unsealed_or_short_buffers_are_refused() {
        let fds = |len: usize, seal: bool| {
            let fd = memfd(len).unwrap();
            if seal {
                // SAFETY: fcntl on a descriptor we own.
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
            }
            fd
        };
        let claim = |len: u64| {
            let mut buf = Vec::new();
            let s = serde_json_free::descriptor(0, len);
            buf.extend_from_slice(&s);
            buf
        };
        for (fd, len, why) in
            [(fds(4096, false), 4096, "not sealed"), (fds(4096, true), 8192, "were announced")]
        {
            let (res, _, refused, _) = providing(vec![fd], usize::MAX, || {
                crate::wire::codec::decode::<SharedBytes>(&claim(len))
            });
            assert!(res.is_err());
            assert!(refused.unwrap().contains(why));
        }
        let (res, _, refused, _) = providing(Vec::new(), usize::MAX, || {
            crate::wire::codec::decode::<SharedBytes>(&claim(10))
        });
        assert!(res.is_err() && refused.unwrap().contains("missing"));
    }

    #[test]
    fn sparse_buffers_and_claims_without_descriptors_are_refused() {
        // Large and sealed, never written: the reader would pay for it.
        let fd = memfd(1 << 30).unwrap();
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
        let claim = serde_json_free::descriptor(0, 1 << 30);
        let (res, _, refused, _) =
            providing(vec![fd], usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim));
        assert!(res.is_err());
        assert!(refused.unwrap().contains("sparse"));
        // A descriptor claimed by a message that came with none.
        let res = crate::wire::codec::decode::<SharedBytes>(&serde_json_free::descriptor(0, 10));
        assert!(res.is_err(), "{res:?}");
        // While a shape is traced: an empty buffer.
        let traced = tracing(|| {
            crate::wire::codec::decode::<SharedBytes>(&serde_json_free::descriptor(0, 10))
        });
        assert!(traced.unwrap().is_empty());
    }

    /// A sealed memfd of `len` bytes of which only `written` are written.
    fn partly_written(len: usize, written: std::ops::Range<usize>) -> OwnedFd {
        let fd = memfd(len).unwrap();
        let bytes = vec![7u8; written.len()];
        // SAFETY: pwrite from a local buffer into a descriptor we own.
        let n = unsafe {
            libc::pwrite(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), written.start as i64)
        };
        assert_eq!(n as usize, written.len());
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
        fd
    }

    #[test]
    fn a_hole_in_the_announced_range_is_refused_wherever_it_is() {
        // Half written, the hole first: as many blocks as the half
        // announced, but the reader would allocate them.
        let front = partly_written(2 << 20, (1 << 20)..(2 << 20));
        let claim = serde_json_free::descriptor(0, 1 << 20);
        let (res, _, refused, _) = providing(vec![front], usize::MAX, || {
            crate::wire::codec::decode::<SharedBytes>(&claim)
        });
        assert!(res.is_err());
        assert!(refused.unwrap().contains("a hole at byte 0"));
        // The written half first: taken.
        let back = partly_written(2 << 20, 0..(1 << 20));
        let (res, _, refused, _) =
            providing(vec![back], usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&claim));
        assert!(refused.is_none(), "{refused:?}");
        assert_eq!(res.unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_file_named_again_is_one_buffer_and_the_bound_counts_it_once() {
        let buf = SharedBytes::copy_from_slice(&[3u8; 64 << 10]).unwrap();
        let many = vec![buf.clone(); 64];
        let (encoded, fds) = collecting(|| {
            let mut out = Vec::new();
            crate::wire::codec::encode_into(&many, &mut out).unwrap();
            out
        });
        assert_eq!(fds.len(), 64);
        // Within a bound of one buffer's size: the 63 others are the same.
        let (back, rest, refused, taken) =
            providing(fds, 64 << 10, || crate::wire::codec::decode::<Vec<SharedBytes>>(&encoded));
        assert!(refused.is_none(), "{refused:?}");
        assert!(rest.is_empty());
        assert_eq!(taken, Holds { bytes: 64 << 10, fds: 1 });
        let back = back.unwrap();
        let Repr::Sealed(first) = &back[0].0 else { panic!("mapped") };
        assert!(back.iter().all(|b| matches!(&b.0, Repr::Sealed(s) if Arc::ptr_eq(s, first))));
        // Two files over the bound: refused, named.
        let two = vec![buf.clone(), SharedBytes::copy_from_slice(&[4u8; 64 << 10]).unwrap()];
        let (encoded, fds) = collecting(|| {
            let mut out = Vec::new();
            crate::wire::codec::encode_into(&two, &mut out).unwrap();
            out
        });
        let (res, _, refused, _) =
            providing(fds, 100 << 10, || crate::wire::codec::decode::<Vec<SharedBytes>>(&encoded));
        assert!(res.is_err());
        assert!(refused.unwrap().contains("over the limit of 102400"));
    }

    #[test]
    fn a_received_buffer_is_mapped_when_first_read() {
        let buf = SharedBytes::copy_from_slice(&[5u8; 8192]).unwrap();
        let (encoded, fds) = collecting(|| {
            let mut out = Vec::new();
            crate::wire::codec::encode_into(&buf, &mut out).unwrap();
            out
        });
        let (back, ..) =
            providing(fds, usize::MAX, || crate::wire::codec::decode::<SharedBytes>(&encoded));
        let back = back.unwrap();
        let Repr::Sealed(sealed) = &back.0 else { panic!("mapped") };
        assert!(sealed.map.get().is_none(), "mapped on arrival");
        assert_eq!(back.try_as_slice().unwrap(), &[5u8; 8192][..]);
        assert!(sealed.map.get().is_some());
    }

    /// Panics as it is written, after the buffer before it.
    struct Halfway(SharedBytes);

    impl Serialize for Halfway {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.0)?;
            panic!("halfway");
        }
    }

    #[test]
    fn a_panic_while_encoding_leaves_no_descriptor_behind() {
        let buf = SharedBytes::copy_from_slice(b"abc").unwrap();
        let panicked = std::panic::catch_unwind(|| {
            collecting(|| crate::wire::codec::encode_into(&Halfway(buf.clone()), &mut Vec::new()))
        });
        assert!(panicked.is_err());
        OUTGOING.with(|o| {
            let left = o.take();
            assert!(left.is_none(), "a list left behind: {left:?}");
        });
        // The next message takes only its own.
        let ((), fds) = collecting(|| {
            crate::wire::codec::encode_into(&buf, &mut Vec::new()).unwrap();
        });
        assert_eq!(fds.len(), 1);
    }

    /// The encoding of a `Descriptor` variant, by hand.
    mod serde_json_free {
        pub fn descriptor(index: u32, len: u64) -> Vec<u8> {
            struct D(u32, u64);
            impl serde::Serialize for D {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_newtype_variant(super::NAME, 1, "Descriptor", &(self.0, self.1))
                }
            }
            let mut buf = Vec::new();
            crate::wire::codec::encode_into(&D(index, len), &mut buf).unwrap();
            buf
        }
    }
}
