//! A worker's standard output and error, captured line by line into
//! `tracing` events (target `actix_webworker::output`, level INFO for stdout
//! and WARN for stderr), each tagged with the worker's name, pid and stream.
//!
//! The transport never touches stdio, so by default a worker simply
//! inherits the parent's; capturing is a builder option.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Where a worker's standard output or error goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// The parent's own (the default): `println!` in a worker shows up where
    /// the parent's would.
    #[default]
    Inherit,
    /// Discarded.
    Null,
    /// Read line by line into `tracing` events.
    Capture,
}

/// The longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

/// Which stream a captured line came from.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Reads `fd` until the worker closes it, one event per line.
pub(crate) fn capture(fd: OwnedFd, name: Arc<str>, pid: u32, stream: Stream) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(worker = %name, pid, error = %e, "could not capture the worker's output");
            return;
        }
    };
    actix_rt::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = match rx.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                emit(&name, pid, stream, &buf[..end]);
                buf.drain(..=end);
            }
            if buf.len() >= MAX_LINE {
                emit(&name, pid, stream, &buf);
                buf.clear();
            }
        }
        if !buf.is_empty() {
            emit(&name, pid, stream, &buf);
        }
    });
}

fn emit(name: &str, pid: u32, stream: Stream, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    match stream {
        Stream::Stdout => {
            tracing::info!(target: "actix_webworker::output", worker = name, pid, stream = "stdout", "{line}")
        }
        Stream::Stderr => {
            tracing::warn!(target: "actix_webworker::output", worker = name, pid, stream = "stderr", "{line}")
        }
    }
}
