//! Spans across the process boundary, for any session: the span of a
//! request on the asking side ([`ask`], which also makes the context that
//! travels in the request's envelope), a child of the span current where
//! the request was made ([`Caller`]); the span of its handling on the
//! answering side ([`answering`], joined to the asker's by that context);
//! and the [`Propagator`] an application installs to
//! have its own trace ids travel (OpenTelemetry's, through
//! `tracing-opentelemetry`) instead of the crate's.
//!
//! Nothing here costs anything while no `tracing` subscriber wants these
//! spans: with none installed in the process, no span is made (one load
//! and a branch); with one that does not want them, each is one macro
//! whose callsite interest is cached; a disabled span holds nothing, and a
//! request whose asking span is disabled travels as a plain `Request`,
//! byte for byte as before.
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

/// Whether no `tracing` subscriber has ever been installed in this
/// process: then no span is made at all. Not only cheaper than a disabled
/// span: with `tracing`'s `log` feature, a disabled span's fields go to
/// `log` as a record, and an application that logs through `log` would
/// get a line per request. (`has_been_set` is hidden in `tracing`'s docs,
/// and is what its own `log` bridge asks.)
fn none_installed() -> bool {
    !tracing::dispatcher::has_been_set()
}

/// Where an ask comes from: the span current where it was made (the
/// caller's: an `Ask` is made in its caller's handler and handled in an
/// actor's mailbox later), and, through a pool, the member it went to.
/// Nothing while no subscriber is installed.
pub(crate) struct Caller {
    span: Span,
    member: Option<usize>,
}

impl Caller {
    /// The caller here: the span current now.
    pub(crate) fn here() -> Self {
        let span = if none_installed() { Span::none() } else { Span::current() };
        Caller { span, member: None }
    }

    /// The same, routed by a pool to member `member`.
    pub(crate) fn with_member(self, member: usize) -> Self {
        Caller { member: Some(member), ..self }
    }
}

/// Whom a request is asked of, as its span says: a worker (its name, its
/// pid once known, its own span), or the peer of a session that knows
/// none of that (a port, a worker asking its parent).
#[derive(Default)]
pub(crate) struct Peer<'a> {
    pub name: Option<&'a str>,
    pub pid: Option<u32>,
    pub span: Option<&'a Span>,
}

/// Ids as lower-case hex, written by the subscriber if it wants them: no
/// string is made here.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, &b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        let len = 2 * self.0.len().min(16);
        // Only hex digits were written.
        f.write_str(std::str::from_utf8(&out[..len]).unwrap_or_default())
    }
}

/// The span of request `id` (of type `request`) on the asking side, a
/// child of its caller's span, made with all its fields at once; and the
/// context that travels with the request: none when no subscriber wants
/// the span. The context is the propagator's, when one is installed and
/// gives one (its ids then recorded on the span), else the crate's own: in
/// the trace of the handling span entered on this thread, or a new one.
pub(crate) fn ask(
    caller: Caller,
    request: &'static str,
    id: u64,
    peer: Peer<'_>,
) -> (Span, Option<TraceContext>) {
    if none_installed() {
        return (Span::none(), None);
    }
    let propagator = PROPAGATOR.get();
    let own = propagator.is_none().then(|| TraceContext::fresh(CURRENT.get()));
    let span = tracing::info_span!(
        target: TARGET,
        parent: &caller.span,
        "ask",
        request,
        worker = peer.name,
        pid = peer.pid.filter(|&pid| pid != 0),
        member = caller.member,
        id,
        trace_id = own.as_ref().map(|c| tracing::field::display(Hex(&c.trace_id))),
        span_id = own.as_ref().map(|c| tracing::field::display(Hex(&c.span_id))),
    );
    if !wanted(&span) {
        return (span, None);
    }
    if let Some(peer) = peer.span {
        span.follows_from(peer);
    }
    let context = match (own, propagator) {
        (Some(own), _) => own,
        (None, Some(p)) => {
            let context = p.context(&span).unwrap_or_else(|| TraceContext::fresh(CURRENT.get()));
            span.record("trace_id", tracing::field::display(Hex(&context.trace_id)));
            span.record("span_id", tracing::field::display(Hex(&context.span_id)));
            context
        }
        (None, None) => unreachable!("own ids are made when there is no propagator"),
    };
    (span, Some(context))
}

/// The span of a worker (or of any peer a session serves), in the
/// process that talks to it: `name` and `entry` now, its `pid` recorded
/// once it is known (again on each restart).
pub(crate) fn peer(name: &str, entry: &str) -> Span {
    if none_installed() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "worker", name, entry, pid = Empty)
}

/// The span of a worker's own runtime, in the worker.
pub(crate) fn runtime(entry: &str) -> Span {
    if none_installed() {
        return Span::none();
    }
    let pid = std::process::id();
    tracing::info_span!(target: TARGET, "runtime", entry, pid)
}

/// The span of one end of a channel (`channel/`), in the process that
/// holds it: the parent of the spans of the requests it answers.
pub(crate) fn channel(first: bool) -> Span {
    if none_installed() {
        return Span::none();
    }
    let pid = std::process::id();
    tracing::info_span!(target: TARGET, "channel", first, pid)
}

/// Where the handling of one request is traced: its span, and the trace
/// it belongs to (for what it asks in turn).
pub(crate) struct Scope {
    span: Span,
    trace_id: [u8; 16],
}

/// The span of the handling of request `id` (of type `request`) on the
/// answering side, a child of `session` (its session's span) in this
/// process and, across the boundary, of the asking span whose `context`
/// came with it; made with all its fields at once; `None` when no
/// subscriber wants it.
pub(crate) fn answering(
    session: &Span,
    (id, request): (u64, &'static str),
    context: Option<TraceContext>,
) -> Option<Scope> {
    if none_installed() {
        return None;
    }
    let own = TraceContext::fresh(context.map(|c| c.trace_id));
    let span = tracing::info_span!(
        target: TARGET,
        parent: session,
        "answer",
        id,
        request,
        trace_id = tracing::field::display(Hex(&own.trace_id)),
        parent_span_id = context.as_ref().map(|c| tracing::field::display(Hex(&c.span_id))),
        span_id = tracing::field::display(Hex(&own.span_id)),
    );
    if !wanted(&span) {
        return None;
    }
    if let (Some(context), Some(propagator)) = (&context, PROPAGATOR.get()) {
        propagator.attach(&span, context);
    }
    Some(Scope { span, trace_id: own.trace_id })
}

impl Scope {
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
        let (span, context) = ask(Caller::here(), "Sum", 1, Peer::default());
        assert!(span.is_disabled());
        assert_eq!(context, None);
        assert!(answering(&Span::none(), (1, "Sum"), None).is_none());
        assert_eq!(CURRENT.get(), None);
    }

    #[test]
    fn ids_are_written_as_lower_case_hex() {
        assert_eq!(Hex(&[0x0a, 0xff, 0x10]).to_string(), "0aff10");
    }
}
