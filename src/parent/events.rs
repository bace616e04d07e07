//! What a worker tells its parent: the `onmessage`, `onerror` and `onexit`
//! of the original, delivered to an actix [`Recipient`](actix::Recipient).

use std::fmt;
use std::sync::Arc;

use actix::Message;

use crate::error::{ErrorReport, ExitStatus, WireError, WorkerError};
use crate::held::{Held, Holds};
use crate::protocol::{Protocol, Received};

/// One event from one worker: which worker, and what happened.
#[non_exhaustive]
pub struct WorkerEvent<P: Protocol> {
    /// The worker's name (see [`WorkerBuilder::name`](crate::WorkerBuilder::name)).
    pub name: Arc<str>,
    /// The pid of the worker process the event is about.
    pub pid: u32,
    /// What happened.
    pub kind: Event<P>,
    /// Its share of what all workers' events may hold together, for an
    /// event whose share is not in a message of its own (an error
    /// report): given back when the event is dropped.
    _held: Held,
}

impl<P: Protocol> WorkerEvent<P> {
    /// An event holding nothing of the all-workers total.
    pub(crate) fn new(name: Arc<str>, pid: u32, kind: Event<P>) -> Self {
        WorkerEvent { name, pid, kind, _held: Held::default() }
    }

    /// An event that holds `holds` of the all-workers total until dropped.
    pub(crate) fn holding(name: Arc<str>, pid: u32, kind: Event<P>, holds: Holds) -> Self {
        WorkerEvent { name, pid, kind, _held: Held::take(holds) }
    }
}

/// What happened in a worker.
#[non_exhaustive]
pub enum Event<P: Protocol> {
    /// The worker process finished its handshake; queued messages are on
    /// their way.
    Online,
    /// The worker posted a message (`onmessage`).
    Message(Received<P::FromWorker>),
    /// An uncaught panic in the worker that its own `on_error` did not handle
    /// (`onerror`): message, file, line, column, backtrace.
    Error(ErrorReport),
    /// Something on the wire was wrong: an undecodable or over-size message,
    /// garbage, a mismatched worker binary, a message cut off. A message
    /// that does not decode ([`WireError::Decode`]) leaves the connection
    /// up; the others end it: the worker is killed and an `Exit` follows.
    WireError(WireError),
    /// A post was refused (too large, queue full, worker terminating or
    /// gone); the sender of a `send` got the same error.
    Refused(WorkerError),
    /// This many posts were accepted but never written, because the worker
    /// exited for good: still queued, or waiting for room in the queue.
    /// (Requests fail with their own error instead; control messages are
    /// not counted.)
    Undelivered(usize),
    /// The worker process died while this many posts sat in its socket:
    /// they had been written, but it may not have read them. Each was
    /// handled at most once; none is sent again. Comes before the `Exit`.
    MaybeLost(usize),
    /// The worker process ended (`onexit(code, signal)`); sent exactly once
    /// per process, after every other event of that process, and before any
    /// restart.
    Exit(ExitStatus),
    /// A new process will be started after `delay`: restart number
    /// `attempt` in the policy's window. `Online` follows when it is up.
    Restarting {
        /// Which restart in the current window (1 for the first).
        attempt: u32,
        /// The backoff before it starts.
        delay: std::time::Duration,
    },
    /// The worker stopped for good because restarting it would break its
    /// policy (or a new process could not be started).
    GaveUp(GaveUp),
}

/// Why a supervised worker stopped for good.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GaveUp {
    /// What limit was hit, or what makes a restart pointless.
    pub reason: String,
    /// The exits that led there, oldest first.
    pub exits: Vec<ExitStatus>,
    /// The error that makes a restart certain to fail the same way, when
    /// that is why: a worker of another protocol version or other message
    /// types, or one without the entry asked for. Such a worker is never
    /// restarted.
    pub cause: Option<WireError>,
}

/// Says what happened in a worker through `tracing`, for a worker with no
/// events recipient: errors, refusals, losses and exits are not to vanish.
pub(crate) fn log_event<P: Protocol>(name: &str, pid: u32, kind: &Event<P>) {
    // The message aside, nothing here depends on the protocol: said by
    // one function for all of them (each `tracing` call is code of its own).
    let said = match kind {
        Event::Online => Said::Online,
        Event::Message(_) => Said::Message,
        Event::Error(report) => Said::Error(report),
        Event::WireError(e) => Said::WireError(e),
        Event::Refused(e) => Said::Refused(e),
        Event::Undelivered(n) => Said::Undelivered(*n),
        Event::MaybeLost(n) => Said::MaybeLost(*n),
        Event::Exit(status) => Said::Exit(status),
        Event::Restarting { attempt, delay } => Said::Restarting(*attempt, *delay),
        Event::GaveUp(g) => Said::GaveUp(g),
    };
    log_said(name, pid, said);
}

/// An [`Event`] as the log says it, whatever its protocol.
enum Said<'a> {
    Online,
    Message,
    Error(&'a ErrorReport),
    WireError(&'a WireError),
    Refused(&'a WorkerError),
    Undelivered(usize),
    MaybeLost(usize),
    Exit(&'a ExitStatus),
    Restarting(u32, std::time::Duration),
    GaveUp(&'a GaveUp),
}

fn log_said(name: &str, pid: u32, said: Said<'_>) {
    match said {
        Said::Online => tracing::debug!(worker = name, pid, "online"),
        Said::Message => tracing::trace!(worker = name, pid, "message, no events recipient"),
        Said::Error(report) => tracing::error!(worker = name, pid, %report, "uncaught error"),
        Said::WireError(e) => tracing::warn!(worker = name, pid, error = %e, "wire error"),
        Said::Refused(e) => tracing::warn!(worker = name, pid, error = %e, "post refused"),
        Said::Undelivered(n) => tracing::warn!(worker = name, pid, n, "posts never delivered"),
        Said::MaybeLost(n) => tracing::warn!(worker = name, pid, n, "posts may have been lost"),
        Said::Exit(status) if status.success() => {
            tracing::info!(worker = name, pid, %status, "exited")
        }
        Said::Exit(status) => tracing::warn!(worker = name, pid, %status, "exited"),
        Said::Restarting(attempt, delay) => {
            tracing::info!(worker = name, pid, attempt, ?delay, "restarting")
        }
        Said::GaveUp(g) => tracing::error!(worker = name, pid, reason = %g.reason, "gave up"),
    }
}

impl<P: Protocol> Message for WorkerEvent<P> {
    type Result = ();
}

impl<P: Protocol> fmt::Debug for Event<P>
where
    P::FromWorker: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Online => f.write_str("Online"),
            Event::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Event::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Event::WireError(e) => f.debug_tuple("WireError").field(e).finish(),
            Event::Refused(e) => f.debug_tuple("Refused").field(e).finish(),
            Event::Undelivered(n) => f.debug_tuple("Undelivered").field(n).finish(),
            Event::MaybeLost(n) => f.debug_tuple("MaybeLost").field(n).finish(),
            Event::Exit(s) => f.debug_tuple("Exit").field(s).finish(),
            Event::Restarting { attempt, delay } => f
                .debug_struct("Restarting")
                .field("attempt", attempt)
                .field("delay", delay)
                .finish(),
            Event::GaveUp(g) => f.debug_tuple("GaveUp").field(g).finish(),
        }
    }
}

impl<P: Protocol> fmt::Debug for WorkerEvent<P>
where
    P::FromWorker: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerEvent")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("kind", &self.kind)
            .finish()
    }
}
