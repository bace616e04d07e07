//! A `tracing` subscriber that records every span, as an exporter would
//! before it sends them: each span's id, name, parent (explicit, or the
//! span entered on its thread) and fields formatted into a string, kept in
//! a ring of the last [`KEPT`]. What the `tracing_overhead` rows measure
//! against no subscriber at all.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// How many recorded spans (and updates of their fields) are kept.
pub const KEPT: usize = 4096;

/// One span as recorded, or an update of its fields.
pub struct Recorded {
    pub id: u64,
    pub name: &'static str,
    pub parent: Option<u64>,
    pub fields: String,
}

/// The subscriber.
#[derive(Default)]
pub struct Recorder {
    next: AtomicU64,
    /// Spans made, in all.
    pub spans: AtomicU64,
    ring: Mutex<VecDeque<Recorded>>,
}

thread_local! {
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl Recorder {
    fn keep(&self, recorded: Recorded) {
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(recorded);
    }
}

/// Fields as `name=value` pairs.
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span()
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.spans.fetch_add(1, Ordering::Relaxed);
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => STACK.with_borrow(|s| s.last().copied()),
            None => None,
        };
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        let name = attrs.metadata().name();
        self.keep(Recorded { id, name, parent, fields: fields.0 });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        self.keep(Recorded { id: span.into_u64(), name: "", parent: None, fields: fields.0 });
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        STACK.with_borrow_mut(|s| s.push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        STACK.with_borrow_mut(|s| {
            if let Some(at) = s.iter().rposition(|&id| id == span.into_u64()) {
                s.remove(at);
            }
        });
    }
}

/// The variable that has a process of the lab record its spans.
pub const TRACE_ENV: &str = "LAB_TRACE";

/// Installs a [`Recorder`] for the whole process when [`TRACE_ENV`] is
/// set (a worker inherits it from its parent): first thing in `main`.
pub fn install_if_asked() {
    if std::env::var_os(TRACE_ENV).is_some() {
        tracing::subscriber::set_global_default(Recorder::default()).expect("the first subscriber");
    }
}
