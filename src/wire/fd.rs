//! The fd-aware byte stream under the WebSocket.
//!
//! A descriptor sent with `SCM_RIGHTS` rides on the bytes of the `sendmsg`
//! call that carried it, and the kernel closes it if those bytes are read
//! with a plain `read()`. So every read of the socket, on both sides, goes
//! through `recvmsg` with a control buffer, and this type is the only stream
//! the WebSocket layer ever sees.
//!
//! Why one socket and not a second `SOCK_SEQPACKET` pair: with one stream,
//! a descriptor can never overtake or lag behind its message by more than
//! the bytes in between, and both travel in the same order. The sender
//! attaches a message's descriptors to the first `sendmsg` that carries any
//! byte at or before that message, so by the time the receiver has read the
//! whole message, its descriptors are already in [`FdQueues::incoming`]; the
//! frame header says how many to take, first in first out.
//!
//! This is the only file that names `nix`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

use super::boundary::Boundary;

/// The most descriptors one `sendmsg` may carry (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_SEND: usize = 253;

/// Descriptors waiting to be sent, and descriptors received but not yet
/// claimed by a message. Shared between the stream and the halves above it.
#[derive(Default)]
pub(crate) struct FdQueues {
    outgoing: Mutex<VecDeque<OwnedFd>>,
    incoming: Mutex<VecDeque<OwnedFd>>,
    /// The bytes read so far end inside a WebSocket frame.
    mid_frame: AtomicBool,
}

impl FdQueues {
    /// Queues descriptors to ride on the next bytes written.
    pub(crate) fn push_outgoing(&self, fds: Vec<OwnedFd>) {
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

    /// Whether the bytes read so far end inside a frame: at the end of the
    /// connection, a message was cut off.
    pub(crate) fn mid_frame(&self) -> bool {
        self.mid_frame.load(Ordering::Relaxed)
    }

    /// How many received descriptors no message has claimed yet.
    pub(crate) fn unclaimed(&self) -> usize {
        lock(&self.incoming).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a VecDeque of fds
    // inconsistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A non-blocking UNIX stream whose reads are `recvmsg` and whose writes
/// carry queued descriptors.
pub(crate) struct FdStream {
    io: UnixStream,
    fds: Arc<FdQueues>,
    cmsg: Vec<u8>,
    boundary: Boundary,
    /// Bytes accepted from the writer but not yet in the socket, from
    /// `out_pos` on. See [`OUT_CAP`].
    out: Vec<u8>,
    out_pos: usize,
}

/// How many bytes the stream takes from its writer beyond what the socket
/// takes at once, when it holds none already. tungstenite removes written
/// bytes from the front of its own buffer, moving the rest down each time:
/// a 16 MiB message written in socket-sized steps (~200 KiB) would be moved
/// ~80 times. Taking all of it (up to the largest message) makes that one
/// copy: 16 MiB messages went from 540 to 705 MiB/s against a 4 MiB cap.
const OUT_CAP: usize = 64 << 20;

/// Writes from this size on go through the `out` buffer.
const BIG_WRITE: usize = 256 << 10;

impl FdStream {
    /// Wraps a connected socket; must be called inside a tokio runtime.
    pub(crate) fn new(sock: std::os::unix::net::UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(FdStream {
            io: UnixStream::from_std(sock)?,
            fds: Arc::new(FdQueues::default()),
            cmsg: nix::cmsg_space!([RawFd; MAX_FDS_PER_SEND]),
            boundary: Boundary::default(),
            out: Vec::new(),
            out_pos: 0,
        })
    }

    pub(crate) fn queues(&self) -> Arc<FdQueues> {
        self.fds.clone()
    }
}

/// One `recvmsg`: bytes into `dst`, descriptors onto `fds.incoming`.
fn recv(fd: RawFd, dst: &mut [u8], cmsg: &mut [u8], fds: &FdQueues) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(dst)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let bytes = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut received = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel has just installed these descriptors in
                // this process for this call; nothing else owns them.
                received.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    if !received.is_empty() {
        lock(&fds.incoming).extend(received);
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "received descriptors were truncated (control buffer too small)",
        ));
    }
    Ok(bytes)
}

/// One `sendmsg` of `src` carrying up to [`MAX_FDS_PER_SEND`] queued
/// descriptors; the ones sent are closed here once the kernel holds them.
fn send_with_fds(fd: RawFd, src: &[u8], fds: &FdQueues) -> io::Result<usize> {
    let mut outgoing = lock(&fds.outgoing);
    let n = outgoing.len().min(MAX_FDS_PER_SEND);
    let raw: Vec<RawFd> = outgoing.iter().take(n).map(AsRawFd::as_raw_fd).collect();
    let sent = sendmsg::<()>(
        fd,
        &[IoSlice::new(src)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    outgoing.drain(..n);
    Ok(sent)
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let FdStream { io, fds, cmsg, boundary, .. } = self.get_mut();
        loop {
            ready!(io.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            let fd = io.as_raw_fd();
            // `try_io` clears the readiness on WouldBlock, so the next
            // `poll_read_ready` parks the task until the socket is readable.
            match io.try_io(Interest::READABLE, || recv(fd, dst, cmsg, fds)) {
                Ok(n) => {
                    boundary.feed(&dst[..n]);
                    fds.mid_frame.store(boundary.mid_frame(), Ordering::Relaxed);
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl FdStream {
    /// One write of `src` to the socket: `sendmsg` with the queued
    /// descriptors when there are any (they ride on these bytes, which come
    /// no later than those of the message that claims them), else `write`.
    fn poll_send(&mut self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        let FdStream { io, fds, .. } = self;
        if fds.outgoing_len() == 0 {
            return Pin::new(io).poll_write(cx, src);
        }
        loop {
            ready!(io.poll_write_ready(cx))?;
            let fd = io.as_raw_fd();
            match io.try_io(Interest::WRITABLE, || send_with_fds(fd, src, fds)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    /// Writes the accepted bytes out; ready once there are none left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let out = std::mem::take(&mut self.out);
            let res = self.poll_send(cx, &out[self.out_pos..]);
            self.out = out;
            match ready!(res)? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.out_pos += n,
            }
        }
        // The capacity is kept, as tungstenite keeps that of its own write
        // buffer: giving it back after each large message costs more
        // (1 MiB messages: 1.2 against 1.8 GiB/s) than it saves.
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.is_empty() && src.len() < BIG_WRITE {
            // The common case, small batches: no copy, plain back-pressure.
            return this.poll_send(cx, src);
        }
        // Nothing more is taken while a backlog waits: the transport holds
        // at most one write's worth beyond the kernel's buffer.
        ready!(this.poll_drain(cx))?;
        // Nothing held back: straight to the socket, and keep what it did
        // not take (up to the cap) for the next drain.
        let written = match this.poll_send(cx, src) {
            Poll::Ready(res) => res?,
            Poll::Pending => 0,
        };
        let rest = &src[written..];
        let n = rest.len().min(OUT_CAP);
        this.out.extend_from_slice(&rest[..n]);
        if written + n == 0 {
            return Poll::Pending;
        }
        Poll::Ready(Ok(written + n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().expect("pipe");
        (r.into(), w.into())
    }

    #[test]
    fn descriptors_travel_with_the_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut a = FdStream::new(a).unwrap();
            let mut b = FdStream::new(b).unwrap();
            let (r, w) = pipe();
            a.queues().push_outgoing(vec![w]);
            a.write_all(b"hello").await.unwrap();
            a.flush().await.unwrap();
            let mut buf = [0u8; 5];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            assert_eq!(b.queues().unclaimed(), 1);
            let w = b.queues().take_incoming(1).unwrap().pop().unwrap();
            std::fs::File::from(w).write_all(b"x").unwrap();
            let mut got = [0u8; 1];
            std::fs::File::from(r).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"x");
            assert!(b.queues().take_incoming(1).is_none());
        });
    }
}
