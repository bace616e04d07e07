//! The two plain facts errors carry: how a worker process ended
//! ([`ExitStatus`], and whether it was [`Lost`]), and what a panic in it
//! said ([`ErrorReport`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a worker process ended: the `onexit(code, signal)` of the original.
/// Exactly one of the two is `Some`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ExitStatus {
    /// The exit code, when the process exited on its own.
    pub code: Option<i32>,
    /// The signal that killed the process.
    pub signal: Option<i32>,
    /// The worker was lost, not seen to end, and `code` and `signal` are
    /// not its own: see [`Lost`]. `None` for every worker seen to end.
    pub lost: Option<Lost>,
}

/// How a worker was lost: its own exit status is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Lost {
    /// Its connection went silent (see [`WireError::Silent`](crate::WireError::Silent)) and the
    /// parent killed its process or launcher: `code` and `signal` are that
    /// kill's. On another host it may live on until it notices.
    Silent,
    /// Its connection (to a worker started through a launcher) ended
    /// without the worker's close: it died, or the connection was cut.
    /// `code` and `signal` are the launcher's, which may or may not pass
    /// on the worker's (`ssh` exits with 255 when the connection drops,
    /// and when the remote command is killed by a signal). Also a
    /// launcher that exited while the worker was connected (an `ssh`
    /// client killed): the parent then ends the connection itself, so
    /// that the worker, which it can no longer signal, exits.
    Disconnected,
}

impl ExitStatus {
    /// Whether the process exited with code 0 (a worker lost is not known
    /// to have).
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.lost.is_none()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown exit status".to_owned(),
        };
        match self.lost {
            None => f.write_str(&status),
            Some(Lost::Silent) => {
                write!(f, "lost (no word for too long; its process was killed: {status})")
            }
            Some(Lost::Disconnected) => {
                write!(f, "lost (its connection ended without its close; its launcher's {status})")
            }
        }
    }
}

/// An uncaught error (a panic) in a worker: the `onerror` event's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorReport {
    /// The panic message.
    pub message: String,
    /// The source file the panic came from, when known.
    pub file: Option<String>,
    /// The line in `file`.
    pub line: Option<u32>,
    /// The column in `file`.
    pub column: Option<u32>,
    /// A captured backtrace, when `RUST_BACKTRACE` asked for one.
    pub backtrace: Option<String>,
}

impl ErrorReport {
    /// A report with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorReport {
            message: message.into(),
            file: None,
            line: None,
            column: None,
            backtrace: None,
        }
    }
}

/// The most of a worker's report the parent keeps: its message, its file
/// and its backtrace each cut to so many bytes (see [`cut`]). A report
/// comes unasked, as an event, and its text is the worker's to choose.
const REPORT_MESSAGE_MAX: usize = 16 << 10;
const REPORT_FILE_MAX: usize = 4 << 10;
const REPORT_BACKTRACE_MAX: usize = 64 << 10;

impl ErrorReport {
    /// This report, its text cut to what the parent keeps of one from a
    /// worker (16 KiB of message, 4 KiB of file name, 64 KiB of
    /// backtrace), and the bytes it then holds.
    pub(crate) fn bounded(self) -> (Self, usize) {
        let ErrorReport { message, file, line, column, backtrace } = self;
        let report = ErrorReport {
            message: cut(message, REPORT_MESSAGE_MAX),
            file: file.map(|f| cut(f, REPORT_FILE_MAX)),
            line,
            column,
            backtrace: backtrace.map(|b| cut(b, REPORT_BACKTRACE_MAX)),
        };
        let held = report.message.len()
            + report.file.as_ref().map_or(0, String::len)
            + report.backtrace.as_ref().map_or(0, String::len);
        (report, held)
    }
}

/// A panic's message, from its payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Drops `value`, what is left of something that panicked: its drop may
/// panic again, and that panic is contained here.
pub(crate) fn drop_contained<T>(value: T) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
}

/// `text` cut to at most `max` bytes (at a character's boundary, `max` of
/// 64 at least), saying how much was cut: text a peer chose, kept by this
/// side.
pub(crate) fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    // Room for what is said of the cut (at most 64 bytes).
    let total = text.len();
    let mut end = max.saturating_sub(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // A new string: the long one's allocation goes with it.
    format!("{} \u{2026} ({} of {total} bytes cut)", &text[..end], total - end)
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(file) = &self.file {
            write!(f, " at {file}")?;
            if let (Some(line), Some(col)) = (self.line, self.column) {
                write!(f, ":{line}:{col}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_and_says_how_much() {
        assert_eq!(cut("short".into(), 64), "short");
        // 2-byte characters: the cut falls between two of them.
        let long = "é".repeat(1000);
        let kept = cut(long, 200);
        assert!(kept.len() <= 200, "{} bytes", kept.len());
        assert!(kept.starts_with(&"é".repeat(68)));
        assert!(kept.ends_with(" \u{2026} (1864 of 2000 bytes cut)"), "{kept}");
        assert!(kept.capacity() < 400, "the long text's allocation went");
        let (report, held) = ErrorReport {
            message: "m".repeat(1 << 20),
            file: Some("f".repeat(10_000)),
            line: Some(3),
            column: Some(4),
            backtrace: Some("b".repeat(1 << 20)),
        }
        .bounded();
        assert!(report.message.len() <= REPORT_MESSAGE_MAX);
        assert!(report.file.as_ref().unwrap().len() <= REPORT_FILE_MAX);
        assert!(report.backtrace.as_ref().unwrap().len() <= REPORT_BACKTRACE_MAX);
        assert_eq!((report.line, report.column), (Some(3), Some(4)));
        assert!(held <= REPORT_MESSAGE_MAX + REPORT_FILE_MAX + REPORT_BACKTRACE_MAX);
    }
}
