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
