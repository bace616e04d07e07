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

/// Lines emitted before the reading lets other tasks run: a worker writing
/// empty lines as fast as it can would otherwise hold the parent's thread
/// for as long as its pipe stays full (tokio's read budget lets 128 reads
/// of 4 KiB, half a million lines, go by between two turns).
const LINES_PER_TURN: usize = 128;

/// Reads `fd` until the worker closes it, one event per line.
pub(crate) fn capture(
    fd: OwnedFd,
    name: Arc<str>,
    pid: u32,
    stream: Stream,
) -> Option<actix_rt::task::JoinHandle<()>> {
    let rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(worker = %name, pid, error = %e, "could not capture the worker's output");
            return None;
        }
    };
    Some(actix_rt::spawn(lines(rx, move |line| emit(&name, pid, stream, line))))
}

/// Reads `rx` until the worker closes it, each line (its end taken off)
/// to `line`, [`LINES_PER_TURN`] at a time.
async fn lines(mut rx: pipe::Receiver, mut line: impl FnMut(&[u8])) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut lines = 0usize;
    loop {
        let n = match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Only the bytes just read can end a line; what went before them
        // is let go once, not line by line.
        let mut start = 0;
        let mut from = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        while let Some(at) = buf[from..].iter().position(|&b| b == b'\n') {
            line(&buf[start..from + at]);
            (start, from) = (from + at + 1, from + at + 1);
            lines += 1;
            if lines.is_multiple_of(LINES_PER_TURN) {
                tokio::task::yield_now().await;
            }
        }
        buf.drain(..start);
        if buf.len() >= MAX_LINE {
            line(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        line(&buf);
    }
}

/// A line as its event says it: its carriage returns taken off.
fn text(line: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |at| at + 1);
    String::from_utf8_lossy(&line[..end])
}

fn emit(name: &str, pid: u32, stream: Stream, line: &[u8]) {
    let line = text(line);
    match stream {
        Stream::Stdout => {
            tracing::info!(target: "actix_webworker::output", worker = name, pid, stream = "stdout", "{line}")
        }
        Stream::Stderr => {
            tracing::warn!(target: "actix_webworker::output", worker = name, pid, stream = "stderr", "{line}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::rc::Rc;

    use super::*;

    /// 10,000 empty lines, all in the pipe before they are read: the
    /// reading lets other tasks run at least once per 128 of them (before:
    /// a task beside it ran only while the pipe's first read waited, and a
    /// worker writing empty lines held the parent's thread 44–52 ms at a
    /// time, 350–390 ms with a subscriber formatting each, release build;
    /// found by a review).
    #[test]
    fn lines_are_taken_so_many_at_a_time() {
        actix_rt::System::new().block_on(async {
            let (r, mut w) = std::io::pipe().unwrap();
            w.write_all(&[b'\n'; 10_000]).unwrap();
            drop(w);
            let ticks = Rc::new(Cell::new(0usize));
            let ticking = ticks.clone();
            let ticker = actix_rt::spawn(async move {
                loop {
                    ticking.set(ticking.get() + 1);
                    tokio::task::yield_now().await;
                }
            });
            let reading = capture(r.into(), "lines".into(), 1, Stream::Stdout).unwrap();
            reading.await.unwrap();
            ticker.abort();
            let ran = ticks.get();
            assert!(ran >= 78, "10,000 lines, 128 at a time: the task beside ran {ran} times");
        });
    }

    /// Lines as the worker wrote them, however the reads cut them: a line
    /// across two reads, CRLF, a line over `MAX_LINE` cut there, 300 empty
    /// lines, and the last line without its end (from a review of the
    /// change that takes them 128 at a time).
    #[test]
    fn lines_come_out_as_written() {
        let got = Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
        actix_rt::System::new().block_on(async {
            let (r, mut w) = std::io::pipe().unwrap();
            let writer = std::thread::spawn(move || {
                let pause = || std::thread::sleep(std::time::Duration::from_millis(50));
                w.write_all(b"a\r\nb").unwrap();
                pause();
                w.write_all(b"c\n").unwrap();
                pause();
                w.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
                w.write_all(b"\n").unwrap();
                pause();
                w.write_all(&[b'\n'; 300]).unwrap();
                w.write_all(b"d\r\ntail").unwrap();
            });
            let rx = pipe::Receiver::from_owned_fd(r.into()).unwrap();
            let into = got.clone();
            lines(rx, move |line| into.borrow_mut().push(text(line).into_owned())).await;
            writer.join().unwrap();
        });
        let got = got.borrow().clone();
        assert_eq!(&got[..2], ["a", "bc"]);
        // Cut once past MAX_LINE, the rest its own line (or whole, when its
        // end came in the read that passed MAX_LINE): all of it, in order.
        let long = got[2..].iter().take_while(|l| l.starts_with('x')).count();
        assert!((1..=2).contains(&long), "{long} pieces");
        assert!(got[2].len() >= MAX_LINE, "cut at {}", got[2].len());
        let xs: usize = got[2..2 + long].iter().map(String::len).sum();
        assert_eq!(xs, MAX_LINE + 10);
        let rest = &got[2 + long..];
        assert_eq!(rest.len(), 302, "{rest:?}");
        assert!(rest[..300].iter().all(String::is_empty));
        assert_eq!(&rest[300..], ["d", "tail"]);
    }
}
