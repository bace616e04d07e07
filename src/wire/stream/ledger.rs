//! What became of the messages written: which reached the kernel, and which
//! the peer has read.
//!
//! When a connection fails, the writer must tell three kinds of message
//! apart: those never handed to the kernel (they can go to the next
//! connection, in order), those the peer has read (delivered), and those in
//! between, which sat in the kernel's socket buffer when the peer died and
//! may or may not have been read (reported as a count, never re-sent:
//! delivery is at most once). The socket layer feeds the ledger every byte
//! it hands to the kernel; the ledger follows WebSocket frame boundaries in
//! them and counts binary frames (one per message or batch: control frames
//! such as pongs are not counted).
//!
//! What the peer has read is learnt from the kernel: `SIOCOUTQ` is what of
//! ours the peer has not read yet (counted generously, in buffer sizes
//! rather than bytes, so it errs towards "may not have been read"), valid
//! only while the peer is still there (its death empties the queue). And
//! nothing older than twice the socket's send buffer can still be in it.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::wire::wsframe;

/// Frames handed to the kernel, and which of them the peer has read.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Bytes handed to the kernel so far.
    handed: u64,
    /// A frame header being handed, and how much of it.
    header: [u8; wsframe::MAX_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Binary frames whose first byte has been handed.
    started: u64,
    /// Binary frames the peer has read.
    confirmed: u64,
    /// End offsets (in `handed` terms) of started binary frames whose whole
    /// header has been handed and that are not confirmed yet, oldest first.
    ends: VecDeque<u64>,
    /// The current frame is binary.
    binary: bool,
    /// Nothing further back than this can be in the kernel's buffers.
    window: u64,
}

/// Where one message stands, by its frame index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The peer has read it.
    Read,
    /// Some of it reached the kernel; whether the peer read it is unknown.
    InDoubt,
    /// None of it reached the kernel.
    Unsent,
}

impl Ledger {
    /// A ledger for a socket whose kernel send buffer is `sndbuf` bytes.
    pub(crate) fn new(sndbuf: usize) -> Self {
        Ledger {
            handed: 0,
            header: [0; wsframe::MAX_HEADER],
            have: 0,
            remaining: 0,
            started: 0,
            confirmed: 0,
            ends: VecDeque::new(),
            binary: false,
            // The queue may exceed the buffer by one write's worth; twice
            // the buffer is safely beyond what it can hold.
            window: (sndbuf as u64).max(64 << 10) * 2,
        }
    }

    /// Takes bytes just handed to the kernel.
    pub(crate) fn handed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len() as u64);
                self.remaining -= n;
                self.handed += n;
                bytes = &bytes[n as usize..];
                continue;
            }
            if self.have == 0 {
                // A binary data frame (we never fragment).
                self.binary = wsframe::opcode(bytes[0]) == wsframe::BINARY;
                if self.binary {
                    self.started += 1;
                }
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            self.handed += 1;
            bytes = &bytes[1..];
            if let Some((len, payload)) = wsframe::header(&self.header[..self.have]) {
                if self.have == len {
                    self.have = 0;
                    self.remaining = payload;
                    if self.binary {
                        self.ends.push_back(self.handed + payload);
                    }
                }
            }
        }
        self.consumed(self.handed.saturating_sub(self.window));
    }

    /// The peer has read everything up to byte `offset`.
    pub(crate) fn consumed(&mut self, offset: u64) {
        while self.ends.front().is_some_and(|&end| end <= offset) {
            self.ends.pop_front();
            self.confirmed += 1;
        }
    }

    /// Asks the kernel how much of what was handed the peer has read.
    /// Returns whether anything is still unconfirmed.
    pub(crate) fn confirm(&mut self, sock: RawFd) -> bool {
        if let Some(unread) = unread(sock) {
            self.consumed(self.handed.saturating_sub(unread));
        }
        self.unconfirmed()
    }

    /// Whether some started frame is not known to be read.
    pub(crate) fn unconfirmed(&self) -> bool {
        self.started > self.confirmed
    }

    /// Whether what was handed ends between two frames: another frame
    /// written now is read whole.
    pub(crate) fn between_frames(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// How many binary frames have started to reach the kernel.
    pub(crate) fn started(&self) -> u64 {
        self.started
    }

    /// How many frames the ledger holds an offset for (its memory).
    pub(crate) fn tracked(&self) -> usize {
        self.ends.len()
    }

    /// The fate of the frame with index `index` (counted from 0 on this
    /// connection).
    pub(crate) fn fate(&self, index: u64) -> Fate {
        if index < self.confirmed {
            Fate::Read
        } else if index < self.started {
            Fate::InDoubt
        } else {
            Fate::Unsent
        }
    }
}

/// Bytes of ours the peer has not read (`SIOCOUTQ`), while the peer is
/// still connected; `None` when that cannot be known.
fn unread(sock: RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    unsafe { outq(sock, &mut queued) }.ok()?;
    // The peer's death empties the queue: a zero from a dead peer means
    // nothing. A hang-up seen after the reading says the reading may be one.
    // SAFETY: the socket stays open as long as the stream that owns it,
    // which outlives every user of its queues and ledger.
    let sock = unsafe { BorrowedFd::borrow_raw(sock) };
    // nix names no POLLRDHUP (Linux's): its bits as they are.
    let hangup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    if poll(&mut [PollFd::new(sock, hangup)], PollTimeout::ZERO) != Ok(0) {
        return None;
    }
    Some(queued.max(0) as u64)
}

// `outq(sock, &mut int)`: `ioctl(sock, TIOCOUTQ, &mut int)` (SIOCOUTQ, the
// bytes of ours the peer has not read), its error an `Errno`.
nix::ioctl_read_bad!(outq, libc::TIOCOUTQ, libc::c_int);

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(len: usize) -> Vec<u8> {
        let mut f = if len < 126 {
            vec![0x82, len as u8]
        } else {
            let mut h = vec![0x82, 126];
            h.extend_from_slice(&(len as u16).to_be_bytes());
            h
        };
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn counts_binary_frames_across_any_split() {
        let mut stream = binary(3);
        stream.extend_from_slice(&[0x8a, 0]); // a pong: not counted
        stream.extend(binary(300));
        stream.extend(binary(0));
        for cut in 0..stream.len() {
            let mut ledger = Ledger::new(1 << 20);
            ledger.handed(&stream[..cut]);
            ledger.handed(&stream[cut..]);
            assert_eq!(ledger.started, 3, "cut at {cut}");
            assert_eq!(ledger.tracked(), 3);
            assert_eq!(ledger.fate(3), Fate::Unsent);
        }
        // The first byte of a frame starts it.
        let mut ledger = Ledger::new(1 << 20);
        ledger.handed(&stream[..8]);
        assert_eq!(ledger.fate(0), Fate::InDoubt);
        assert_eq!(ledger.fate(1), Fate::InDoubt);
        assert_eq!(ledger.fate(2), Fate::Unsent);
    }

    #[test]
    fn what_is_beyond_the_window_is_read() {
        let mut ledger = Ledger::new(1);
        // The window is at least 128 KiB: 400 frames of 1 KiB leave
        // only the last ~128 in doubt.
        for _ in 0..400 {
            ledger.handed(&binary(1024 - 4));
        }
        assert_eq!(ledger.fate(0), Fate::Read);
        assert_eq!(ledger.fate(399), Fate::InDoubt);
        assert!(ledger.tracked() <= 129, "{}", ledger.tracked());
    }

    #[test]
    fn the_kernel_says_what_the_peer_read() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let mut ledger = Ledger::new(1 << 20);
        let (first, second) = (binary(100), binary(100));
        (&a).write_all(&first).unwrap();
        ledger.handed(&first);
        (&a).write_all(&second).unwrap();
        ledger.handed(&second);
        assert!(ledger.confirm(a.as_raw_fd()));
        assert_eq!(ledger.fate(0), Fate::InDoubt);
        let mut buf = vec![0; first.len() + second.len()];
        (&b).read_exact(&mut buf).unwrap();
        assert!(!ledger.confirm(a.as_raw_fd()));
        assert_eq!(ledger.fate(1), Fate::Read);
        // A peer that is gone confirms nothing.
        let third = binary(10);
        (&a).write_all(&third).unwrap();
        ledger.handed(&third);
        drop(b);
        assert!(ledger.confirm(a.as_raw_fd()));
        assert_eq!(ledger.fate(2), Fate::InDoubt);
    }
}
