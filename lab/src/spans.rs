//! A `tracing` subscriber that records every span, as the base of a real
//! one would (tracing-subscriber's registry): each span's id, name, parent
//! (explicit, or the span entered on its thread) and how many fields it
//! has, kept in a ring of the last [`KEPT`]; and, when asked, every field
//! formatted into a string as well, as a formatting or exporting layer
//! does. What the `tracing_overhead` rows measure against no subscriber.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

/// How many recorded spans (and updates of their fields) are kept.
pub const KEPT: usize = 4096;

/// One span as recorded, or an update of its fields.
pub struct Recorded {
    pub id: u64,
    pub name: &'static str,
    pub parent: Option<u64>,
    pub fields: usize,
    /// The fields written out, when the recorder formats them.
    pub text: String,
}

/// The subscriber.
#[derive(Default)]
pub struct Recorder {
    next: AtomicU64,
    /// Spans made, in all.
    pub spans: AtomicU64,
    /// Whether fields are formatted too.
    format: bool,
    ring: Mutex<VecDeque<Recorded>>,
}

type Entered = (u64, &'static Metadata<'static>);

thread_local! {
    /// The spans entered on this thread, innermost last.
    static STACK: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
    /// The metadata of the spans made on this thread and not closed.
    static METAS: RefCell<std::collections::HashMap<u64, &'static Metadata<'static>>> =
        RefCell::new(std::collections::HashMap::new());
}

impl Recorder {
    /// A recorder; one that formats every field when `format`.
    pub fn new(format: bool) -> Self {
        Recorder { format, ..Recorder::default() }
    }

    fn keep(&self, recorded: Recorded) {
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(recorded);
    }

    fn fields(&self, record: impl FnOnce(&mut Fields)) -> Fields {
        let mut fields = Fields { format: self.format, count: 0, text: String::new() };
        record(&mut fields);
        fields
    }
}

/// Fields, counted, and written as `name=value` pairs when formatting.
struct Fields {
    format: bool,
    count: usize,
    text: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.count += 1;
        if self.format {
            let _ = write!(self.text, "{}={:?} ", field.name(), value);
        }
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
            None if attrs.is_contextual() => STACK.with_borrow(|s| s.last().map(|&(id, _)| id)),
            None => None,
        };
        let fields = self.fields(|f| attrs.record(f));
        let name = attrs.metadata().name();
        METAS.with_borrow_mut(|m| m.insert(id, attrs.metadata()));
        self.keep(Recorded { id, name, parent, fields: fields.count, text: fields.text });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let fields = self.fields(|f| values.record(f));
        let (id, count, text) = (span.into_u64(), fields.count, fields.text);
        self.keep(Recorded { id, name: "", parent: None, fields: count, text });
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        let id = span.into_u64();
        if let Some(meta) = METAS.with_borrow(|m| m.get(&id).copied()) {
            STACK.with_borrow_mut(|s| s.push((id, meta)));
        }
    }

    fn try_close(&self, span: Id) -> bool {
        METAS.with_borrow_mut(|m| m.remove(&span.into_u64()));
        true
    }

    fn exit(&self, span: &Id) {
        STACK.with_borrow_mut(|s| {
            if let Some(at) = s.iter().rposition(|&(id, _)| id == span.into_u64()) {
                s.remove(at);
            }
        });
    }

    /// The span entered last on this thread (what `Span::current` gives).
    fn current_span(&self) -> Current {
        let top = STACK.with_borrow(|s| s.last().copied());
        top.map_or_else(Current::none, |(id, meta)| Current::new(Id::from_u64(id), meta))
    }
}

/// The variable that has a process of the lab record its spans: `1`, or
/// `fmt` to format their fields too.
pub const TRACE_ENV: &str = "LAB_TRACE";

/// Installs a [`Recorder`] for the whole process when [`TRACE_ENV`] is
/// set (a worker inherits it from its parent): first thing in `main`.
pub fn install_if_asked() {
    if let Some(how) = std::env::var_os(TRACE_ENV) {
        let recorder = Recorder::new(how == "fmt");
        tracing::subscriber::set_global_default(recorder).expect("the first subscriber");
    }
}
