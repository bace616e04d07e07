//! TLS inside the stream (a remote worker over `Transport::tls`): the
//! session's bytes are encrypted and decrypted where they meet the socket,
//! by the stream's own reads and writes, with no task or socketpair in
//! between.
//!
//! rustls keeps the TLS state; this keeps what the stream needs around it:
//! ciphertext read from the socket in one `recv` of up to [`CIPHER_READ`]
//! (rustls itself reads 4 KiB at a time), and the plaintext whose records
//! are not all in the kernel yet (the ledger hears of bytes only once they
//! are: until then, they never left).

use std::io::{self, BufRead, IoSlice, Write};
use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use tokio_rustls::rustls;

/// The most ciphertext one read of the socket takes.
pub(crate) const CIPHER_READ: usize = 64 << 10;

/// One side's TLS connection, as the stream uses it.
pub(crate) struct Secure {
    conn: rustls::Connection,
    /// Ciphertext read and not yet given to rustls: `cipher[at..]`.
    cipher: Vec<u8>,
    at: usize,
    /// The socket has ended (a read of 0 bytes).
    eof: bool,
    /// Plaintext taken from the writer whose records are not all in the
    /// kernel yet.
    held: Vec<u8>,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// This many bytes of plaintext, appended.
    Plain(usize),
    /// Nothing until more ciphertext is read from the socket.
    NeedBytes,
    /// The end: the peer's `close_notify`, or the socket's end between
    /// records (the frames above tell a message cut short).
    End,
}

impl Secure {
    /// Takes over a connection whose handshake is done.
    pub(crate) fn new(conn: rustls::Connection) -> Self {
        Secure { conn, cipher: Vec::new(), at: 0, eof: false, held: Vec::new() }
    }

    /// Plaintext into the spare capacity of `dst` (at least one byte of
    /// it): what rustls holds decrypted, else what the ciphertext read
    /// already decrypts to.
    pub(crate) fn read(&mut self, dst: &mut BytesMut) -> io::Result<Got> {
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok([]) => return Ok(Got::End),
                Ok(chunk) => {
                    // Never 0 for plaintext there (the caller's end of the
                    // stream): a full buffer gets room, as `BufMut` gives
                    // a plain read's.
                    if dst.capacity() == dst.len() {
                        dst.reserve(chunk.len());
                    }
                    let n = chunk.len().min(dst.capacity() - dst.len());
                    dst.put_slice(&chunk[..n]);
                    reader.consume(n);
                    return Ok(Got::Plain(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP end without `close_notify`: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::End),
                Err(e) => return Err(e),
            }
            if self.at == self.cipher.len() {
                if self.eof {
                    return Ok(Got::End);
                }
                return Ok(Got::NeedBytes);
            }
            let mut rest = &self.cipher[self.at..];
            let n = self.conn.read_tls(&mut rest)?;
            self.at += n;
            if n == 0 {
                // After the peer's close_notify nothing more is read.
                self.at = self.cipher.len();
            }
            if self.at == self.cipher.len() {
                self.cipher.clear();
                self.at = 0;
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        }
    }

    /// Reads ciphertext with `recv` (into up to [`CIPHER_READ`] bytes of
    /// room; it returns how many it wrote), once what was read before is
    /// all taken. Returns what `recv` did.
    pub(crate) fn fill(
        &mut self,
        recv: impl FnOnce(&mut [MaybeUninit<u8>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        debug_assert_eq!(self.at, self.cipher.len(), "ciphertext left to take");
        self.cipher.clear();
        self.at = 0;
        self.cipher.reserve(CIPHER_READ);
        let n = recv(&mut self.cipher.spare_capacity_mut()[..CIPHER_READ])?;
        assert!(n <= CIPHER_READ, "recv wrote past its room");
        // SAFETY: `recv` initialised the first `n` bytes of the room.
        unsafe { self.cipher.set_len(n) };
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Encrypts what rustls takes of `src` (all of it, up to its buffer's
    /// limit); how many bytes it took.
    pub(crate) fn write(&mut self, src: &[IoSlice<'_>]) -> io::Result<usize> {
        self.conn.writer().write_vectored(src)
    }

    /// Writes the records waiting to `out`: true once none are left, false
    /// when `out` would block.
    pub(crate) fn flush(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether records wait to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Keeps plaintext taken whose records are not all written.
    pub(crate) fn hold(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
    }

    /// The plaintext held, once its records are all written.
    pub(crate) fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Whether plaintext is held (taken, not all written).
    pub(crate) fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Queues the `close_notify` alert.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

/// A TLS connection, client or server, its handshake done.
pub(crate) type Tls = rustls::Connection;
