//! The fork server's exchange, known to both sides: what the parent asks
//! its template worker for (`parent/spawn/server.rs`) and what the
//! template answers (`child/template.rs`).
//!
//! The two talk over a `SOCK_SEQPACKET` socketpair, one request or answer
//! per packet, descriptors beside it (`SCM_RIGHTS`). The template's end
//! is named to it in [`ENV_TEMPLATE`], as a worker's socket is in
//! `ENV_FD`. Every packet starts with [`MAGIC`], which carries the
//! exchange's version: a template of another build that speaks another
//! version is told apart at its first packet and not used.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::resource::Resource;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Environment variable that makes a worker's executable a template: the
/// descriptor of its end of the exchange.
pub(crate) const ENV_TEMPLATE: &str = "ACTIX_WEBWORKER_TEMPLATE";

/// The first bytes of every packet, with the exchange's version.
pub(crate) const MAGIC: &[u8; 8] = b"AWWFORK2";

/// The template's first packet, once it can fork workers.
pub(crate) const READY: &[u8] = b"ready";
/// The template's first packet when it cannot (the rest says why).
pub(crate) const REFUSED: &[u8] = b"refused: ";

/// The largest packet either side sends or reads.
pub(crate) const MAX_PACKET: usize = 4096;

/// The descriptors a request carries, in this order: the worker's
/// socket, its stdin, its stdout and its stderr (the parent's own as they
/// are at the start, when the worker inherits them).
pub(crate) const FDS: usize = 4;

/// The resources a request limits, in the order of [`Request::limits`].
pub(crate) const LIMITED: [Resource; 3] =
    [Resource::RLIMIT_AS, Resource::RLIMIT_CPU, Resource::RLIMIT_NOFILE];

/// What the template is asked to start: one worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// Its entry, if named.
    pub entry: Option<String>,
    /// The largest message either side may send.
    pub max_message: u64,
    /// Its resource limits, soft and hard, each when set, for the
    /// resources of [`LIMITED`] in turn.
    pub limits: [Option<(u64, u64)>; 3],
}

impl Request {
    /// The packet: [`MAGIC`], the message limit, a flags byte (one bit
    /// per limit set), the limits set, the entry.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.max_message.to_le_bytes());
        let mut flags = 0u8;
        for (i, limit) in self.limits.iter().enumerate() {
            flags |= u8::from(limit.is_some()) << i;
        }
        out.push(flags);
        for (soft, hard) in self.limits.iter().flatten() {
            out.extend_from_slice(&soft.to_le_bytes());
            out.extend_from_slice(&hard.to_le_bytes());
        }
        out.extend_from_slice(self.entry.as_deref().unwrap_or_default().as_bytes());
        out
    }

    /// A packet read back; `None` for anything [`encode`](Self::encode)
    /// does not make.
    pub(crate) fn decode(packet: &[u8]) -> Option<Request> {
        let rest = packet.strip_prefix(MAGIC)?;
        let (max_message, rest) = take_u64(rest)?;
        let (&flags, mut rest) = rest.split_first()?;
        if flags >> 3 != 0 {
            return None;
        }
        let mut limits = [None; 3];
        for (i, limit) in limits.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                let (soft, after) = take_u64(rest)?;
                let (hard, after) = take_u64(after)?;
                (*limit, rest) = (Some((soft, hard)), after);
            }
        }
        let entry = std::str::from_utf8(rest).ok()?;
        Some(Request { entry: (!entry.is_empty()).then(|| entry.to_owned()), max_message, limits })
    }
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// What a fork says first, itself, before it takes its start's steps:
/// its pid, with a pidfd of itself beside it. The parent, whose child it
/// is (`CLONE_PARENT`), can then end and reap it even when its template
/// dies before answering (from a review: such a fork was left a zombie,
/// its pid never known).
const COPY: &[u8] = b"copy:";

/// The packet a fork sends first: [`MAGIC`], `copy:`, its pid.
pub(crate) fn copy_packet(pid: i32) -> Vec<u8> {
    [&MAGIC[..], COPY, &pid.to_le_bytes()].concat()
}

/// The pid a fork's first packet names; `None` for any other packet (an
/// answer is never one: it is shorter).
pub(crate) fn copy_named(packet: &[u8]) -> Option<i32> {
    let rest = packet.strip_prefix(MAGIC)?.strip_prefix(COPY)?;
    let pid = i32::from_le_bytes(*<&[u8; 4]>::try_from(rest).ok()?);
    (pid > 0).then_some(pid)
}

/// The answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The worker's pid.
    Started(i32),
    /// The fork failed, with this error number: no process was made.
    NotForked(i32),
    /// The worker `pid` was made but a step of its start failed, with
    /// this error number; it has exited (with 127), and the parent, whose
    /// child it is, reaps it.
    Failed { pid: i32, errno: i32 },
}

impl Answer {
    /// The packet: [`MAGIC`], the pid (0: none), the error number (0:
    /// none).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (pid, errno) = match *self {
            Answer::Started(pid) => (pid, 0),
            Answer::NotForked(errno) => (0, errno),
            Answer::Failed { pid, errno } => (pid, errno),
        };
        [&MAGIC[..], &pid.to_le_bytes(), &errno.to_le_bytes()].concat()
    }

    /// A packet read back; `None` for anything `encode` does not make.
    pub(crate) fn decode(packet: &[u8]) -> Option<Answer> {
        let rest = packet.strip_prefix(MAGIC)?;
        let (pid, rest) = rest.split_first_chunk::<4>()?;
        let (errno, rest) = rest.split_first_chunk::<4>()?;
        let (pid, errno) = (i32::from_le_bytes(*pid), i32::from_le_bytes(*errno));
        if !rest.is_empty() || pid < 0 || errno < 0 {
            return None;
        }
        match (pid, errno) {
            (0, 0) => None,
            (pid, 0) => Some(Answer::Started(pid)),
            (0, errno) => Some(Answer::NotForked(errno)),
            (pid, errno) => Some(Answer::Failed { pid, errno }),
        }
    }
}

/// Sends `packet` with `fds` as one packet.
pub(crate) fn send(sock: BorrowedFd<'_>, packet: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(packet)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    if sent != packet.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "a packet sent in part"));
    }
    Ok(())
}

/// Reads one packet into `buf` and the descriptors that came with it
/// (close-on-exec); `None` at the end of the exchange. A packet cut short
/// (longer than `buf`, or with its descriptors cut) is an error, its
/// descriptors closed.
pub(crate) fn receive(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    match receive_cut(sock, buf)? {
        Some((_, _, true)) => Err(io::Error::new(io::ErrorKind::InvalidData, "a packet cut short")),
        Some((_, fds, _)) if fds.len() > FDS => {
            Err(io::Error::new(io::ErrorKind::InvalidData, "too many descriptors"))
        }
        received => Ok(received.map(|(len, fds, _)| (len, fds))),
    }
}

/// [`receive`], a packet whose descriptors were cut given as it came,
/// said so (`true`): one whose descriptor could not be installed (this
/// process at its limit of descriptors) still says what it says. Room is
/// made for many more descriptors than any packet carries, so that one
/// sent too many is read whole (its descriptors closed by the caller);
/// what the kernel installed of a cut one is not known, and stays open.
/// A packet longer than `buf` is an error.
pub(crate) fn receive_cut(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Vec<OwnedFd>, bool)>> {
    let mut space = nix::cmsg_space!([RawFd; 64]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    // Refused when the control data was cut (`MSG_CTRUNC`).
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: descriptors the kernel just installed for us, each
            // owned by nothing else.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a packet too long"));
    }
    let cut = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    if len == 0 && fds.is_empty() && !cut {
        return Ok(None);
    }
    Ok(Some((len, fds, cut)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_nothing_else_does() {
        let full = Request {
            entry: Some("échó".into()),
            max_message: 1 << 40,
            limits: [Some((1, 2)), None, Some((u64::MAX, u64::MAX))],
        };
        let bare = Request { entry: None, max_message: 0, limits: [None, Some((0, 0)), None] };
        for request in [full, bare] {
            let packet = request.encode();
            assert_eq!(Request::decode(&packet).as_ref(), Some(&request));
            // Every cut before the entry, another version, unknown flags.
            let fixed = packet.len() - request.entry.as_ref().map_or(0, String::len);
            for cut in 0..fixed {
                assert_eq!(Request::decode(&packet[..cut]), None, "cut at {cut}");
            }
            let mut other = packet.clone();
            other[7] = b'9';
            assert_eq!(Request::decode(&other), None);
            let mut flags = packet.clone();
            flags[16] |= 1 << 3;
            assert_eq!(Request::decode(&flags), None);
        }
        assert_eq!(Request::decode(b"AWWFORK2\0\0\0\0\0\0\0\0\0\xff"), None, "not UTF-8");
    }

    #[test]
    fn an_answer_reads_back_and_nothing_else_does() {
        let answers =
            [Answer::Started(4242), Answer::NotForked(11), Answer::Failed { pid: 7, errno: 24 }];
        for answer in answers {
            let packet = answer.encode();
            assert_eq!(Answer::decode(&packet), Some(answer));
            for cut in 0..packet.len() {
                assert_eq!(Answer::decode(&packet[..cut]), None, "cut at {cut}");
            }
            assert_eq!(Answer::decode(&[&packet[..], b"x"].concat()), None, "too long");
        }
        let neither = [&MAGIC[..], &[0; 8]].concat();
        assert_eq!(Answer::decode(&neither), None, "no pid and no error");
        let negative = [&MAGIC[..], &(-1i32).to_le_bytes(), &[0; 4]].concat();
        assert_eq!(Answer::decode(&negative), None);
        assert_eq!(Answer::decode(b"AWWFORK1\x01\0\0\0\0\0\0\0"), None, "another version");
    }

    #[test]
    fn a_forks_first_packet_reads_back_and_is_no_answer() {
        let packet = copy_packet(4242);
        assert_eq!(copy_named(&packet), Some(4242));
        assert_eq!(Answer::decode(&packet), None);
        assert_eq!(copy_named(&Answer::Started(4242).encode()), None);
        for cut in 0..packet.len() {
            assert_eq!(copy_named(&packet[..cut]), None, "cut at {cut}");
        }
        assert_eq!(copy_named(&[&packet[..], b"x"].concat()), None, "too long");
        assert_eq!(copy_named(&copy_packet(-3)), None);
        assert_eq!(copy_named(&copy_packet(0)), None);
    }
}
