//! The reading half of the stream: every read of the socket is a
//! `recvmsg` with a control buffer (a plain `read()` would have the kernel
//! close the descriptors riding on the bytes read), its descriptors queued
//! for the messages that claim them; over TLS, a `recv` of ciphertext that
//! the session decrypts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;

use super::queues::{lock, FdQueues, Sock, TooManyUnclaimed, MAX_FDS_PER_SEND, MAX_UNCLAIMED_FDS};
use super::secure::{self, Got};

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
    /// The reading half of the socket `io` watches (for incoming bytes),
    /// whose descriptors go to `fds`; `unix` when it is a UNIX socket.
    pub(super) fn new(io: AsyncFd<Arc<OwnedFd>>, fds: Arc<FdQueues>, unix: bool) -> Self {
        FdReader {
            io,
            fds,
            cmsg: nix::cmsg_space!([RawFd; MAX_FDS_PER_SEND]),
            short_means_empty: !unix,
        }
    }

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
                    // Raw: nix's `recv` writes only into initialised bytes,
                    // and this room is not (nothing is zeroed first).
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
    // Raw: nix's `recvmsg` reads into initialised `IoSliceMut`s, and `dst`
    // is the spare capacity of a buffer, never zeroed.
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
    let unclaimed = fds.push_incoming(received);
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
