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

pub(crate) mod ledger;
pub(crate) mod secure;

use std::collections::VecDeque;

use bytes::Bytes;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use self::ledger::Ledger;
use self::secure::{Got, Secure};

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
    tls: Option<Mutex<Secure>>,
    /// Bytes of the peer's stream this side has taken, in whole frames
    /// (see [`taken`](Self::taken)).
    taken: std::sync::atomic::AtomicU64,
}

impl FdQueues {
    /// The reader has taken the peer's stream up to byte `offset`, in
    /// whole frames.
    pub(crate) fn note_taken(&self, offset: u64) {
        self.taken.store(offset, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many bytes of the peer's stream this side has taken, in whole
    /// frames: what its close says, so that the peer knows exactly which
    /// of its messages were read.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
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

    /// Queues one whole WebSocket frame, its header and its payload, to be
    /// written from these buffers (no copy: header and payload go out in
    /// one vectored write) at the next write or flush of the stream. Only
    /// between whole frames: the caller has flushed what went before.
    pub(crate) fn push_frame(&self, header: Bytes, payload: Bytes) {
        let mut frames = lock(&self.frames);
        frames.push_back(header);
        frames.push_back(payload);
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
struct Sock<'a> {
    fd: RawFd,
    fds: &'a FdQueues,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a VecDeque of fds
    // inconsistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// The reading half of the socket: `recvmsg` into the caller's buffer
/// (uninitialised memory is fine: nothing is zeroed first), descriptors
/// onto the queue.
pub(crate) struct FdReader {
    io: AsyncFd<Arc<OwnedFd>>,
    fds: Arc<FdQueues>,
    cmsg: Vec<u8>,
    /// A short read means the socket is empty (TCP; not a UNIX socket).
    short_means_empty: bool,
}

impl FdReader {
    /// One `recvmsg` into the spare capacity of `buf` (at least one byte of
    /// it); the bytes read are appended. `Ok(0)` at the end of the stream.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<io::Result<usize>> {
        use bytes::BufMut;
        if self.fds.tls.is_some() {
            return self.poll_recv_tls(cx, buf);
        }
        let FdReader { io, fds, cmsg, short_means_empty } = self;
        loop {
            let mut ready = ready!(io.poll_read_ready(cx))?;
            let dst = buf.chunk_mut();
            let (ptr, len) = (dst.as_mut_ptr(), dst.len());
            let fd = io.as_raw_fd();
            // `try_io` clears the readiness on WouldBlock, so the next
            // `poll_read_ready` parks the task until the socket is readable.
            match ready.try_io(|_| recv(fd, ptr, len, cmsg, fds)) {
                Err(_would_block) => continue,
                Ok(Ok(n)) => {
                    // SAFETY: the kernel wrote `n` bytes at the start of the
                    // spare capacity.
                    unsafe { buf.advance_mut(n) };
                    // A TCP socket that filled less than the room had
                    // nothing more: wait for the next event, rather than
                    // spend a `recvmsg` to hear EAGAIN. (Bytes that came
                    // meanwhile raised a new event, which clearing keeps:
                    // tokio clears only the readiness this poll saw.) Not
                    // so a UNIX socket: it ends a read early where the
                    // next bytes carry descriptors, and they are there.
                    if *short_means_empty && n > 0 && n < len {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// [`poll_recv`](Self::poll_recv) over TLS: plaintext decrypted from
    /// what was read, else one read of ciphertext (TCP: no descriptors).
    fn poll_recv_tls(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<io::Result<usize>> {
        let FdReader { io, fds, short_means_empty, .. } = self;
        let Some(tls) = &fds.tls else { unreachable!("checked by the caller") };
        let fd = io.as_raw_fd();
        loop {
            {
                let mut secure = lock(tls);
                let got = secure.read(buf);
                // Whatever rustls has to say after reading (an alert before
                // it fails, an answer to a key update) goes now if it can;
                // else with the writer's next records.
                if secure.wants_write() {
                    let _ = secure.flush(&mut Sock { fd, fds });
                }
                match got? {
                    Got::Plain(n) => return Poll::Ready(Ok(n)),
                    Got::End => return Poll::Ready(Ok(0)),
                    Got::NeedBytes => {}
                }
            }
            let mut ready = ready!(io.poll_read_ready(cx))?;
            let filled = ready.try_io(|_| {
                lock(tls).fill(|room| {
                    // SAFETY: recv writes at most `room.len()` bytes there.
                    let n = unsafe {
                        libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT)
                    };
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(n as usize)
                })
            });
            match filled {
                Err(_would_block) => continue,
                Ok(Ok(n)) => {
                    // As for plain TCP in `poll_recv`.
                    if *short_means_empty && n > 0 && n < secure::CIPHER_READ {
                        ready.clear_ready();
                    }
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The descriptor queues and the ledger.
    pub(crate) fn queues(&self) -> Arc<FdQueues> {
        self.fds.clone()
    }
}

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
        let fds = Arc::new(FdQueues {
            outgoing: Mutex::default(),
            incoming: Mutex::default(),
            ledger: Mutex::new(Ledger::new(sndbuf)),
            frames: Mutex::default(),
            sock: sock.as_raw_fd(),
            tls: tls.map(|tls| Mutex::new(Secure::new(tls))),
            taken: std::sync::atomic::AtomicU64::new(0),
        });
        let room = Room::Idle(sock.try_clone()?);
        let sock = Arc::new(sock);
        let reader = FdReader {
            io: watch(sock.clone(), Interest::READABLE).map_err(|(_, e)| e)?,
            fds: fds.clone(),
            cmsg: nix::cmsg_space!([RawFd; MAX_FDS_PER_SEND]),
            short_means_empty: !is_unix,
        };
        let writer =
            FdStream { sock, room, fds, out: VecDeque::new(), out_pos: 0, spare: Vec::new() };
        Ok((writer, reader))
    }
}

/// One `recvmsg`: at most `len` bytes to `dst`, descriptors onto
/// `fds.incoming`.
///
/// Every descriptor the kernel installed is taken into an `OwnedFd`, also
/// when it reports the control data truncated (`MSG_CTRUNC`: the buffer was
/// too small, or this process is at its descriptor limit): those installed
/// are closed with the stream rather than leaked, and the stream fails.
fn recv(fd: RawFd, dst: *mut u8, len: usize, cmsg: &mut [u8], fds: &FdQueues) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: dst.cast(), iov_len: len };
    // SAFETY: an all-zero msghdr is valid; the pointers set below are to
    // buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len() as _;
    // SAFETY: recvmsg writes at most iov_len bytes and msg_controllen bytes
    // of control data into the buffers the msghdr points to.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = Vec::new();
    // SAFETY: the CMSG_* walk stays within msg_controllen, which the kernel
    // set to the control bytes it wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // SAFETY: the kernel has just installed this descriptor
                    // in this process for this call; nothing else owns it.
                    received.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    let unclaimed = {
        let mut incoming = lock(&fds.incoming);
        incoming.extend(received);
        incoming.len()
    };
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "received descriptors were truncated (control buffer too small, or no descriptors left)",
        ));
    }
    if unclaimed > MAX_UNCLAIMED_FDS {
        return Err(io::Error::other(TooManyUnclaimed(unclaimed)));
    }
    Ok(n as usize)
}

/// One `sendmsg` of `src`, carrying up to [`MAX_FDS_PER_SEND`] queued
/// descriptors if any wait; the ones sent are closed here once the kernel
/// holds them.
fn send(fd: RawFd, src: &[IoSlice<'_>], fds: &FdQueues) -> io::Result<usize> {
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

/// Registers `inner` with the event loop for `interest` only.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

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
            self.out.extend(lock(&self.fds.frames).drain(..));
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
        self.out.is_empty() && lock(&self.fds.frames).is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().expect("pipe");
        (r.into(), w.into())
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A write parked for room is woken when another write (a pong the
    /// reading task has tungstenite write) goes through whole and the
    /// watching stops: else it could wait for ever, the room it needs
    /// having come without the edge that would wake it.
    #[test]
    fn a_write_parked_for_room_is_woken_when_another_goes_through() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (mut a, _reading) = FdStream::new(a, None).unwrap();
            let parked = Arc::new(Count(Default::default()));
            let parked_waker = Waker::from(parked.clone());
            let chunk = vec![0u8; 4096];
            // Small writes until the socket is full and the writer parks.
            loop {
                let mut cx = Context::from_waker(&parked_waker);
                match Pin::new(&mut a).poll_write(&mut cx, &chunk) {
                    Poll::Ready(res) => assert_eq!(res.unwrap(), chunk.len()),
                    Poll::Pending => break,
                }
            }
            // The peer reads a little: room, but short of the socket's
            // wake-up mark.
            let mut buf = vec![0u8; 16 << 10];
            b.read_exact(&mut buf).unwrap();
            let other = Waker::from(Arc::new(Count(Default::default())));
            let mut cx = Context::from_waker(&other);
            let res = Pin::new(&mut a).poll_write(&mut cx, b"\x8a\x00");
            assert!(matches!(res, Poll::Ready(Ok(2))), "{res:?}");
            assert_eq!(parked.0.load(Ordering::SeqCst), 1, "the parked write was not woken");
        });
    }

    #[test]
    fn descriptors_travel_with_the_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (mut a, _) = FdStream::new(a, None).unwrap();
            let (_, mut b) = FdStream::new(b, None).unwrap();
            let (r, w) = pipe();
            a.fds.push_outgoing(vec![w]);
            a.write_all(b"hello").await.unwrap();
            a.flush().await.unwrap();
            let mut buf = bytes::BytesMut::with_capacity(64);
            while buf.len() < 5 {
                std::future::poll_fn(|cx| b.poll_recv(cx, &mut buf)).await.unwrap();
            }
            assert_eq!(&buf[..], b"hello");
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
