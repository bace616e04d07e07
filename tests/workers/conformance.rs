//! One set of scenarios, run against a worker written in Rust and against
//! the Python worker of `python/` (`python/examples/conformance.py`): what
//! a worker in another language must do to stand in for a Rust one. The
//! Rust worker runs it over both codecs; the Python one over JSON; both
//! over the inherited socket and over TCP (`Transport::plain_tcp`).

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    request_name, wire_name, AskStream, Codec, Declare, ErrorReport, Event, Parent, Protocol,
    Received, Requests, RestartPolicy, Streamed, Worker, WorkerActor, WorkerAddrExt, WorkerBuilder,
    WorkerError,
};
use futures_util::future::join_all;
use libtest_mimic::Trial;
use serde::{Deserialize, Serialize};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::trials![
        conformance::a_rust_worker_over_json,
        conformance::a_rust_worker_over_bincode,
        conformance::a_python_worker_over_json,
        conformance::a_python_worker_that_the_parent_refuses_says_so,
    ];
    tests.extend(crate::with_feature!(
        "tcp",
        trials![
            conformance::a_rust_worker_over_tcp,
            conformance::a_python_worker_over_tcp,
            conformance::a_python_worker_answers_heartbeats,
        ]
    ));
    tests.extend(crate::with_feature!("tls", trials![conformance::a_python_worker_over_tls]));
    tests
}

pub struct Conf;

impl Protocol for Conf {
    type ToWorker = Job;
    type FromWorker = Done;

    // Wire names of their own: the Python worker answers by these.
    fn requests(declare: &mut Declare) {
        declare.request::<Mul>().named("conformance.mul");
        declare.request::<Boom>().named("conformance.boom");
        declare.stream::<Rows>().named("conformance.rows");
    }
}

/// `Conf` as a parent knows it after renaming `Mul` to `Times` in Rust:
/// the same wire name (see `declared.rs`).
pub struct Renamed;

impl Protocol for Renamed {
    type ToWorker = Job;
    type FromWorker = Done;

    fn requests(declare: &mut Declare) {
        declare.request::<Times>().named("conformance.mul");
        declare.request::<Boom>().named("conformance.boom");
        declare.stream::<Rows>().named("conformance.rows");
    }
}

/// `Mul`, renamed.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "i64")]
pub struct Times(pub i64, pub i64);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Job {
    Echo(String),
    Add(i64, i64),
    /// Raise (panic) in the post handler with this message.
    Fail(String),
    /// Ask the parent `Greet(name)`, post the answer back as `Answered`.
    AskParent(String),
    /// Several values of several shapes, posted back as they came.
    Shapes {
        flag: bool,
        maybe: Option<u32>,
        list: Vec<String>,
        ratio: f64,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Done {
    Echoed(String),
    Sum(i64),
    Answered(String),
    Shapes {
        flag: bool,
        maybe: Option<u32>,
        list: Vec<String>,
        ratio: f64,
    },
    /// From `on_close`.
    Closing,
}

/// Parent → worker: the product.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "i64")]
pub struct Mul(pub i64, pub i64);

/// Parent → worker: its handler raises.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct Boom;

/// Parent → worker, answered by a stream: `0..n` (for ever without
/// `n`), failing with "row k is bad" at `fail_at`.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Streamed<i64>")]
pub struct Rows {
    pub n: Option<i64>,
    pub fail_at: Option<i64>,
}

/// Parent → worker: no worker answers it.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
pub struct Unserved;

/// Worker → parent: the parent's `Greeter` answers.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct Greet(pub String);

/// 112 finite floats spread over every exponent: one known to come back
/// changed without exact parsing, then bit patterns from a fixed
/// xorshift sequence.
fn floats() -> Vec<f64> {
    let mut out = vec![2.6104882325689648e-130];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while out.len() < 112 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            out.push(f);
        }
    }
    out
}

/// The line of `needle` in `source` (1-based).
fn line_of(source: &str, needle: &str) -> u32 {
    source.lines().position(|l| l.contains(needle)).expect("the line is there") as u32 + 1
}

/// The line of the `panic!` in [`ConfWorker`]'s post handler.
fn fail_line() -> u32 {
    line_of(include_str!("conformance.rs"), concat!("Job::Fail(why) => ", "panic!"))
}

/// The Rust worker of the scenarios; `python/examples/conformance.py` is
/// its twin.
pub struct ConfWorker {
    parent: Parent<Conf>,
}

impl Actor for ConfWorker {
    type Context = Context<Self>;
}

impl Handler<Received<Job>> for ConfWorker {
    type Result = ();

    fn handle(&mut self, msg: Received<Job>, ctx: &mut Context<Self>) {
        let parent = self.parent.clone();
        let reply = match msg.data {
            Job::Echo(s) => Done::Echoed(s),
            Job::Add(a, b) => Done::Sum(a + b),
            Job::Fail(why) => panic!("{why}"),
            Job::AskParent(name) => {
                let asked = self.parent.ask(Greet(name));
                ctx.spawn(
                    async move {
                        let answer = asked.await.unwrap_or_else(|e| format!("failed: {e}"));
                        let _ = parent.post(Done::Answered(answer));
                    }
                    .into_actor(self),
                );
                return;
            }
            Job::Shapes { flag, maybe, list, ratio } => Done::Shapes { flag, maybe, list, ratio },
        };
        let _ = parent.post(reply);
    }
}

impl Handler<Mul> for ConfWorker {
    type Result = i64;

    fn handle(&mut self, msg: Mul, _: &mut Context<Self>) -> i64 {
        msg.0 * msg.1
    }
}

impl Handler<Boom> for ConfWorker {
    type Result = u32;

    fn handle(&mut self, _: Boom, _: &mut Context<Self>) -> u32 {
        panic!("boom")
    }
}

impl Handler<Rows> for ConfWorker {
    type Result = Streamed<i64>;

    fn handle(&mut self, msg: Rows, _: &mut Context<Self>) -> Streamed<i64> {
        let Rows { n, fail_at } = msg;
        let rows = (0..).take_while(move |&i| n.is_none_or(|n| i < n)).map(move |i| match fail_at {
            Some(bad) if bad == i => Err(format!("row {i} is bad")),
            _ => Ok(i),
        });
        Streamed::fallible(futures_util::stream::iter(rows))
    }
}

impl WorkerActor for ConfWorker {
    type Protocol = Conf;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Mul>().answer::<Boom>().stream::<Rows>();
    }

    fn on_close(&mut self, _: &mut Context<Self>) {
        let _ = self.parent.post(Done::Closing);
    }
}

pub fn entry() -> actix_webworker::Entry {
    actix_webworker::Entry::new("conformance", |parent| ConfWorker { parent })
}

/// Answers the workers' `Greet`.
struct Greeter;

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Greet> for Greeter {
    type Result = String;

    fn handle(&mut self, msg: Greet, _: &mut Context<Self>) -> String {
        format!("hello {}", msg.0)
    }
}

/// Where the worker's panics and exceptions are said to be.
struct Origin {
    /// The end of the file's name.
    file: &'static str,
    /// The line of the failing post handler's `panic!` / `raise`, if known.
    fail_line: Option<u32>,
}

/// The scenarios, against the worker `builder` starts.
async fn scenarios(builder: WorkerBuilder<Conf>, origin: Origin) {
    let (rec, mut events) = events::<Conf>();
    let worker = builder
        .restart(RestartPolicy::never())
        .env("RUST_BACKTRACE", "0")
        .serve(Greeter.start().recipient::<Greet>())
        .events(rec)
        .start()
        .expect("worker starts");

    // Posts both ways, text beyond ASCII included.
    worker.post(Job::Echo("héllo wörld ✓".into()));
    assert_eq!(events.message().await.data, Done::Echoed("héllo wörld ✓".into()));
    worker.post(Job::Add(-2, 44));
    assert_eq!(events.message().await.data, Done::Sum(42));
    let shapes = |list: Vec<String>| Job::Shapes { flag: true, maybe: None, list, ratio: 0.25 };
    worker.post(shapes(vec!["a".into(), String::new()]));
    let back =
        Done::Shapes { flag: true, maybe: None, list: vec!["a".into(), "".into()], ratio: 0.25 };
    assert_eq!(events.message().await.data, back);
    worker.post(Job::Shapes { flag: false, maybe: Some(7), list: vec![], ratio: -1.5 });
    let back = Done::Shapes { flag: false, maybe: Some(7), list: vec![], ratio: -1.5 };
    assert_eq!(events.message().await.data, back);
    // Every float comes back bit for bit: JSON's shortest decimal form
    // must be parsed exactly (serde_json's `float_roundtrip`; before it,
    // 26 of 112 came back one ulp off, this first one among them).
    for ratio in floats() {
        worker.post(Job::Shapes { flag: true, maybe: None, list: vec![], ratio });
        match events.message().await.data {
            Done::Shapes { ratio: back, .. } => {
                assert_eq!(back.to_bits(), ratio.to_bits(), "{ratio:e} came back as {back:e}")
            }
            other => panic!("expected Shapes, got {other:?}"),
        }
    }

    // Requests, one and many at once (answers matched by id).
    assert_eq!(worker.ask(Mul(6, 7)).await.unwrap(), 42);
    let many = join_all((0..200).map(|i| worker.ask(Mul(i, 3)))).await;
    for (i, answer) in many.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), i as i64 * 3);
    }

    // The worker asks the parent.
    worker.post(Job::AskParent("py".into()));
    assert_eq!(events.message().await.data, Done::Answered("hello py".into()));

    // A request whose handler fails: that request only, with where; and
    // the parent hears of it as of any uncaught error.
    match worker.ask(Boom).await {
        Err(WorkerError::Panicked(report)) => check_report(&report, "boom", &origin, None),
        other => panic!("expected Panicked, got {other:?}"),
    }
    check_report(&events.error().await, "boom", &origin, None);
    let unserved = worker.ask(Unserved).await;
    assert!(matches!(unserved, Err(WorkerError::Unhandled(_))), "{unserved:?}");

    streamed_answers(&worker).await;

    // A post handler that fails: an error event, and the worker goes on.
    worker.post(Job::Fail("oops".into()));
    let report = events.error().await;
    check_report(&report, "oops", &origin, origin.fail_line);
    assert_eq!(worker.ask(Mul(2, 2)).await.unwrap(), 4);

    // Terminate: `on_close` runs (its post arrives), then a clean exit.
    worker.terminate();
    let mut closing = false;
    loop {
        match events.next().await {
            Event::Message(m) => {
                assert_eq!(m.data, Done::Closing);
                closing = true;
            }
            Event::Exit(status) => {
                assert!(status.success(), "{status:?}");
                break;
            }
            _ => {}
        }
    }
    assert!(closing, "on_close posted before the exit");
}

/// A streamed answer: in order through a small window (so credits go
/// back and forth), then the end; a producer's error as the last item; a
/// stream dropped mid-way, after which the worker answers again (its
/// producer stopped: the Python worker answers one thing at a time).
async fn streamed_answers(worker: &Addr<Worker<Conf>>) {
    let ask = |n, fail_at| AskStream::new(Rows { n, fail_at });
    let mut rows = worker.send(ask(Some(500), None).window(256)).await.unwrap();
    for i in 0..500 {
        assert_eq!(next(&mut rows).await.unwrap().unwrap(), i);
    }
    assert!(next(&mut rows).await.is_none() && rows.is_complete());
    let mut rows = worker.send(ask(Some(10), Some(3))).await.unwrap();
    for i in 0..3 {
        assert_eq!(next(&mut rows).await.unwrap().unwrap(), i);
    }
    match next(&mut rows).await {
        Some(Err(WorkerError::StreamFailed(text))) => assert_eq!(text, "row 3 is bad"),
        other => panic!("expected the producer's error, got {other:?}"),
    }
    let mut rows = worker.send(ask(None, None).window(64)).await.unwrap();
    for i in 0..5 {
        assert_eq!(next(&mut rows).await.unwrap().unwrap(), i);
    }
    drop(rows);
    let after = tokio::time::timeout(WAIT, worker.ask(Mul(3, 4))).await;
    assert_eq!(after.expect("an answer after the cancel").unwrap(), 12);
}

async fn next(rows: &mut actix_webworker::AnswerStream<i64>) -> Option<Result<i64, WorkerError>> {
    use futures_util::StreamExt;
    tokio::time::timeout(WAIT, rows.next()).await.expect("an item in time")
}

fn check_report(report: &ErrorReport, message: &str, origin: &Origin, line: Option<u32>) {
    assert!(report.message.contains(message), "{report:?}");
    let file = report.file.as_deref().unwrap_or_default();
    assert!(file.ends_with(origin.file), "{report:?} not from {}", origin.file);
    assert!(report.line.is_some(), "{report:?}");
    if let Some(line) = line {
        assert_eq!(report.line, Some(line), "{report:?}");
    }
}

fn rust_worker(codec: Codec) -> WorkerBuilder<Conf> {
    Worker::<Conf>::builder().entry("conformance").codec(codec)
}

pub fn a_rust_worker_over_json() {
    let origin = Origin { file: "conformance.rs", fail_line: Some(fail_line()) };
    run(scenarios(rust_worker(Codec::Json), origin));
}

pub fn a_rust_worker_over_bincode() {
    let origin = Origin { file: "conformance.rs", fail_line: Some(fail_line()) };
    run(scenarios(rust_worker(Codec::Bincode), origin));
}

/// The Python worker: `python3 python/examples/conformance.py`, told the
/// wire names of the request types (their tags are hashes of those): the
/// names `Conf` declares, and the Rust path of `Greet`, which it does not.
pub fn python_worker<P: Protocol>() -> WorkerBuilder<P> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    Worker::<P>::builder()
        .program("python3")
        .args([format!("{dir}/examples/conformance.py")])
        .env("PYTHONPATH", dir)
        .env("CONF_MUL", wire_name::<Conf, Mul>())
        .env("CONF_BOOM", wire_name::<Conf, Boom>())
        .env("CONF_GREET", request_name::<Greet>())
        .codec(Codec::Json)
}

/// The line of the `raise` in the Python worker's post handler.
fn python_fail_line() -> u32 {
    line_of(include_str!("../../python/examples/conformance.py"), "raise Failure(")
}

/// Whether `python3` runs here (CI installs it; elsewhere its tests say
/// they were skipped).
pub fn have_python() -> bool {
    let found = std::process::Command::new("python3").arg("--version").output().is_ok();
    if !found {
        skip("python3 is not installed, so the Python worker was not run");
    }
    found
}

pub fn a_python_worker_over_json() {
    if !have_python() {
        return;
    }
    let origin = Origin { file: "conformance.py", fail_line: Some(python_fail_line()) };
    run(scenarios(python_worker::<Conf>(), origin));
}

#[cfg(feature = "tcp")]
pub fn a_rust_worker_over_tcp() {
    let origin = Origin { file: "conformance.rs", fail_line: Some(fail_line()) };
    run(scenarios(rust_worker(Codec::Json).transport(loopback()), origin));
}

#[cfg(feature = "tcp")]
pub fn a_python_worker_over_tcp() {
    if !have_python() {
        return;
    }
    let origin = Origin { file: "conformance.py", fail_line: Some(python_fail_line()) };
    run(scenarios(python_worker::<Conf>().transport(loopback()), origin));
}

#[cfg(feature = "tls")]
pub fn a_python_worker_over_tls() {
    if !have_python() {
        return;
    }
    let origin = Origin { file: "conformance.py", fail_line: Some(python_fail_line()) };
    let tls = actix_webworker::Transport::tls("127.0.0.1:0".parse().unwrap());
    run(scenarios(python_worker::<Conf>().transport(tls), origin));
}

/// Pinged every 100 ms and taken for lost after a second of silence: a
/// Python worker left idle for two seconds is still there, because it
/// answers the pings.
#[cfg(feature = "tcp")]
pub fn a_python_worker_answers_heartbeats() {
    if !have_python() {
        return;
    }
    run(async {
        let (rec, mut events) = events::<Conf>();
        let worker = python_worker::<Conf>()
            .transport(loopback())
            .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
            .restart(RestartPolicy::never())
            .events(rec)
            .start()
            .unwrap();
        assert_eq!(worker.ask(Mul(2, 3)).await.unwrap(), 6);
        // Waiting for nothing to happen: the limit passes twice over.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(worker.ask(Mul(3, 3)).await.unwrap(), 9);
        let said = events.rest().await;
        assert!(!said.iter().any(|e| matches!(e, Event::WireError(_))), "{said:?}");
        worker.terminate();
        loop {
            if let Event::Exit(status) = events.next().await {
                assert!(status.success(), "{status:?}");
                break;
            }
        }
    });
}

/// A Python worker started by a parent of other message types, or by one
/// that writes bincode: the handshake fails and says why, and the worker
/// is not restarted.
pub fn a_python_worker_that_the_parent_refuses_says_so() {
    if !have_python() {
        return;
    }
    run(async {
        // Their stderr (why they refuse) goes to the parent's log, not onto
        // the test run's.
        let other_types = python_worker::<Conf>().env("CONF_FINGERPRINT", "1").capture_output();
        let bincode = python_worker::<Conf>().codec(Codec::Bincode).capture_output();
        for (builder, expected) in [(other_types, "fingerprint"), (bincode, "codec")] {
            let (rec, mut events) = events::<Conf>();
            let worker = builder.restart(RestartPolicy::default()).events(rec).start().unwrap();
            let mut wire = None;
            loop {
                match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                    Ok(Event::WireError(e)) => wire = Some(e),
                    Ok(Event::GaveUp(g)) => {
                        assert!(g.cause.is_some(), "{g:?}");
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => panic!("no GaveUp within 30 s (wire error: {wire:?})"),
                }
            }
            let wire = wire.expect("a wire error before giving up");
            use actix_webworker::WireError::{CodecMismatch, FingerprintMismatch};
            match expected {
                "fingerprint" => {
                    assert!(matches!(wire, FingerprintMismatch { theirs: 1, .. }), "{wire:?}")
                }
                _ => assert!(
                    matches!(wire, CodecMismatch { ours: Codec::Bincode, theirs: Codec::Json }),
                    "{wire:?}"
                ),
            }
            drop(worker);
        }
    });
}
