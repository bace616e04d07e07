//! A `tracing` subscriber that records spans: each one's name, fields, and
//! parent in its process, as lines of JSON, kept in memory (the test's own
//! process, for the test's thread only) or appended to a file (a worker's,
//! installed for the whole process when the test asks for it through the
//! environment: `AWW_TRACE_DIR`). The test reads both and joins them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

/// Where a worker started by a test writes its spans: one file per
/// process in this directory.
pub const TRACE_DIR: &str = "AWW_TRACE_DIR";

/// Set in a worker that installs [`Fixed`] as its propagator.
pub const PROPAGATOR_ENV: &str = "AWW_TRACE_PROPAGATOR";

/// The trace id [`Fixed`] gives every context.
pub const FIXED_TRACE: [u8; 16] = *b"fixed-trace-id!!";

/// A propagator that stands in for OpenTelemetry's: every ask's context
/// is in the trace [`FIXED_TRACE`], with span ids counted from 1; every
/// context attached to is written to `<pid>.attached` in [`TRACE_DIR`].
pub struct Fixed;

impl actix_webworker::Propagator for Fixed {
    fn context(&self, _: &tracing::Span) -> Option<actix_webworker::TraceContext> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let span_id = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        Some(actix_webworker::TraceContext::new(FIXED_TRACE, span_id, 1))
    }

    fn attach(&self, _: &tracing::Span, cx: &actix_webworker::TraceContext) {
        let Some(dir) = std::env::var_os(TRACE_DIR) else { return };
        let path = Path::new(&dir).join(format!("{}.attached", std::process::id()));
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(file, "{} {}", cx.trace_id_hex(), cx.span_id_hex()).unwrap();
    }
}

/// One span as recorded.
#[derive(Clone, Debug, Default)]
pub struct SpanRec {
    pub id: u64,
    pub name: String,
    /// Its parent in its own process.
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
    pub follows: Vec<u64>,
    /// Its last handle was dropped (the subscriber was told to close it).
    pub closed: bool,
    /// Its callsite's target and level.
    pub target: String,
    pub level: String,
}

impl SpanRec {
    /// Field `name`, or "" when it was never recorded.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// Where the lines go.
enum Sink {
    Memory(Arc<Mutex<Vec<String>>>),
    File(Mutex<std::fs::File>),
}

/// The subscriber.
pub struct Recorder {
    next: AtomicU64,
    sink: Sink,
    /// Each span's metadata, for `current_span`.
    metas: Mutex<std::collections::HashMap<u64, &'static Metadata<'static>>>,
    /// Each open span's handles: closed (and said so) when the last goes.
    handles: Mutex<std::collections::HashMap<u64, usize>>,
}

thread_local! {
    /// The spans entered on this thread, innermost last.
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl Recorder {
    /// A recorder whose lines are read from the returned buffer.
    pub fn in_memory() -> (Recorder, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink::Memory(lines.clone());
        let recorder = Recorder {
            next: AtomicU64::new(1),
            sink,
            metas: Default::default(),
            handles: Default::default(),
        };
        (recorder, lines)
    }

    fn write(&self, line: serde_json::Value) {
        match &self.sink {
            Sink::Memory(lines) => lines.lock().unwrap().push(line.to_string()),
            Sink::File(file) => {
                let mut file = file.lock().unwrap();
                let _ = writeln!(file, "{line}");
            }
        }
    }
}

/// In a worker the test started with [`TRACE_DIR`] set: records every
/// span of the process in a file of its own there. Called before
/// `run_if_worker`, as an application installs its subscriber.
pub fn install_if_asked() {
    let Some(dir) = std::env::var_os(TRACE_DIR) else { return };
    let path = Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let sink = Sink::File(Mutex::new(file));
    let recorder = Recorder {
        next: AtomicU64::new(1),
        sink,
        metas: Default::default(),
        handles: Default::default(),
    };
    tracing::subscriber::set_global_default(recorder).expect("no subscriber yet");
    if std::env::var_os(PROPAGATOR_ENV).is_some() {
        assert!(actix_webworker::set_propagator(Fixed), "the first propagator");
    }
}

/// Keeps every callsite's cached interest open while tests with
/// recorders of their own (`set_default`, one per test thread) run side by
/// side: a subscriber that is never installed and is asked each time.
///
/// `tracing` caches each callsite's interest when it is first hit, from
/// the subscribers alive then: hit first on a thread with none (another
/// test's), it is cached as "never", and a recorder made at that moment
/// can have its own rebuild of the cache overwritten by it (the
/// callsite's registration and the recorder's rebuild race in
/// `tracing-core`). The test's spans at that callsite are then never
/// made: `a_workers_handling_span_joins_the_callers_span` failed so, 11
/// times in 12 runs of the trace tests side by side. With this one alive,
/// no callsite is cached as "never": each asks the current thread's
/// subscriber.
pub fn keep_callsites_open() {
    struct AskEachTime;
    impl Subscriber for AskEachTime {
        fn register_callsite(
            &self,
            _: &'static Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            false
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    // Registered while it lives: for the whole run.
    std::mem::forget(tracing::Dispatch::new(AskEachTime));
}

/// A fresh directory for the workers' spans of one test.
pub fn trace_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aww-trace-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The spans in `lines`, their later fields applied.
pub fn spans(lines: &[String]) -> Vec<SpanRec> {
    let mut out: Vec<SpanRec> = Vec::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let fields = |v: &serde_json::Value| -> BTreeMap<String, String> {
            let map = v["fields"].as_object().cloned().unwrap_or_default();
            map.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect()
        };
        if let Some(id) = v["new"].as_u64() {
            out.push(SpanRec {
                id,
                name: v["name"].as_str().unwrap().to_owned(),
                parent: v["parent"].as_u64(),
                fields: fields(&v),
                follows: Vec::new(),
                closed: false,
                target: v["target"].as_str().unwrap_or_default().to_owned(),
                level: v["level"].as_str().unwrap_or_default().to_owned(),
            });
        } else if let Some(id) = v["record"].as_u64() {
            let span = out.iter_mut().find(|s| s.id == id).unwrap();
            span.fields.extend(fields(&v));
        } else if let Some(id) = v["close"].as_u64() {
            out.iter_mut().find(|s| s.id == id).unwrap().closed = true;
        } else if let Some(id) = v["follows"].as_u64() {
            let span = out.iter_mut().find(|s| s.id == id).unwrap();
            span.follows.push(v["from"].as_u64().unwrap());
        }
    }
    out
}

/// The spans of every worker process that wrote to `dir`, by pid.
pub fn worker_spans(dir: &Path) -> BTreeMap<u32, Vec<SpanRec>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_suffix(".jsonl").and_then(|p| p.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        out.insert(pid, spans(&lines));
    }
    out
}

/// Fields as strings.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span()
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => STACK.with_borrow(|s| s.last().copied()),
            None => None,
        };
        let mut fields = Fields(serde_json::Map::new());
        attrs.record(&mut fields);
        self.metas.lock().unwrap().insert(id, attrs.metadata());
        self.handles.lock().unwrap().insert(id, 1);
        let meta = attrs.metadata();
        let (name, target, level) = (meta.name(), meta.target(), meta.level().to_string());
        let line = serde_json::json!({
            "new": id, "name": name, "parent": parent, "fields": fields.0,
            "target": target, "level": level,
        });
        self.write(line);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields(serde_json::Map::new());
        values.record(&mut fields);
        self.write(serde_json::json!({"record": span.into_u64(), "fields": fields.0}));
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.write(serde_json::json!({"follows": span.into_u64(), "from": follows.into_u64()}));
    }

    fn event(&self, _: &Event<'_>) {}

    /// The span entered last on this thread (what `Span::current` gives).
    fn current_span(&self) -> Current {
        let metas = self.metas.lock().unwrap();
        let current = STACK.with_borrow(|s| s.last().and_then(|&id| Some((id, *metas.get(&id)?))));
        current.map_or_else(Current::none, |(id, meta)| Current::new(Id::from_u64(id), meta))
    }

    fn enter(&self, span: &Id) {
        STACK.with_borrow_mut(|s| s.push(span.into_u64()));
    }

    fn clone_span(&self, span: &Id) -> Id {
        *self.handles.lock().unwrap().entry(span.into_u64()).or_default() += 1;
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let id = span.into_u64();
        let mut handles = self.handles.lock().unwrap();
        let Some(left) = handles.get_mut(&id) else { return false };
        *left -= 1;
        if *left > 0 {
            return false;
        }
        handles.remove(&id);
        drop(handles);
        self.write(serde_json::json!({"close": id}));
        true
    }

    fn exit(&self, span: &Id) {
        STACK.with_borrow_mut(|s| {
            if let Some(at) = s.iter().rposition(|&id| id == span.into_u64()) {
                s.remove(at);
            }
        });
    }
}
