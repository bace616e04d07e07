//! Spans across the process boundary, for any session: the span of a
//! request on the asking side ([`asking`], its context made by
//! [`context_of`] to travel in the request's envelope), the span of its
//! handling on the answering side ([`answering`], joined to the asker's
//! by that context), and the [`Propagator`] an application installs to
//! have its own trace ids travel (OpenTelemetry's, through
//! `tracing-opentelemetry`) instead of the crate's.
//!
//! Nothing here costs anything while no `tracing` subscriber wants these
//! spans: each is made by one macro whose callsite interest is cached
//! ("never" with no subscriber: one load and a branch), a disabled span
//! holds nothing, and a request whose asking span is disabled travels as
//! a plain `Request`, byte for byte as before.
//!
//! Without a propagator, the crate makes its own ids of the W3C shape and
//! records them as fields of the spans on both sides (`trace_id`,
//! `span_id`, and `parent_span_id` on the answering side), so that a plain
//! subscriber joins the two by their values; a request asked while a
//! handling span is entered on this thread (a worker asking its parent
//! from inside a handler) stays in that trace.

use std::cell::Cell;
use std::sync::OnceLock;

use tracing::field::Empty;
use tracing::Span;

use crate::wire::trace::TraceContext;

/// The target of every span the crate makes (filter on it:
/// `actix_webworker=info`).
pub(crate) const TARGET: &str = "actix_webworker";

/// How an application's own trace context travels with requests: made
/// from the asking span, attached to the answering span. Install one with
/// [`set_propagator`], in the parent and in the worker (one binary: before
/// [`run_if_worker`](crate::run_if_worker)).
///
/// With `tracing-opentelemetry`, [`context`](Propagator::context) reads
/// the span's OpenTelemetry span context and
/// [`attach`](Propagator::attach) sets the span's parent to the remote
/// context (docs/tracing.md has the whole of it); the crate itself does
/// not depend on OpenTelemetry.
pub trait Propagator: Send + Sync + 'static {
    /// The context that travels with a request asked under `span` (the
    /// asking span, entered nowhere yet); `None` to let the crate make
    /// its own ids.
    fn context(&self, span: &Span) -> Option<TraceContext>;

    /// Joins `span` (the answering span, not entered yet) to the asker's
    /// `context`.
    fn attach(&self, span: &Span, context: &TraceContext);
}

static PROPAGATOR: OnceLock<Box<dyn Propagator>> = OnceLock::new();

/// Installs the process's [`Propagator`]; `false` (and this one dropped)
/// when one was installed already.
pub fn set_propagator(propagator: impl Propagator) -> bool {
    PROPAGATOR.set(Box::new(propagator)).is_ok()
}

thread_local! {
    /// The trace of the handling span entered on this thread, if any.
    static CURRENT: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
}

/// Whether a subscriber wants `span`: it is enabled, and not by the
/// no-op subscriber of a thread that has none (with several subscribers
/// in one process, each scoped to its threads, `tracing` may hand out
/// spans of the no-op one: recorded nowhere, they are not worth a byte).
/// While no subscriber exists at all, one branch.
pub(crate) fn wanted(span: &Span) -> bool {
    !span.is_disabled()
        && span.with_subscriber(|(_, d)| !d.is::<tracing::subscriber::NoSubscriber>()) == Some(true)
}

/// The span of one request on the asking side, a child of the span
/// current where it is made (the caller's); disabled when no subscriber
/// wants it. Its other fields are recorded as they become known.
pub(crate) fn asking(request: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "ask",
        request,
        worker = Empty,
        member = Empty,
        pid = Empty,
        id = Empty,
        trace_id = Empty,
        span_id = Empty,
    )
}

/// The context that travels with request `id`, asked under `span`: none
/// when the span is disabled (no subscriber wants it). The propagator's
/// when one is installed and gives one, else the crate's own: in the trace
/// of the handling span entered on this thread, or a new one. Its ids are
/// recorded on the span.
pub(crate) fn context_of(span: &Span, id: u64) -> Option<TraceContext> {
    if !wanted(span) {
        return None;
    }
    let theirs = PROPAGATOR.get().and_then(|p| p.context(span));
    let context = theirs.unwrap_or_else(|| TraceContext::fresh(CURRENT.get()));
    span.record("id", id);
    span.record("trace_id", context.trace_id_hex());
    span.record("span_id", context.span_id_hex());
    Some(context)
}

/// [`context_of`] for request `id` asked of a peer (a worker) under
/// `span`: which the span says (its name, and its pid once known), and
/// the span follows from the peer's own.
pub(crate) fn of_peer(
    span: &Span,
    id: u64,
    (peer, name, pid): (&Span, &str, u32),
) -> Option<TraceContext> {
    if !wanted(span) {
        return None;
    }
    span.record("worker", name);
    if pid != 0 {
        span.record("pid", pid);
    }
    span.follows_from(peer);
    context_of(span, id)
}

/// The span of a worker (or of any peer a session serves), in the
/// process that talks to it: `name` and `entry` now, its `pid` recorded
/// once it is known (again on each restart).
pub(crate) fn peer(name: &str, entry: &str) -> Span {
    tracing::info_span!(target: TARGET, "worker", name, entry, pid = Empty)
}

/// The span of a worker's own runtime, in the worker.
pub(crate) fn runtime(entry: &str) -> Span {
    let pid = std::process::id();
    tracing::info_span!(target: TARGET, "runtime", entry, pid)
}

/// The span of one end of a channel (`channel/`), in the process that
/// holds it: the parent of the spans of the requests it answers.
pub(crate) fn channel(first: bool) -> Span {
    let pid = std::process::id();
    tracing::info_span!(target: TARGET, "channel", first, pid)
}

/// Where the handling of one request is traced: its span, and the trace
/// it belongs to (for what it asks in turn).
pub(crate) struct Scope {
    span: Span,
    trace_id: [u8; 16],
}

/// The span of the handling of request `id` on the answering side, a
/// child of `session` (its session's span) in this process and, across
/// the boundary, of the asking span whose `context` came with it; `None`
/// when no subscriber wants it.
pub(crate) fn answering(session: &Span, id: u64, context: Option<TraceContext>) -> Option<Scope> {
    let span = tracing::info_span!(
        target: TARGET,
        parent: session,
        "answer",
        id,
        request = Empty,
        trace_id = Empty,
        parent_span_id = Empty,
        span_id = Empty,
    );
    if !wanted(&span) {
        return None;
    }
    let own = TraceContext::fresh(context.map(|c| c.trace_id));
    span.record("trace_id", own.trace_id_hex());
    span.record("span_id", own.span_id_hex());
    if let Some(context) = &context {
        span.record("parent_span_id", context.span_id_hex());
        if let Some(propagator) = PROPAGATOR.get() {
            propagator.attach(&span, context);
        }
    }
    Some(Scope { span, trace_id: own.trace_id })
}

impl Scope {
    /// Names the request handled (known once its handler is found).
    pub(crate) fn name(&self, request: &'static str) {
        self.span.record("request", request);
    }

    /// Enters the span, and its trace for what is asked meanwhile on
    /// this thread, until the guard is dropped.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let before = CURRENT.replace(Some(self.trace_id));
        Entered { _span: self.span.enter(), before }
    }

    /// `fut`, polled inside this scope each time.
    pub(crate) fn wrap<F: std::future::Future + Unpin>(self, fut: F) -> Scoped<F> {
        Scoped { scope: self, fut }
    }
}

/// A [`Scope`] entered (see [`Scope::enter`]).
pub(crate) struct Entered<'a> {
    _span: tracing::span::Entered<'a>,
    before: Option<[u8; 16]>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.set(self.before);
    }
}

/// A future polled inside a [`Scope`].
pub(crate) struct Scoped<F> {
    scope: Scope,
    fut: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for Scoped<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.scope.enter();
        std::pin::Pin::new(&mut this.fut).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_no_subscriber_nothing_is_made_and_nothing_travels() {
        let span = asking("Sum");
        assert!(span.is_disabled());
        assert_eq!(context_of(&span, 1), None);
        assert!(answering(&Span::none(), 1, None).is_none());
        assert_eq!(CURRENT.get(), None);
    }
}
