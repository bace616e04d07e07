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
//! The types are here; `memfd.rs` is the operating system's side (the
//! memfd, its seals, its mapping, the checks a received one must pass), and
//! [`carry`] serde's (descriptors collected as a message is encoded, and
//! provided to its buffers as it is decoded).
//!
//! [`Post::with_fds`]: crate::Post::with_fds

pub(crate) mod carry;
mod memfd;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use self::memfd::{memfd, seal, Mapping};

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
/// as a field of any message: cheap to clone, dereferences to `[u8]`.
/// Made with [`SharedBytesMut`], or [`SharedBytes::copy_from_slice`].
///
/// A buffer is a memfd, sealed against writing, shrinking and growing once
/// frozen. In a message to a local worker (or from one), only its
/// descriptor and length travel: the receiver checks the seals and the
/// size and maps it read-only, when first read. No byte of it goes through
/// the socket, and neither side can change it afterwards. Over TCP, where
/// descriptors cannot go, it is written inline as bytes. The parent bounds
/// what a worker's buffers make it hold (`Limits::max_shared_bytes`).
///
/// ```no_run
/// use actix_webworker::{Protocol, SharedBytes, SharedBytesMut};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Job {
///     // An image, say: sent again and again, copied never.
///     Resize { image: SharedBytes, width: u32 },
/// }
///
/// struct Images;
/// impl Protocol for Images {
///     type ToWorker = Job;
///     type FromWorker = SharedBytes;
/// }
///
/// # fn make() -> std::io::Result<Job> {
/// let mut buf = SharedBytesMut::new(4 << 20)?;
/// buf[..4].copy_from_slice(b"\x89PNG");
/// let image = buf.freeze()?;
/// // Clones share one memfd; each message carries its descriptor.
/// Ok(Job::Resize { image: image.clone(), width: 640 })
/// # }
/// ```
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
    /// `len` bytes (see [`memfd::check_received`]). It is mapped when first
    /// read, not now: what a peer sends costs this side no page table, and
    /// no thread time, until this side reads it.
    fn adopt(fd: OwnedFd, stat: &libc::stat, len: usize) -> Result<SharedBytes, String> {
        if len == 0 {
            return Ok(SharedBytes::default());
        }
        memfd::check_received(&fd, stat, len)?;
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

/// Whether this process has ever had a sealed buffer: until it has, no
/// value can hold one, and encoding need not look out for them.
static EVER: AtomicBool = AtomicBool::new(false);

/// A sealed buffer exists (made, or received).
fn sealed(buf: Sealed) -> SharedBytes {
    EVER.store(true, Ordering::Relaxed);
    SharedBytes(Repr::Sealed(Arc::new(buf)))
}
