//! The fd-aware byte stream under the WebSocket: its writing half
//! ([`FdStream`], which tungstenite writes to), its reading half
//! ([`reader`]), what the two share ([`queues`]: descriptors both ways,
//! frames handed over, the [`ledger`] of what was written), and the TLS it
//! speaks itself on a remote worker's connection ([`secure`]; built without
//! the `tls` feature, `no_tls.rs` stands in for it: a TLS of which there is
//! no value, so that the stream is written once and its TLS branches are
//! dead code the compiler drops).
//!
//! A descriptor sent with `SCM_RIGHTS` rides on the bytes of the `sendmsg`
//! call that carried it, and the kernel closes it if those bytes are read
//! with a plain `read()`. So every read of the socket, on both sides, goes
//! through `recvmsg` with a control buffer, and this stream is the only one
//! the WebSocket layer ever sees.
//!
//! Why one socket and not a second `SOCK_SEQPACKET` pair: with one stream,
//! a descriptor can never overtake or lag behind its message by more than
//! the bytes in between, and both travel in the same order. The sender
//! attaches a message's descriptors to the first `sendmsg` that carries any
//! byte at or before that message, so by the time the receiver has read the
//! whole message, its descriptors are already queued
//! ([`FdQueues::take_incoming`]); the envelope's header says how many to
//! take, first in first out.
//!
//! The kernel is asked through `nix`, but for the reads (`reader.rs`: their
//! buffers are not initialised, which nix's calls require).

pub(crate) mod ledger;
pub(crate) mod queues;
pub(crate) mod reader;
#[cfg(feature = "tls")]
pub(crate) mod secure;
#[cfg(not(feature = "tls"))]
#[path = "no_tls.rs"]
pub(crate) mod secure;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use self::ledger::Ledger;
use self::queues::{lock, send, FdQueues, Sock};
use self::reader::FdReader;

/// A non-blocking UNIX stream whose reads are `recvmsg` and whose writes
/// carry queued descriptors.
///
/// The event loop watches the socket for incoming bytes only. Watched for
/// writability too, each read of the peer would wake this process for
/// room it does not need (the peer's read frees room in our direction): a
/// third context switch in every round trip. Writes are tried straight
/// away; only one that finds the socket full watches for room, through a
/// second descriptor of the same socket, until the socket takes a whole
/// write again.
pub(crate) struct FdStream {
    /// The socket, shared with the reading half ([`FdReader`]).
    sock: Arc<OwnedFd>,
    /// For writability, while a write waits: registered only then.
    room: Room,
    fds: Arc<FdQueues>,
    /// Bytes accepted but not yet in the socket, in order: the rest of a
    /// large write (see [`OUT_CAP`]), and whole frames handed over without
    /// a copy ([`FdQueues::push_frame`]); `out_pos` bytes of the first are
    /// written.
    out: VecDeque<Bytes>,
    out_pos: usize,
    /// The buffer the rest of a large write is copied into, kept between
    /// writes (as tungstenite keeps its own): a fresh one per message would
    /// cost a page fault per page.
    spare: Vec<u8>,
}

/// How many bytes the stream takes from its writer beyond what the socket
/// takes at once, when it holds none already. tungstenite removes written
/// bytes from the front of its own buffer, moving the rest down each time:
/// a 16 MiB message written in socket-sized steps (~200 KiB) would be moved
/// ~80 times. Taking all of it (up to the largest message) makes that one
/// copy.
const OUT_CAP: usize = 64 << 20;

/// Writes from this size on go through the `out` buffer.
const BIG_WRITE: usize = 256 << 10;

impl FdStream {
    /// Splits a connected stream socket (a UNIX one; or TCP, which carries
    /// no descriptors, and may speak `tls`, its handshake done) into its
    /// writing half (under the WebSocket) and its reading half; must be
    /// called inside a tokio runtime.
    pub(crate) fn new(
        sock: impl Into<OwnedFd>,
        tls: Option<secure::Tls>,
    ) -> io::Result<(Self, FdReader)> {
        let sock: OwnedFd = sock.into();
        set_nonblocking(&sock)?;
        let is_unix =
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(sock.as_raw_fd())
                .map_or(true, |addr| addr.as_unix_addr().is_some());
        let sndbuf = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::SndBuf)
            .unwrap_or(1 << 20);
        let fds = Arc::new(FdQueues::new(sock.as_raw_fd(), sndbuf, tls));
        let room = Room::Idle(sock.try_clone()?);
        let sock = Arc::new(sock);
        let io = watch(sock.clone(), Interest::READABLE).map_err(|(_, e)| e)?;
        let reader = FdReader::new(io, fds.clone(), is_unix);
        let writer =
            FdStream { sock, room, fds, out: VecDeque::new(), out_pos: 0, spare: Vec::new() };
        Ok((writer, reader))
    }
}

/// The first `n` bytes of `src`, slice by slice.
fn first<'a>(src: &'a [IoSlice<'a>], n: usize) -> impl Iterator<Item = &'a [u8]> {
    src.iter().scan(n, |left, slice| {
        if *left == 0 {
            return None;
        }
        let take = (*left).min(slice.len());
        *left -= take;
        Some(&slice[..take])
    })
}

/// Tells the ledger of the first `n` bytes of `src`, handed to the kernel.
fn hand(ledger: &mut Ledger, src: &[IoSlice<'_>], n: usize) {
    first(src, n).for_each(|bytes| ledger.handed(bytes));
}

/// Makes `fd` non-blocking.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Registers `inner` with the event loop for `interest` only; gives it
/// back with the error if that fails.
fn watch<T: AsRawFd>(inner: T, interest: Interest) -> Result<AsyncFd<T>, (T, io::Error)> {
    // SAFETY: `inner` (a socket, or a descriptor of one) owns its
    // descriptor, which stays open and the same until the `AsyncFd` is
    // dropped or gives it back.
    unsafe { AsyncFd::register_with_interest(inner, interest) }.map_err(|e| e.into_parts())
}

/// A second descriptor of the socket, watched for room only while a write
/// waits for it.
enum Room {
    Idle(OwnedFd),
    /// Registered for writability; the task parked on it, if one is.
    Watched(AsyncFd<OwnedFd>, Option<Waker>),
    /// Between the two (only if registering failed).
    Gone,
}

impl Room {
    /// Ready once the socket may have room: parks the task until then.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Room::Idle(_) = self {
            let Room::Idle(fd) = std::mem::replace(self, Room::Gone) else { unreachable!() };
            *self = match watch(fd, Interest::WRITABLE) {
                Ok(watched) => Room::Watched(watched, None),
                Err((fd, e)) => {
                    *self = Room::Idle(fd);
                    return Poll::Ready(Err(e));
                }
            };
        }
        match self {
            Room::Watched(watched, parked) => match watched.poll_write_ready(cx) {
                Poll::Pending => {
                    *parked = Some(cx.waker().clone());
                    Poll::Pending
                }
                Poll::Ready(ready) => {
                    // The caller tries again; a full socket waits for the
                    // next edge.
                    ready?.clear_ready();
                    *parked = None;
                    Poll::Ready(Ok(()))
                }
            },
            _ => Poll::Ready(Err(io::Error::other("the socket's second descriptor is gone"))),
        }
    }

    /// A write went through whole: stop watching. A task parked here
    /// (another task's write, while this one's found the socket full) is
    /// woken to try again: the registration that would have woken it goes,
    /// and the room that let this write through may be all there will be.
    fn idle(&mut self) -> io::Result<()> {
        if let Room::Watched(..) = self {
            let Room::Watched(watched, parked) = std::mem::replace(self, Room::Gone) else {
                unreachable!()
            };
            *self = Room::Idle(watched.into_inner());
            if let Some(parked) = parked {
                parked.wake();
            }
        }
        Ok(())
    }
}

/// The writing half is never read from: the WebSocket over it only sends
/// (the reading half reads the socket).
impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl FdStream {
    /// One write of `src` to the socket (a `sendmsg`, with the queued
    /// descriptors when there are any: they ride on these bytes, which come
    /// no later than those of the message that claims them).
    fn poll_send(&mut self, cx: &mut Context<'_>, src: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.fds.tls.is_some() {
            return self.poll_send_tls(cx, src);
        }
        let FdStream { sock, fds, room, .. } = self;
        let fd = sock.as_raw_fd();
        let sent = loop {
            match send(fd, src, fds) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(room.poll_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        if sent == src.iter().map(|s| s.len()).sum::<usize>() {
            // Room enough: no more watching for it.
            room.idle()?;
        }
        hand(&mut fds.ledger(), src, sent);
        Poll::Ready(Ok(sent))
    }

    /// [`poll_send`](Self::poll_send) over TLS: once the records of what
    /// went before are all in the kernel, encrypts what rustls takes of
    /// `src` and writes as much as the socket takes. The ledger hears of
    /// plaintext once all its records are written.
    fn poll_send_tls(
        &mut self,
        cx: &mut Context<'_>,
        src: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_tls_written(cx))?;
        if src.iter().all(|s| s.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let FdStream { sock, fds, room, .. } = self;
        let Some(tls) = &fds.tls else { unreachable!("checked by the caller") };
        let mut secure = lock(tls);
        let taken = secure.write(src)?;
        if secure.flush(&mut Sock { fd: sock.as_raw_fd(), fds })? {
            hand(&mut fds.ledger(), src, taken);
            drop(secure);
            room.idle()?;
        } else {
            first(src, taken).for_each(|bytes| secure.hold(bytes));
        }
        Poll::Ready(Ok(taken))
    }

    /// Ready once every record rustls made is in the kernel (and the
    /// ledger has heard of their plaintext); parks for room until then.
    fn poll_tls_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let FdStream { sock, fds, room, .. } = self;
        let Some(tls) = &fds.tls else { return Poll::Ready(Ok(())) };
        loop {
            let mut secure = lock(tls);
            if secure.flush(&mut Sock { fd: sock.as_raw_fd(), fds })? {
                let held = secure.take_held();
                fds.ledger().handed(&held);
                drop(secure);
                room.idle()?;
                return Poll::Ready(Ok(()));
            }
            drop(secure);
            ready!(room.poll_ready(cx))?;
        }
    }

    /// Writes the accepted bytes and the frames handed over out; ready
    /// once there are none left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.out.extend(self.fds.frames().drain(..));
            if self.out.is_empty() {
                return self.poll_tls_written(cx);
            }
            let out = std::mem::take(&mut self.out);
            let mut slices = [IoSlice::new(&[]); VECTORED];
            let mut n = 0;
            for (i, chunk) in out.iter().take(VECTORED).enumerate() {
                let from = if i == 0 { self.out_pos } else { 0 };
                slices[i] = IoSlice::new(&chunk[from..]);
                n += 1;
            }
            let res = self.poll_send(cx, &slices[..n]);
            self.out = out;
            let mut sent = match ready!(res)? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                sent => sent,
            };
            while sent > 0 {
                let left = self.out[0].len() - self.out_pos;
                if sent < left {
                    self.out_pos += sent;
                    break;
                }
                sent -= left;
                self.out_pos = 0;
                if let Some(done) = self.out.pop_front() {
                    // The largest buffer written, if nothing else holds
                    // it, serves the next large write.
                    if done.len() > self.spare.capacity() {
                        if let Ok(buf) = done.try_into_mut() {
                            self.spare = Vec::from(buf);
                        }
                    }
                }
            }
        }
    }

    /// Whether nothing waits to be written before new bytes.
    fn drained(&self) -> bool {
        self.out.is_empty() && self.fds.frames().is_empty()
    }
}

/// The most buffers one vectored write takes.
const VECTORED: usize = 16;

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if src.len() < BIG_WRITE && this.drained() {
            // The common case, small batches: no copy, plain back-pressure.
            return this.poll_send(cx, &[IoSlice::new(src)]);
        }
        // Nothing more is taken while a backlog waits: the transport holds
        // at most one write's worth beyond the kernel's buffer.
        ready!(this.poll_drain(cx))?;
        if src.len() < BIG_WRITE {
            return this.poll_send(cx, &[IoSlice::new(src)]);
        }
        // Nothing held back: straight to the socket, and keep what it did
        // not take (up to the cap) for the next drain.
        let written = match this.poll_send(cx, &[IoSlice::new(src)]) {
            Poll::Ready(res) => res?,
            Poll::Pending => 0,
        };
        let rest = &src[written..];
        let n = rest.len().min(OUT_CAP);
        if n > 0 {
            let mut buf = std::mem::take(&mut this.spare);
            buf.clear();
            buf.extend_from_slice(&rest[..n]);
            this.out.push_back(Bytes::from(buf));
        }
        if written + n == 0 {
            return Poll::Pending;
        }
        Poll::Ready(Ok(written + n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(tls) = &this.fds.tls {
            lock(tls).close();
            ready!(this.poll_tls_written(cx))?;
        }
        nix::sys::socket::shutdown(this.sock.as_raw_fd(), nix::sys::socket::Shutdown::Write)?;
        Poll::Ready(Ok(()))
    }
}
