//! The stream's TLS when the crate is built without the `tls` feature:
//! the API of `secure.rs`, on types that have no value. No connection can
//! speak TLS (none can be made), so every branch of the stream that would
//! (`if let Some(tls)`) is dead code, and the stream itself is written once
//! for both builds. Keep this in step with `secure.rs`: `cargo clippy
//! --no-default-features` and `--all-features` each build one of the two.

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;

use bytes::BytesMut;

/// The most ciphertext one read of the socket takes (as in `secure.rs`).
pub(crate) const CIPHER_READ: usize = 64 << 10;

/// A TLS connection: without the `tls` feature there is none.
pub(crate) enum Tls {}

/// A worker's TLS connection to its parent (rustls's `ClientConnection`
/// with the feature): none either.
pub(crate) enum Client {}

impl From<Client> for Tls {
    fn from(client: Client) -> Tls {
        match client {}
    }
}

/// One side's TLS connection, as the stream uses it: none.
pub(crate) enum Secure {}

/// What a read found (as in `secure.rs`): matched by the stream, never
/// made, since there is no TLS to read.
#[allow(dead_code)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// This many bytes of plaintext, appended.
    Plain(usize),
    /// Nothing until more ciphertext is read from the socket.
    NeedBytes,
    /// The end.
    End,
}

impl Secure {
    pub(crate) fn new(tls: Tls) -> Self {
        match tls {}
    }

    pub(crate) fn read(&mut self, _: &mut BytesMut) -> io::Result<Got> {
        match *self {}
    }

    pub(crate) fn fill(
        &mut self,
        _: impl FnOnce(&mut [MaybeUninit<u8>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn write(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn flush(&mut self, _: &mut dyn Write) -> io::Result<bool> {
        match *self {}
    }

    pub(crate) fn wants_write(&self) -> bool {
        match *self {}
    }

    pub(crate) fn hold(&mut self, _: &[u8]) {
        match *self {}
    }

    pub(crate) fn take_held(&mut self) -> Vec<u8> {
        match *self {}
    }

    pub(crate) fn holds(&self) -> bool {
        match *self {}
    }

    pub(crate) fn close(&mut self) {
        match *self {}
    }
}
