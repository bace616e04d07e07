//! One trace across processes: a request's span in the parent and its
//! handling's span in the worker, joined by the trace context that travels
//! with it (kind 24) while a subscriber wants the spans, and by nothing at
//! all (a plain request) while none does. The parent records its spans
//! with a test subscriber on the test's thread; each worker records its
//! own in a file (`common/spans.rs`); the test joins the two.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use actix::prelude::*;
use actix_webworker::{
    Ask, Entry, Event, Parent, Port, Received, Requests, RestartPolicy, WireError, Worker,
    WorkerActor, WorkerAddrExt, WorkerPool,
};
use serde::{Deserialize, Serialize};
use libtest_mimic::Trial;

use crate::common::*;
use crate::requests::Config;

pub fn roles() -> Vec<Trial> {
    crate::inner![trace::propagated_role]
}

pub fn trials() -> Vec<Trial> {
    crate::trials![
        trace::a_workers_handling_span_joins_the_callers_span,
        trace::a_restart_records_the_new_pid,
        trace::through_a_pool_the_span_names_the_member_and_the_member_joins_it,
        trace::a_worker_asking_its_parent_stays_in_the_trace,
        trace::what_a_handlers_future_asks_later_stays_in_the_trace,
        trace::a_declared_request_through_a_port_is_joined_too,
        trace::a_python_worker_answers_a_traced_request,
        trace::a_propagators_ids_travel_and_its_worker_attaches_to_them,
        trace::with_no_subscriber_a_request_travels_as_before,
        trace::a_malformed_trace_context_is_a_typed_error_and_the_connection_goes_on,
        trace::a_traced_request_cut_short_is_a_typed_error,
        trace::through_a_pool_member_and_a_channel_to_another_worker_one_trace,
        trace::a_streamed_answer_is_traced_from_the_ask_to_its_producer,
        trace::an_ask_span_closes_however_its_request_ends,
        trace::an_ask_queued_before_its_worker_has_started_names_no_pid,
    ]
}

/// The one span named `name` whose `request` field ends with `request`.
fn one<'a>(spans: &'a [SpanRec], name: &str, request: &str) -> &'a SpanRec {
    let found: Vec<&SpanRec> =
        spans.iter().filter(|s| s.name == name && s.field("request").ends_with(request)).collect();
    assert_eq!(found.len(), 1, "one {name} of {request} in {spans:#?}");
    found[0]
}

/// The span of id `id`.
fn by_id(spans: &[SpanRec], id: Option<u64>) -> &SpanRec {
    spans.iter().find(|s| Some(s.id) == id).unwrap_or_else(|| panic!("span {id:?} in {spans:#?}"))
}

/// Asserts that `answer` (a worker's) joins `ask` (the parent's): the same
/// trace, the asking span its parent across the boundary.
fn joined(ask: &SpanRec, answer: &SpanRec) {
    assert_eq!(ask.field("trace_id").len(), 32, "{ask:?}");
    assert_eq!(answer.field("trace_id"), ask.field("trace_id"), "{ask:?}\n{answer:?}");
    assert_eq!(answer.field("parent_span_id"), ask.field("span_id"), "{ask:?}\n{answer:?}");
    assert_ne!(answer.field("span_id"), ask.field("span_id"));
}

/// The spans of the parent and of each worker (by pid) of a test run
/// by `test`, given the directory its workers write their spans to, with
/// a recording subscriber on this thread.
fn traced<F: std::future::Future<Output = ()>>(
    name: &str,
    test: impl FnOnce(std::path::PathBuf) -> F,
) -> (Vec<SpanRec>, std::collections::BTreeMap<u32, Vec<SpanRec>>) {
    let dir = trace_dir(name);
    let (recorder, lines) = Recorder::in_memory();
    let subscriber = tracing::subscriber::set_default(recorder);
    run(test(dir.clone()));
    drop(subscriber);
    let (parent, workers) = (spans(&lines.lock().unwrap()), worker_spans(&dir));
    // Read: gone, so that runs do not pile directories up in /tmp (one
    // that failed keeps its own, to be read).
    let _ = std::fs::remove_dir_all(&dir);
    (parent, workers)
}

/// docs/tracing.md: the `worker` span records the pid at each start, "a
/// restart records the new pid", and an `ask` made after the restart
/// names the new process, whose own spans join it.
pub fn a_restart_records_the_new_pid() {
    let (parent, workers) = traced("restart", |dir| async move {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .name("again")
            .env(TRACE_DIR, &dir)
            .restart(fast(actix_webworker::Restart::OnFailure))
            .by_exec()
            .start()
            .unwrap();
        let first = worker.ask(WhichPid).await.unwrap();
        assert!(kill(first, Signal::SIGKILL));
        assert_eq!(events.exit().await.signal, Some(9));
        events.online().await;
        let second = tracing::info_span!("caller").in_scope(|| worker.ask(Sum(vec![4, 5])));
        assert_eq!(second.await.unwrap(), 9);
        let pid = worker.ask(WhichPid).await.unwrap();
        assert_ne!(pid, first);
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    let ask = one(&parent, "ask", "::Sum");
    let pid = ask.field("pid");
    assert_eq!(worker.field("pid"), pid, "the worker span's pid is the new process's");
    assert!(workers.keys().count() >= 2, "spans of both processes: {:?}", workers.keys());
    let theirs = &workers[&pid.parse::<u32>().unwrap()];
    joined(ask, one(theirs, "answer", "::Sum"));
}

pub fn a_workers_handling_span_joins_the_callers_span() {
    let (parent, workers) = traced("joins", |dir| async move {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).name("summer").env(TRACE_DIR, &dir).by_exec().start().unwrap();
        let caller = tracing::info_span!("caller");
        let asked = caller.in_scope(|| worker.ask(Sum(vec![1, 2, 3])));
        assert_eq!(asked.await.unwrap(), 6);
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let ask = one(&parent, "ask", "::Sum");
    assert_eq!(by_id(&parent, ask.parent).name, "caller");
    assert_eq!(ask.field("worker"), "summer");
    // The worker's span in the parent: name, entry, pid; the ask follows it.
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    assert_eq!((worker.field("name"), worker.field("entry")), ("summer", "test"));
    assert_eq!(ask.follows, [worker.id]);
    // In the worker: its runtime's span, and under it the handling's,
    // joined to the parent's ask.
    let pid: u32 = worker.field("pid").parse().unwrap();
    let theirs = &workers[&pid];
    let answer = one(theirs, "answer", "::Sum");
    joined(ask, answer);
    let runtime = by_id(theirs, answer.parent);
    assert_eq!((runtime.name.as_str(), runtime.field("pid")), ("runtime", worker.field("pid")));
    assert_eq!(runtime.field("entry"), "test");
    // docs/tracing.md: "All have the target `actix_webworker` and the
    // level INFO."
    for span in [ask, worker, answer, runtime] {
        let seen = (span.target.as_str(), span.level.as_str());
        assert_eq!(seen, ("actix_webworker", "INFO"), "{}: {span:?}", span.name);
    }
}

pub fn through_a_pool_the_span_names_the_member_and_the_member_joins_it() {
    let (parent, workers) = traced("pool", |dir| async move {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .size(2)
            .env(TRACE_DIR, &dir).by_exec()
            .restart(RestartPolicy::never())
            .events(recipient)
            .start()
            .unwrap();
        pool_online(&mut rx, 2).await;
        let caller = tracing::info_span!("caller");
        // Slow answers, so that both members take some.
        let asks: Vec<_> = (0..4)
            .map(|n| caller.in_scope(|| pool.send(Ask::new(SlowEcho { n, delay_ms: 200 }))))
            .collect();
        for (n, asked) in asks.into_iter().enumerate() {
            assert_eq!(asked.await.unwrap().unwrap(), n as u64);
        }
        pool.terminate();
    });
    let asks: Vec<&SpanRec> = parent.iter().filter(|s| s.name == "ask").collect();
    assert_eq!(asks.len(), 4, "{parent:#?}");
    let mut members = std::collections::BTreeMap::new();
    for ask in asks {
        assert_eq!(by_id(&parent, ask.parent).name, "caller");
        assert!(!ask.field("member").is_empty(), "which member: {ask:?}");
        // Answered by one process: the one of the member it names.
        let answered: Vec<(u32, &SpanRec)> = workers
            .iter()
            .flat_map(|(&pid, spans)| spans.iter().map(move |s| (pid, s)))
            .filter(|(_, s)| s.name == "answer" && s.field("parent_span_id") == ask.field("span_id"))
            .collect();
        let [(pid, answer)] = answered[..] else {
            panic!("one answer to {ask:?} in {workers:#?}");
        };
        joined(ask, answer);
        assert_eq!(ask.field("pid"), pid.to_string(), "{ask:?}");
        let member = members.entry(ask.field("member").to_owned()).or_insert(pid);
        assert_eq!(*member, pid, "one member, one process");
    }
    assert_eq!(members.len(), 2, "both members took some: {members:?}");
}


pub fn a_worker_asking_its_parent_stays_in_the_trace() {
    let (parent, workers) = traced("parent", |dir| async move {
        let (rec, mut events) = events::<Test>();
        let config = Config.start();
        let builder = builder(rec).env(TRACE_DIR, &dir).by_exec();
        let worker = builder.serve(config.recipient::<GetConfig>()).start().unwrap();
        let caller = tracing::info_span!("caller");
        let asked = caller.in_scope(|| worker.ask(AskParent("colour".into())));
        assert_eq!(asked.await.unwrap().unwrap(), "value of colour");
        worker.terminate();
        assert!(events.exit().await.success());
    });
    // parent: ask(AskParent) -> worker: answer(AskParent) > ask(GetConfig)
    // -> parent: answer(GetConfig), all one trace.
    let first = one(&parent, "ask", "::AskParent");
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    let pid: u32 = worker.field("pid").parse().unwrap();
    let theirs = &workers[&pid];
    let handling = one(theirs, "answer", "::AskParent");
    joined(first, handling);
    let second = one(theirs, "ask", "::GetConfig");
    assert_eq!(second.parent, Some(handling.id), "asked inside the handling's span");
    // docs/tracing.md: through a worker's `Parent`, no worker, pid or member.
    for field in ["worker", "pid", "member"] {
        assert_eq!(second.field(field), "", "{field} on a Parent's ask: {second:?}");
    }
    let served = one(&parent, "answer", "::GetConfig");
    joined(second, served);
    assert_eq!(served.field("trace_id"), first.field("trace_id"), "one trace");
    // The parent's handling span is under its worker's span.
    assert_eq!(by_id(&parent, served.parent).name, "worker");
}

pub fn a_declared_request_through_a_port_is_joined_too() {
    use crate::declared::{Calc, Mul};
    let (parent, workers) = traced("port", |dir| async move {
        let (rec, mut events) = events::<Calc>();
        let builder = Worker::<Calc>::builder().entry("calculator").env(TRACE_DIR, &dir).by_exec();
        let worker = builder.restart(RestartPolicy::never()).events(rec).start().unwrap();
        let mut port = Port::open(&worker).await.unwrap();
        let caller = tracing::info_span!("caller");
        // `Mul` is declared as "calc.mul": its tag is its wire name's.
        let asked = caller.in_scope(|| port.ask(Mul(6, 7)));
        assert_eq!(asked.await.unwrap(), 42);
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let ask = one(&parent, "ask", "::Mul");
    assert_eq!(by_id(&parent, ask.parent).name, "caller");
    // docs/tracing.md: through a `Port`, no worker, pid or member.
    for field in ["worker", "pid", "member"] {
        assert_eq!(ask.field(field), "", "{field} on a port's ask: {ask:?}");
    }
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    let pid: u32 = worker.field("pid").parse().unwrap();
    joined(ask, one(&workers[&pid], "answer", "::Mul"));
}

/// Asked of the worker `trace-later`: it asks its parent `GetConfig(key)`
/// from its handler's `ResponseFuture`, on a later poll.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct AskLater(pub String);

/// The same from a `ResponseActFuture`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct AskLaterInActor(pub String);

/// The worker `trace-later`.
pub struct Later {
    parent: Parent<Test>,
}

impl Actor for Later {
    type Context = Context<Self>;
}

impl Handler<Received<Cmd>> for Later {
    type Result = ();

    fn handle(&mut self, _: Received<Cmd>, _: &mut Context<Self>) {}
}

/// `GetConfig(key)` asked of the parent after a turn of the event loop.
async fn ask_later(parent: Parent<Test>, key: String) -> String {
    tokio::task::yield_now().await;
    parent.ask(GetConfig(key)).await.unwrap_or_default()
}

impl Handler<AskLater> for Later {
    type Result = ResponseFuture<String>;

    fn handle(&mut self, msg: AskLater, _: &mut Context<Self>) -> Self::Result {
        Box::pin(ask_later(self.parent.clone(), msg.0))
    }
}

impl Handler<AskLaterInActor> for Later {
    type Result = ResponseActFuture<Self, String>;

    fn handle(&mut self, msg: AskLaterInActor, _: &mut Context<Self>) -> Self::Result {
        Box::pin(actix::fut::wrap_future(ask_later(self.parent.clone(), msg.0)))
    }
}

impl WorkerActor for Later {
    type Protocol = Test;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<AskLater>().answer::<AskLaterInActor>();
    }
}

/// The worker entries of this module.
pub fn entries() -> Vec<Entry> {
    vec![Entry::new("trace-later", |parent| Later { parent })]
}

/// A handler's future (either kind) is polled inside its request's span:
/// what it asks the parent on a later poll stays in the trace.
pub fn what_a_handlers_future_asks_later_stays_in_the_trace() {
    let (parent, workers) = traced("later", |dir| async move {
        let (rec, mut events) = events::<Test>();
        let config = Config.start();
        let builder = builder(rec).entry("trace-later").env(TRACE_DIR, &dir).by_exec();
        let worker = builder.serve(config.recipient::<GetConfig>()).start().unwrap();
        let caller = tracing::info_span!("caller");
        let (future, in_actor) = caller.in_scope(|| {
            (worker.ask(AskLater("a".into())), worker.ask(AskLaterInActor("b".into())))
        });
        assert_eq!(future.await.unwrap(), "value of a");
        assert_eq!(in_actor.await.unwrap(), "value of b");
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    let theirs = &workers[&worker.field("pid").parse().unwrap()];
    for request in ["::AskLater", "::AskLaterInActor"] {
        let first = one(&parent, "ask", request);
        let handling = one(theirs, "answer", request);
        joined(first, handling);
        let asked: Vec<&SpanRec> = theirs.iter().filter(|s| s.parent == Some(handling.id)).collect();
        let [second] = asked[..] else { panic!("{request}: one ask inside {handling:?}: {theirs:#?}") };
        assert_eq!(second.name, "ask");
        assert_eq!(second.field("trace_id"), first.field("trace_id"), "{request}: one trace");
        let served = parent.iter().find(|s| s.field("parent_span_id") == second.field("span_id"));
        joined(second, served.expect("the parent's answer to it"));
    }
}

/// With a [`Propagator`](actix_webworker::Propagator) in both processes
/// (a stand-in for OpenTelemetry's): its ids are what travels, and the
/// worker's attaches the answering span to them. In a process of its own:
/// a propagator is installed for good.
pub fn a_propagators_ids_travel_and_its_worker_attaches_to_them() {
    isolated("trace::propagated_role");
}

pub fn propagated_role() {
    assert!(actix_webworker::set_propagator(Fixed), "the first propagator");
    let mut attached = String::new();
    let out = &mut attached;
    let (parent, workers) = traced("propagated", |dir| async move {
        let (rec, mut events) = events::<Test>();
        let builder = builder(rec).env(TRACE_DIR, &dir).by_exec().env(PROPAGATOR_ENV, "1");
        let worker = builder.start().unwrap();
        assert_eq!(worker.ask(Sum(vec![2, 3])).await.unwrap(), 5);
        worker.terminate();
        assert!(events.exit().await.success());
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "attached") {
                *out += &std::fs::read_to_string(entry.path()).unwrap();
            }
        }
    });
    let fixed: String = FIXED_TRACE.iter().map(|b| format!("{b:02x}")).collect();
    let ask = one(&parent, "ask", "::Sum");
    assert_eq!(ask.field("trace_id"), fixed, "the propagator's ids, recorded");
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    let answer = one(&workers[&worker.field("pid").parse().unwrap()], "answer", "::Sum");
    joined(ask, answer);
    // The worker's propagator was handed exactly the context that came.
    assert_eq!(attached, format!("{fixed} {}\n", ask.field("span_id")));
}

/// The Python worker of `python/` takes kind 24 from a Rust parent that
/// traces (its own side records nothing: it has no `tracing`).
pub fn a_python_worker_answers_a_traced_request() {
    use crate::conformance::{have_python, python_worker, Conf, Mul};
    if !have_python() {
        return;
    }
    let (parent, _) = traced("python", |_| async move {
        let (rec, mut events) = events::<Conf>();
        let worker = python_worker::<Conf>().events(rec).start().unwrap();
        assert_eq!(worker.ask(Mul(6, 7)).await.unwrap(), 42);
        worker.terminate();
        assert!(events.exit().await.success());
    });
    // It went with a context: the ask span has the ids that travelled.
    let ask = one(&parent, "ask", "::Mul");
    assert_eq!((ask.field("trace_id").len(), ask.field("span_id").len()), (32, 16), "{ask:?}");
}

/// The kinds and lengths of the requests the raw worker `trace-raw-kinds`
/// saw, as it posts them back: `Echo(kind)`, then `Echo(length)`.
async fn kinds_seen(subscriber: bool) -> (u64, u64) {
    let (recorder, _lines) = Recorder::in_memory();
    let _subscriber = subscriber.then(|| tracing::subscriber::set_default(recorder));
    let (rec, mut events) = events::<Test>();
    let worker = builder(rec).by_exec().entry("trace-raw-kinds").start().unwrap();
    // Never answered: its kind and length are what counts.
    worker.do_send(Ask::new(Sum(vec![1])));
    let kind = events.message().await.data;
    let len = events.message().await.data;
    worker.terminate();
    events.exit().await;
    match (kind, len) {
        (Reply::Echo(kind), Reply::Echo(len)) => (kind, len),
        other => panic!("{other:?}"),
    }
}

pub fn with_no_subscriber_a_request_travels_as_before() {
    run(async {
        // A plain request: kind 3, its 18-byte header and the 2 bytes of
        // `Sum(vec![1])`.
        assert_eq!(kinds_seen(false).await, (3, 20));
        // With one: kind 24, and the 25 bytes of the context.
        assert_eq!(kinds_seen(true).await, (24, 45));
    });
}

pub fn a_malformed_trace_context_is_a_typed_error_and_the_connection_goes_on() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let config = Config.start();
        let builder = builder(rec).by_exec().entry("trace-raw-bad-context");
        let worker = builder.serve(config.recipient::<GetConfig>()).start().unwrap();
        let mut got = Vec::new();
        loop {
            match events.next().await {
                Event::WireError(WireError::BadTraceContext(why)) => got.push(why.to_owned()),
                // The raw worker got a failure (kind 5) for its request,
                // then its next post came through.
                Event::Message(m) if m.data == Reply::Echo(5) => got.push("failed".into()),
                Event::Message(m) if m.data == Reply::Echo(7) => break,
                Event::Exit(s) => panic!("exited ({s}): {got:?}"),
                _ => {}
            }
        }
        assert_eq!(got, ["a trace id of zeros", "failed"]);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_traced_request_cut_short_is_a_typed_error() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let _worker = builder(rec).by_exec().entry("trace-raw-short").start().unwrap();
        loop {
            match events.next().await {
                Event::WireError(WireError::Truncated { needed: 43, got: 12 }) => break,
                Event::WireError(e) => panic!("unexpected wire error {e:?}"),
                Event::Exit(s) => panic!("exited ({s}) with no wire error"),
                _ => {}
            }
        }
        events.exit().await;
    });
}

/// A post of `Reply::Echo(n)`, n < 251 (bincode: variant 0, one byte).
fn echo(n: u8) -> Vec<u8> {
    ws_frame(2, &[2, 0, 0, n])
}

/// Runs a raw worker of this module when this process was started as one.
pub fn run_if_raw_worker() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else { return };
    let Some(scenario) = entry.strip_prefix("trace-raw-") else { return };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    crate::hostile::handshake(&mut sock, None, None);
    match scenario {
        "kinds" => {}
        "bad-context" => {
            // A traced `GetConfig("k")`, its trace id all zeros.
            let mut request = vec![24, 0];
            request.extend_from_slice(&1u64.to_le_bytes());
            request.extend_from_slice(&tag_of(actix_webworker::request_name::<GetConfig>()));
            request.extend_from_slice(&[0; 16]);
            request.extend_from_slice(&[9; 8]);
            request.extend_from_slice(&[1, 1, b'k']);
            sock.write_all(&ws_frame(2, &request)).unwrap();
        }
        // Kind 24 with 10 of its 41 bytes of fields.
        "short" => sock.write_all(&ws_frame(2, &[24, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).unwrap(),
        other => panic!("unknown raw scenario {other}"),
    }
    // Tells what it reads: each request's kind and length, each failure.
    while let Some(payload) = read_frame(&mut sock) {
        for msg in messages(&payload) {
            let told = match msg.first() {
                Some(&kind @ (3 | 24)) => vec![echo(kind), echo(msg.len() as u8)],
                Some(5) if scenario == "bad-context" => vec![echo(5), echo(7)],
                // Terminate: nothing to close.
                Some(7) => std::process::exit(0),
                _ => Vec::new(),
            };
            for frame in told {
                sock.write_all(&frame).unwrap();
            }
        }
    }
    std::process::exit(0)
}

/// caller → pool `ask(Relay)` → member `answer(Relay)` → its `ask(Double)`
/// over a channel → the other worker's `answer(Double)`: one trace, each
/// span joined to the one before across each boundary.
pub fn through_a_pool_member_and_a_channel_to_another_worker_one_trace() {
    use crate::channels::{Job, Piped, Plug, Relay};
    let dir = trace_dir("channel");
    let (recorder, lines) = Recorder::in_memory();
    let _subscriber = tracing::subscriber::set_default(recorder);
    run(async {
        let (front, back) = actix_webworker::MessageChannel::new().unwrap();
        // The far end: a worker that answers `Double` asked on its end.
        let (rec, mut events) = events::<Piped>();
        let echo = actix_webworker::Worker::<Piped>::builder()
            .entry("stage")
            .name("echo")
            .env(TRACE_DIR, &dir).by_exec()
            .restart(RestartPolicy::never())
            .events(rec)
            .start()
            .unwrap();
        echo.post(Job::Echo { end: back });
        // A pool of one: its member holds the near end (asks wait in the
        // pool until it is up).
        let pool = WorkerPool::<Piped>::builder()
            .entry("stage")
            .size(1)
            .env(TRACE_DIR, &dir).by_exec()
            .restart(RestartPolicy::never())
            .start()
            .unwrap();
        pool.send(Ask::new(Plug(front))).await.unwrap().unwrap();
        let caller = tracing::info_span!("caller");
        let asked = caller.in_scope(|| pool.send(Ask::new(Relay(21))));
        assert_eq!(asked.await.unwrap().unwrap(), 42);
        pool.terminate();
        echo.terminate();
        assert!(events.exit().await.success());
    });
    let parent = spans(&lines.lock().unwrap());
    let ask = one(&parent, "ask", "::Relay");
    assert_eq!(by_id(&parent, ask.parent).name, "caller");
    assert!(!ask.field("member").is_empty(), "which member: {ask:?}");
    let workers = worker_spans(&dir);
    let all = || workers.iter().flat_map(|(&pid, spans)| spans.iter().map(move |s| (pid, s)));
    // The member: its handling of Relay joins the pool's ask, and asks
    // Double over the channel inside it.
    let (member, relayed) = all()
        .find(|(_, s)| s.name == "answer" && s.field("request").ends_with("::Relay"))
        .expect("the member's handling of Relay");
    joined(ask, relayed);
    let theirs = &workers[&member];
    let double = one(theirs, "ask", "::Double");
    assert_eq!(double.parent, Some(relayed.id), "asked inside the handling's span");
    // The far worker: its handling of Double, under its channel's span,
    // joins the member's ask, in the same trace as the caller's.
    let (far, doubled) = all()
        .find(|(_, s)| s.name == "answer" && s.field("request").ends_with("::Double"))
        .expect("the far worker's handling of Double");
    assert_ne!(far, member, "another process");
    joined(double, doubled);
    assert_eq!(doubled.field("trace_id"), ask.field("trace_id"), "one trace");
    let line = by_id(&workers[&far], doubled.parent);
    assert_eq!(line.name, "channel", "{line:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A streamed request is traced as one answered once: the parent's ask
/// span lasts until its stream ends, and the worker's span of the
/// producer joins it (kind 25, the context after the window).
pub fn a_streamed_answer_is_traced_from_the_ask_to_its_producer() {
    use crate::streams::{streamer, Count, Streams};
    use futures_util::StreamExt;
    let (parent, workers) = traced("stream", |dir| async move {
        let (rec, mut events) = events::<Streams>();
        let worker = streamer().events(rec).env(TRACE_DIR, &dir).by_exec().start().unwrap();
        let caller = tracing::info_span!("caller");
        let asked = caller.in_scope(|| actix_webworker::AskStream::new(Count { n: 5, pad: 0 }));
        let mut rows = worker.send(asked).await.unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().await {
            assert_eq!(row.unwrap().n, n);
            n += 1;
        }
        assert!(n == 5 && rows.is_complete());
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let ask = one(&parent, "ask", "::Count");
    assert_eq!(by_id(&parent, ask.parent).name, "caller");
    let worker = parent.iter().find(|s| s.name == "worker").expect("the worker's span");
    assert_eq!(ask.follows, [worker.id]);
    let pid: u32 = worker.field("pid").parse().unwrap();
    let answer = one(&workers[&pid], "answer", "::Count");
    joined(ask, answer);
}

/// docs/tracing.md: an `ask` span "closes when the request is answered,
/// fails, times out or is cancelled", through a worker's address, a port
/// and a pool alike, and a streamed ask's "lasts until the stream ends
/// (complete, failed, or dropped by its reader)". Looked at while the
/// System runs: its end would close whatever it held.
pub fn an_ask_span_closes_however_its_request_ends() {
    use crate::streams::{streamer, Count, Streams};
    use futures_util::StreamExt;
    use nix::sys::signal::Signal;
    use std::time::Duration;
    let (recorder, lines) = Recorder::in_memory();
    let _subscriber = tracing::subscriber::set_default(recorder);
    // Every `ask` span made so far is closed (a cancel is noticed within
    // 100 ms: waited for).
    let all_closed = |how: &'static str| {
        let lines = lines.clone();
        async move {
            let open = || -> Vec<SpanRec> {
                let made = spans(&lines.lock().unwrap());
                made.into_iter().filter(|s| s.name == "ask" && !s.closed).collect()
            };
            settles(|| open().is_empty()).await;
            assert!(open().is_empty(), "{how}: ask spans left open: {:?}", open());
            let made = spans(&lines.lock().unwrap()).into_iter().filter(|s| s.name == "ask").count();
            assert!(made > 0, "{how}: no ask span was made");
        }
    };
    let short = Duration::from_millis(50);
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(RestartPolicy::never()).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        all_closed("answered").await;
        let res = worker.send(Ask::new(Hold(1)).timeout(short)).await.unwrap();
        assert!(matches!(res, Err(actix_webworker::WorkerError::Timeout(_))), "{res:?}");
        all_closed("timed out").await;
        let held = worker.ask(Hold(2));
        while events.message().await.data != Reply::Holding(2) {}
        drop(held);
        all_closed("dropped by its caller").await;
        let mut port = Port::open(&worker).await.unwrap();
        let res = port.ask_timeout(Hold(3), short).await;
        assert!(matches!(res, Err(actix_webworker::WorkerError::Timeout(_))), "{res:?}");
        all_closed("timed out, through a port").await;
        let held = port.ask(Hold(4));
        while events.message().await.data != Reply::Holding(4) {}
        drop(held);
        all_closed("dropped by its caller, through a port").await;
        let pid = worker.ask(WhichPid).await.unwrap();
        let (held, through_port) = (worker.ask(Never), port.ask(Never));
        assert_eq!(worker.ask(Sum(vec![2])).await.unwrap(), 2);
        kill(pid, Signal::SIGKILL);
        for res in [held.await.map(|_| ()), through_port.await.map(|_| ())] {
            assert!(matches!(res, Err(actix_webworker::WorkerError::Exited(_))), "{res:?}");
        }
        all_closed("failed with the exit").await;

        // A pool of one member that takes one request at a time.
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .size(1)
            .max_in_flight_per_worker(1)
            .start()
            .unwrap();
        assert_eq!(pool.ask(Sum(vec![3])).await.unwrap(), 3);
        let busy = pool.ask(Never);
        let res = pool.send(Ask::new(Sum(vec![4])).timeout(short)).await.unwrap();
        assert!(matches!(res, Err(actix_webworker::WorkerError::Timeout(_))), "{res:?}");
        drop(pool.ask(Sum(vec![5])));
        drop(busy);
        assert_eq!(pool.ask(Sum(vec![6])).await.unwrap(), 6);
        all_closed("through a pool: timed out, dropped waiting, dropped in flight").await;
        pool.terminate();
        pool.send(actix_webworker::Join).await.unwrap();

        // Streams: read to the end, and dropped by the reader.
        let (rec, mut stream_events) = crate::common::events::<Streams>();
        let streams = streamer().events(rec).start().unwrap();
        let mut rows = streams.send(actix_webworker::AskStream::new(Count { n: 3, pad: 0 })).await.unwrap();
        while rows.next().await.is_some() {}
        assert!(rows.is_complete());
        all_closed("a stream read to its end").await;
        let many = actix_webworker::AskStream::new(Count { n: 1_000_000, pad: 0 });
        let mut rows = streams.send(many).await.unwrap();
        assert_eq!(rows.next().await.unwrap().unwrap().n, 0);
        drop(rows);
        all_closed("a stream dropped by its reader").await;
        let failing = actix_webworker::AskStream::new(crate::streams::FailAt(2));
        let mut rows = streams.send(failing).await.unwrap();
        let mut last = None;
        while let Some(row) = rows.next().await {
            last = Some(row.map(|r| r.n));
        }
        assert!(matches!(last, Some(Err(_))), "{last:?}");
        all_closed("a stream that failed").await;
        streams.terminate();
        assert!(stream_events.exit().await.success());
    });
}

/// docs/tracing.md: the `ask` span's `pid` is "the pid once the process is
/// up: an ask queued before its worker has started has none". Asked right
/// after `start()` (the spawner has not made the process yet), and during
/// a restart's backoff (2 s) after the process was SIGKILLed: neither ask
/// names a pid, above all not the dead process's; each is answered by the
/// process that then starts.
pub fn an_ask_queued_before_its_worker_has_started_names_no_pid() {
    use std::time::Duration;
    let (parent, _) = traced("queued", |_| async move {
        let (rec, mut events) = events::<Test>();
        let policy = actix_webworker::RestartPolicy::default()
            .restart(actix_webworker::Restart::OnFailure)
            .backoff(Duration::from_secs(2), Duration::from_secs(2));
        let worker = builder(rec).restart(policy).start().unwrap();
        let early = tracing::info_span!("caller").in_scope(|| worker.ask(Sum(vec![1])));
        assert_eq!(early.await.unwrap(), 1);
        let first = worker.ask(WhichPid).await.unwrap();
        assert!(kill(first, Signal::SIGKILL));
        assert_eq!(events.exit().await.signal, Some(9));
        // In the backoff: the ask waits for the next process.
        let waiting = tracing::info_span!("caller").in_scope(|| worker.ask(Sum(vec![2, 3])));
        let t0 = std::time::Instant::now();
        assert_eq!(waiting.await.unwrap(), 5);
        assert!(t0.elapsed() >= Duration::from_millis(500), "not asked in the backoff");
        let second = worker.ask(WhichPid).await.unwrap();
        assert_ne!(second, first);
        println!("QUEUED_PIDS first {first} second {second}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
    let asks: Vec<&SpanRec> =
        parent.iter().filter(|s| s.name == "ask" && s.field("request").ends_with("::Sum")).collect();
    assert_eq!(asks.len(), 2, "{asks:?}");
    for (ask, when) in asks.iter().zip(["before the first start", "in a restart's backoff"]) {
        assert_eq!(ask.field("pid"), "", "an ask queued {when} names a pid: {ask:?}");
    }
}
