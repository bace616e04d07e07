//! What both halves of the stream share: descriptors waiting to be sent,
//! descriptors received and not yet claimed by a message, whole frames
//! handed over to be written from the caller's buffers, the ledger of what
//! was written, and the TLS session when the connection speaks it.
//!
//! Also the one `sendmsg` every write goes through, which carries the
//! queued descriptors on the bytes it writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::ledger::Ledger;
use super::secure::{Secure, Tls};

/// The most descriptors one `sendmsg` may carry (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_SEND: usize = 253;

/// The most descriptors received that no message has claimed yet. A
/// well-behaved peer attaches a message's descriptors to bytes at or before
/// it, and never more than one send's worth ahead of the messages that
/// claim them; a peer that piles up more is refused (after any `recvmsg`,
/// even in the middle of a frame that never ends).
pub(crate) const MAX_UNCLAIMED_FDS: usize = 2 * MAX_FDS_PER_SEND;

/// The error a stream fails with when a peer piles up descriptors.
#[derive(Debug, thiserror::Error)]
#[error("{0} descriptors arrived that no message claimed")]
pub(crate) struct TooManyUnclaimed(pub usize);

/// Descriptors waiting to be sent, and descriptors received but not yet
/// claimed by a message; the ledger of what was written. Shared between the
/// stream and the halves above it.
pub(crate) struct FdQueues {
    outgoing: Mutex<VecDeque<OwnedFd>>,
    incoming: Mutex<VecDeque<OwnedFd>>,
    ledger: Mutex<Ledger>,
    /// Whole frames to be written after everything written so far, from
    /// the caller's buffers (see [`push_frame`](Self::push_frame)).
    frames: Mutex<VecDeque<Bytes>>,
    /// The socket (owned by the stream, which outlives every user of this).
    sock: RawFd,
    /// TLS, spoken by the stream itself (`secure.rs`), when the connection
    /// has it: shared by both halves, whose reads and writes each hold it
    /// for one step.
    pub(super) tls: Option<Mutex<Secure>>,
    /// Bytes of the peer's stream this side has taken, in whole frames
    /// (see [`taken`](Self::taken)).
    taken: AtomicU64,
}

impl FdQueues {
    /// The queues of socket `sock`, whose kernel send buffer is `sndbuf`
    /// bytes, speaking `tls` if given.
    pub(super) fn new(sock: RawFd, sndbuf: usize, tls: Option<Tls>) -> Self {
        FdQueues {
            outgoing: Mutex::default(),
            incoming: Mutex::default(),
            ledger: Mutex::new(Ledger::new(sndbuf)),
            frames: Mutex::default(),
            sock,
            tls: tls.map(|tls| Mutex::new(Secure::new(tls))),
            taken: AtomicU64::new(0),
        }
    }

    /// The reader has taken the peer's stream up to byte `offset`, in
    /// whole frames.
    pub(crate) fn note_taken(&self, offset: u64) {
        self.taken.store(offset, Ordering::Relaxed);
    }

    /// How many bytes of the peer's stream this side has taken, in whole
    /// frames: what its close says, so that the peer knows exactly which
    /// of its messages were read.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// The peer, closing, says it took exactly `offset` bytes of ours and
    /// will take no more: every frame up to there was read, every frame
    /// after it was not.
    pub(crate) fn peer_took(&self, offset: u64) {
        self.ledger().consumed(offset);
    }

    /// Queues descriptors to ride on the next bytes written.
    pub(crate) fn push_outgoing(&self, fds: Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        lock(&self.outgoing).extend(fds);
    }

    /// How many descriptors wait to be sent.
    pub(crate) fn outgoing_len(&self) -> usize {
        lock(&self.outgoing).len()
    }

    /// Takes the `n` oldest received descriptors, or `None` (taking nothing)
    /// when fewer than `n` have arrived.
    pub(crate) fn take_incoming(&self, n: usize) -> Option<Vec<OwnedFd>> {
        if n == 0 {
            return Some(Vec::new());
        }
        let mut incoming = lock(&self.incoming);
        if incoming.len() < n {
            return None;
        }
        Some(incoming.drain(..n).collect())
    }

    /// Queues descriptors just received, in order; how many wait
    /// unclaimed now.
    pub(super) fn push_incoming(&self, received: Vec<OwnedFd>) -> usize {
        let mut incoming = lock(&self.incoming);
        incoming.extend(received);
        incoming.len()
    }

    /// How many received descriptors no message has claimed yet.
    pub(crate) fn unclaimed(&self) -> usize {
        lock(&self.incoming).len()
    }

    /// Takes back the newest `n` descriptors not yet sent (fewer if fewer
    /// are left), oldest first: those of messages that never left.
    pub(crate) fn take_back_outgoing(&self, n: usize) -> Vec<OwnedFd> {
        let mut outgoing = lock(&self.outgoing);
        let from = outgoing.len().saturating_sub(n);
        outgoing.drain(from..).collect()
    }

    /// Queues one whole WebSocket frame, its header and its payload (in
    /// one piece or several), to be written from these buffers (no copy:
    /// header and payload go out in one vectored write) at the next write
    /// or flush of the stream. Only between whole frames: the caller has
    /// flushed what went before.
    pub(crate) fn push_frame(&self, header: Bytes, payload: impl IntoIterator<Item = Bytes>) {
        let mut frames = lock(&self.frames);
        frames.push_back(header);
        frames.extend(payload.into_iter().filter(|piece| !piece.is_empty()));
    }

    /// The frames handed over (see [`push_frame`](Self::push_frame)).
    pub(super) fn frames(&self) -> MutexGuard<'_, VecDeque<Bytes>> {
        lock(&self.frames)
    }

    /// The ledger of what was written (see `ledger.rs`).
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Asks the kernel what the peer has read; whether anything written is
    /// still not known to be read.
    pub(crate) fn confirm(&self) -> bool {
        lock(&self.ledger).confirm(self.sock)
    }

    /// Writes `frame` (one whole WebSocket frame) now, without blocking, if
    /// the socket stands between frames and takes all of it: for a last
    /// word when no writer runs any more.
    pub(crate) fn send_whole_now(&self, frame: &[u8]) -> bool {
        let Some(tls) = &self.tls else {
            if !self.ledger().between_frames() {
                return false;
            }
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            return nix::sys::socket::send(self.sock, frame, flags) == Ok(frame.len());
        };
        let mut tls = lock(tls);
        // Plaintext taken but not all written may end mid-frame.
        if tls.holds() || !self.ledger().between_frames() {
            return false;
        }
        let mut sock = Sock { fd: self.sock, fds: self };
        matches!(tls.write(&[IoSlice::new(frame)]), Ok(n) if n == frame.len())
            && matches!(tls.flush(&mut sock), Ok(true))
    }
}

/// The socket as `io::Write`, for rustls's records: non-blocking sends.
pub(super) struct Sock<'a> {
    pub fd: RawFd,
    pub fds: &'a FdQueues,
}

impl io::Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send(self.fd, &[IoSlice::new(buf)], self.fds)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send(self.fd, bufs, self.fds)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a VecDeque of fds
    // inconsistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `sendmsg` of `src`, carrying up to [`MAX_FDS_PER_SEND`] queued
/// descriptors if any wait; the ones sent are closed here once the kernel
/// holds them.
pub(super) fn send(fd: RawFd, src: &[IoSlice<'_>], fds: &FdQueues) -> io::Result<usize> {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let mut outgoing = lock(&fds.outgoing);
    if outgoing.is_empty() {
        drop(outgoing);
        return sendmsg::<()>(fd, src, &[], flags, None).map_err(io::Error::from);
    }
    let n = outgoing.len().min(MAX_FDS_PER_SEND);
    let raw: Vec<RawFd> = outgoing.iter().take(n).map(AsRawFd::as_raw_fd).collect();
    let sent = sendmsg::<()>(fd, src, &[ControlMessage::ScmRights(&raw)], flags, None)
        .map_err(io::Error::from)?;
    outgoing.drain(..n);
    Ok(sent)
}
