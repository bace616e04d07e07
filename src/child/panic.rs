//! Panics in the worker: reported with their location, survived where the
//! actor can go on.
//!
//! A process-wide panic hook turns every panic, on any thread, into an
//! [`ErrorReport`] (message, file, line, column, and a backtrace when
//! `RUST_BACKTRACE` asks for one) and hands it to the runtime, which offers
//! it to the actor's `on_error` and, unless handled, sends it to the parent.
//! The hook keeps the default one's output on stderr.
//!
//! [`CatchPanics`] polls the actor's context inside `catch_unwind`. A panic in a
//! message handler (or in an interval's closure) leaves the context
//! consistent: the message was taken before it ran, so polling simply goes
//! on and the next message is handled, as a Web Worker goes on after an
//! uncaught exception. Other items of the context cannot be resumed after a
//! panic: polled again, a `run_later` timer panics with "polled after
//! finish", an `async` future with "resumed after panicking". Such a second
//! panic is the sign that the actor cannot recover: it is not reported
//! again, and the worker exits with code 101 once the first report is out.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

use crate::error::ErrorReport;
use crate::report::{drop_contained, panic_message as payload_text};

/// Whether a panic message is the consequence of polling something that
/// panicked before.
fn is_consequence(message: &str) -> bool {
    message.contains("after panicking") || message.contains("polled after")
}

fn last() -> &'static Mutex<Option<ErrorReport>> {
    static LAST: OnceLock<Mutex<Option<ErrorReport>>> = OnceLock::new();
    LAST.get_or_init(|| Mutex::new(None))
}

/// Takes the report of the latest panic: on the worker's single actor
/// thread, the one that just dropped a request's answer.
pub(crate) fn last_report() -> Option<ErrorReport> {
    last().lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn sink() -> &'static Mutex<Option<UnboundedSender<ErrorReport>>> {
    static SINK: OnceLock<Mutex<Option<UnboundedSender<ErrorReport>>>> = OnceLock::new();
    SINK.get_or_init(|| Mutex::new(None))
}

/// Installs the hook; reports go to `tx` from now on.
pub(crate) fn install(tx: UnboundedSender<ErrorReport>) {
    *sink().lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        default(info);
        let message = payload_text(info.payload());
        if is_consequence(&message) {
            // A consequence of an earlier panic, already reported.
            return;
        }
        let backtrace = Backtrace::capture();
        let report = ErrorReport {
            message,
            file: info.location().map(|l| l.file().to_owned()),
            line: info.location().map(|l| l.line()),
            column: info.location().map(|l| l.column()),
            backtrace: (backtrace.status() == BacktraceStatus::Captured)
                .then(|| backtrace.to_string()),
        };
        if let Ok(mut last) = last().try_lock() {
            *last = Some(report.clone());
        }
        if let Ok(guard) = sink().try_lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.send(report);
            }
        }
    }));
}

/// Polls `F` (the actor's context) and survives its panics; see the module
/// docs. When the actor stops, or cannot recover, `done` is notified, and
/// `fatal` says which.
pub(crate) struct CatchPanics<F> {
    fut: Option<F>,
    pub(crate) done: Arc<Notify>,
    pub(crate) fatal: Arc<std::sync::atomic::AtomicBool>,
}

impl<F> CatchPanics<F> {
    pub(crate) fn new(fut: F) -> Self {
        CatchPanics { fut: Some(fut), done: Arc::new(Notify::new()), fatal: Default::default() }
    }
}

impl<F: Future<Output = ()> + Unpin> Future for CatchPanics<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(fut) = self.fut.as_mut() else {
                return Poll::Ready(());
            };
            match panic::catch_unwind(AssertUnwindSafe(|| Pin::new(fut).poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => {
                    self.fut = None;
                    self.done.notify_one();
                    return Poll::Ready(());
                }
                Err(payload) => {
                    if is_consequence(&payload_text(&*payload)) {
                        self.fatal.store(true, std::sync::atomic::Ordering::SeqCst);
                        // Dropping the context may panic again: contained.
                        drop_contained(self.fut.take());
                        self.done.notify_one();
                        return Poll::Ready(());
                    }
                    // Reported by the hook; poll again to see if it goes on.
                }
            }
        }
    }
}
