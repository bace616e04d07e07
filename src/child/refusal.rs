//! A process that cannot be the worker its parent asked for: the refusal
//! it sends in place of its hello (an unknown entry, or one that does not
//! answer requests its protocol declares), and what it says when it was
//! not started as a worker at all.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::bootstrap::{self, Handoff};
use crate::handoff::exit_code;
use crate::wire::encode::encode;
use crate::wire::envelope::{self, Header, Kind};
use crate::wire::{ws, wsframe};

/// Says why this process cannot be a worker. Standard error, not only
/// `tracing`: no parent hears of it, and whoever ran the program by hand
/// (with a stranger's socket, or a stale environment) must.
pub(crate) fn not_a_worker(e: &dyn std::fmt::Display) {
    tracing::error!(error = %e, "not started as a worker");
    eprintln!("actix-webworker: {e}");
}

/// Tells the parent this process has no entry named `entry` (a refusal in
/// place of its hello, which the parent turns into a typed error naming
/// the entries it has), and returns the exit code.
pub(crate) fn refuse(entry: &str, known: Vec<String>) -> i32 {
    // The parent tells it, as `WireError::UnknownEntry`; here it is a trace.
    tracing::error!(entry, ?known, "no worker entry of that name");
    let handoff = match bootstrap::take() {
        Ok(handoff) => handoff,
        Err(e) => {
            not_a_worker(&e);
            return exit_code::NOT_A_WORKER;
        }
    };
    let refusal = envelope::EntryRefusal { entry: entry.to_owned(), known, unanswered: vec![] };
    send(handoff, refusal).unwrap_or(exit_code::NOT_A_WORKER)
}

/// Tells the parent that entry `entry` does not answer the requests
/// `unanswered` (Rust paths) its protocol declares, in place of its hello
/// (the parent turns it into `WireError::Unanswered`); the exit code.
pub(crate) fn unanswered(handoff: Handoff, entry: String, unanswered: Vec<String>) -> i32 {
    tracing::error!(
        entry,
        ?unanswered,
        "the worker does not answer requests its protocol declares"
    );
    let refusal = envelope::EntryRefusal { entry, known: Vec::new(), unanswered };
    send(handoff, refusal).unwrap_or(exit_code::MISMATCH)
}

/// Sends `refusal` over the handoff's socket; `None` once the parent has
/// read it and closed, else the exit code that says what failed.
fn send(handoff: Handoff, refusal: envelope::EntryRefusal) -> Option<i32> {
    let raw = handoff.sock.as_raw_fd();
    match handoff.tls {
        // Plain reads and writes: the socket is UNIX, or TCP in the clear.
        None => say_no(std::fs::File::from(handoff.sock), raw, refusal),
        // Over TLS, blocking, as the handshake was.
        #[cfg(feature = "tls")]
        Some(tls) => {
            let tcp = std::net::TcpStream::from(handoff.sock);
            say_no(tokio_rustls::rustls::StreamOwned::new(tls, tcp), raw, refusal)
        }
    }
}

/// Reads the parent's hello from `sock` (whose socket is `raw`), answers
/// with the refusal, and waits for the parent to close (`None`); or the
/// exit code that says what failed.
fn say_no(
    mut sock: impl std::io::Read + std::io::Write,
    raw: RawFd,
    refusal: envelope::EntryRefusal,
) -> Option<i32> {
    // SAFETY: `raw` is the socket `sock` reads and writes, open throughout.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    // The parent's hello is read first, so that nothing is left unread
    // when the socket closes (its reads would then fail before ours), and
    // to write the refusal with the codec it names.
    let five = nix::sys::time::TimeVal::new(5, 0);
    let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &five);
    let mut hello = [0u8; 64];
    let got = sock.read(&mut hello).unwrap_or(0);
    let codec = ws::codec_of_hello(&hello[..got]);
    let Ok(msg) = encode(codec, Header::bare(Kind::Refused), &refusal, usize::MAX) else {
        return Some(exit_code::NOT_A_WORKER);
    };
    if sock
        .write_all(&wsframe::binary_frame(&msg.contiguous()))
        .and_then(|()| sock.flush())
        .is_err()
    {
        return Some(exit_code::NOT_A_WORKER);
    }
    let _ = nix::sys::socket::shutdown(raw, nix::sys::socket::Shutdown::Write);
    // Until the parent has read it and closed its end. A parent that keeps
    // its end open (5 s without a byte) never finished the exchange.
    loop {
        match sock.read(&mut hello) {
            Ok(0) => return None,
            // TLS: the end of the TCP stream, without TLS's own close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "the parent did not close the connection");
                return Some(exit_code::IO);
            }
        }
    }
}
