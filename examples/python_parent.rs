//! A Rust parent of a worker written in Python, with the package in
//! `python/` (`pip install ./python`): posts both ways, requests both
//! ways, descriptors both ways, errors, and the three ways a worker ends.
//!
//! Run it with `cargo run --example python_parent`: it starts
//! `python3 python/examples/demo.py` (the package taken from `python/` of
//! this crate) for each scenario, prints one `scenario: what it saw` line
//! per check, and exits 0 when every check held, 1 otherwise.
//!
//! ```text
//! python_parent [SCENARIO...] [-- PROGRAM ARGS...]
//! ```
//!
//! - `SCENARIO`: `posts`, `requests`, `ask`, `fds`, `errors`, `terminate`,
//!   `close`, `exit`, `refused` (default: all, in that order).
//! - `PROGRAM ARGS...`: the worker's command, run as it is, with the
//!   environment of this process (default: `python3` and `demo.py`, with
//!   `PYTHONPATH` set to `python/`). The Python package's own tests
//!   (`python/tests/test_parent.py`) run this binary with their interpreter
//!   and the package they test.
//!
//! The worker learns the names of the Rust request types (the tags on the
//! wire are hashes of them) from `DEMO_MUL`, `DEMO_BOOM` and `DEMO_GREET`.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    request_name, Codec, Event, Post, Protocol, Received, RestartPolicy, Worker, WorkerAddrExt,
    WorkerError, WorkerEvents,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

struct Demo;

impl Protocol for Demo {
    type ToWorker = Job;
    type FromWorker = Done;
}

/// Parent → worker. In JSON a variant is `{"Echo": "..."}`, `{"Add": [2,
/// 3]}`; a unit variant is its name, `"Close"`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Job {
    Echo(String),
    Add(i64, i64),
    Shapes {
        flag: bool,
        maybe: Option<u32>,
        list: Vec<String>,
        ratio: f64,
    },
    /// Ask the parent `Greet(name)`, post the answer back as `Answered`.
    AskParent(String),
    /// Ask the parent a request nobody serves, post the failure back.
    AskNobody,
    /// Write the text into the descriptor sent along, close it, post
    /// `Wrote(bytes)`.
    Write(String),
    /// Make a pipe, write the text into it, post `Piped` with its read end.
    Pipe(String),
    /// Raise in the post handler with this message.
    Fail(String),
    /// `parent.close()` from inside the worker.
    Close,
    /// Leave at once with this exit code (`os._exit`), no `on_close`.
    Exit(i32),
}

/// Worker → parent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Done {
    Echoed(String),
    Sum(i64),
    Shapes {
        flag: bool,
        maybe: Option<u32>,
        list: Vec<String>,
        ratio: f64,
    },
    Answered(String),
    Wrote(u64),
    /// With the read end of a pipe.
    Piped,
    /// From `on_close`.
    Closing,
}

/// Parent → worker: the product.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "i64")]
struct Mul(i64, i64);

/// Parent → worker: its Python handler raises.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
struct Boom;

/// Parent → worker: no handler in the worker.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u32")]
struct Unserved;

/// Worker → parent: answered by [`Greeter`].
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
struct Greet(String);

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

/// How long any one thing may take (a loaded machine starts Python
/// slowly; nothing here waits this long when it works).
const PATIENCE: Duration = Duration::from_secs(60);

const SCENARIOS: [&str; 9] =
    ["posts", "requests", "ask", "fds", "errors", "terminate", "close", "exit", "refused"];

type Check = Result<(), String>;

/// The worker's command.
struct Command {
    program: String,
    args: Vec<String>,
    /// `PYTHONPATH`, when the package is taken from this crate.
    pythonpath: Option<String>,
}

impl Command {
    fn from_args(args: &[String]) -> Self {
        match args.split_first() {
            Some((program, args)) => {
                Command { program: program.clone(), args: args.to_vec(), pythonpath: None }
            }
            None => {
                let python = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
                Command {
                    program: "python3".into(),
                    args: vec![format!("{python}/examples/demo.py")],
                    pythonpath: Some(python.into()),
                }
            }
        }
    }
}

/// One worker of a scenario, with its events.
struct Run {
    name: &'static str,
    worker: Addr<Worker<Demo>>,
    events: WorkerEvents<Demo>,
}

impl Run {
    fn start(name: &'static str, command: &Command, entry: &str) -> Result<Self, String> {
        let mut builder = Worker::<Demo>::builder()
            .program(&command.program)
            .args(&command.args)
            .entry(entry)
            .env("DEMO_MUL", request_name::<Mul>())
            .env("DEMO_BOOM", request_name::<Boom>())
            .env("DEMO_GREET", request_name::<Greet>())
            .codec(Codec::Json)
            .restart(RestartPolicy::never())
            .serve(Greeter.start().recipient::<Greet>());
        if let Some(path) = &command.pythonpath {
            builder = builder.env("PYTHONPATH", path);
        }
        let (worker, events) =
            builder.start_with_events().map_err(|e| format!("the worker did not start: {e}"))?;
        Ok(Run { name, worker, events })
    }

    fn say(&self, what: impl std::fmt::Display) {
        println!("{}: {what}", self.name);
    }

    /// The next event but `Online`.
    async fn next(&mut self) -> Result<Event<Demo>, String> {
        loop {
            match tokio::time::timeout(PATIENCE, self.events.next()).await {
                Err(_) => return Err(format!("nothing from the worker within {PATIENCE:?}")),
                Ok(None) => return Err("the worker's events ended".into()),
                Ok(Some(event)) => match event.kind {
                    Event::Online => {}
                    kind => return Ok(kind),
                },
            }
        }
    }

    async fn message(&mut self) -> Result<Received<Done>, String> {
        match self.next().await? {
            Event::Message(m) => Ok(m),
            other => Err(format!("expected a message, got {other:?}")),
        }
    }

    async fn error(&mut self) -> Result<actix_webworker::ErrorReport, String> {
        match self.next().await? {
            Event::Error(report) => Ok(report),
            other => Err(format!("expected an error event, got {other:?}")),
        }
    }

    async fn ask<R>(&self, request: R) -> Result<R::Answer, WorkerError>
    where
        R: actix_webworker::Request,
    {
        tokio::time::timeout(PATIENCE, self.worker.ask(request))
            .await
            .unwrap_or(Err(WorkerError::Timeout(PATIENCE)))
    }

    /// The messages that come before the exit, and the exit's code.
    async fn end(&mut self) -> Result<(Vec<Done>, Option<i32>), String> {
        let mut said = Vec::new();
        loop {
            match self.next().await? {
                Event::Message(m) => said.push(m.data),
                Event::Exit(status) => return Ok((said, status.code)),
                Event::Error(report) => return Err(format!("an error at the end: {report:?}")),
                _ => {}
            }
        }
    }

    /// Terminates the worker: `on_close` posts `Closing`, a clean exit.
    async fn terminate(&mut self) -> Check {
        self.worker.terminate();
        match self.end().await? {
            (said, Some(0)) if said == [Done::Closing] => {
                self.say("terminated: on_close posted Closing, exit code 0");
                Ok(())
            }
            other => Err(format!("expected Closing and exit code 0, got {other:?}")),
        }
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(got: T, wanted: T) -> Check {
    if got == wanted {
        Ok(())
    } else {
        Err(format!("expected {wanted:?}, got {got:?}"))
    }
}

async fn posts(r: &mut Run) -> Check {
    r.worker.post(Job::Echo("héllo wörld ✓".into()));
    let echoed = r.message().await?.data;
    expect(&echoed, &Done::Echoed("héllo wörld ✓".into()))?;
    r.say(format!("{echoed:?}"));
    r.worker.post(Job::Add(-2, 44));
    let sum = r.message().await?.data;
    expect(&sum, &Done::Sum(42))?;
    r.say(format!("{sum:?}"));
    let list = vec!["a".to_owned(), String::new()];
    r.worker.post(Job::Shapes { flag: true, maybe: None, list: list.clone(), ratio: 0.1 });
    let shapes = r.message().await?.data;
    expect(&shapes, &Done::Shapes { flag: true, maybe: None, list, ratio: 0.1 })?;
    r.say(format!("{shapes:?}"));
    r.terminate().await
}

async fn requests(r: &mut Run) -> Check {
    let product = r.ask(Mul(6, 7)).await.map_err(|e| format!("Mul: {e}"))?;
    expect(product, 42)?;
    r.say(format!("Mul(6, 7) = {product}"));
    let many = join_all((0..100).map(|i| r.ask(Mul(i, 3)))).await;
    for (i, answer) in many.into_iter().enumerate() {
        expect(answer.map_err(|e| e.to_string())?, i as i64 * 3)?;
    }
    r.say("100 at once, each answered");
    match r.ask(Unserved).await {
        Err(WorkerError::Unhandled(why)) => r.say(format!("Unserved: Unhandled({why:?})")),
        other => return Err(format!("Unserved: expected Unhandled, got {other:?}")),
    }
    r.terminate().await
}

async fn ask(r: &mut Run) -> Check {
    r.worker.post(Job::AskParent("py".into()));
    let answered = r.message().await?.data;
    expect(&answered, &Done::Answered("hello py".into()))?;
    r.say(format!("{answered:?}"));
    r.worker.post(Job::AskNobody);
    match r.message().await?.data {
        Done::Answered(failed) if failed.contains("Unhandled") => {
            r.say(format!("a request nobody serves: {failed}"))
        }
        other => return Err(format!("expected the failure of AskNobody, got {other:?}")),
    }
    r.terminate().await
}

/// Everything in `fd` to its end, read on a thread of its own.
async fn read_all(fd: OwnedFd) -> Result<String, String> {
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).map(|_| text)
    });
    match tokio::time::timeout(PATIENCE, read).await {
        Ok(Ok(Ok(text))) => Ok(text),
        Ok(Ok(Err(e))) => Err(format!("reading the pipe: {e}")),
        Ok(Err(e)) => Err(format!("reading the pipe: {e}")),
        Err(_) => Err(format!("the pipe did not end within {PATIENCE:?}")),
    }
}

async fn fds(r: &mut Run) -> Check {
    // To the worker: the write end of a pipe (ours is closed once sent).
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let text = "through a pipe, to Python";
    let post = Post::with_fds(Job::Write(text.into()), vec![OwnedFd::from(writer)]);
    r.worker.send(post).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    expect(r.message().await?.data, Done::Wrote(text.len() as u64))?;
    let wrote = read_all(OwnedFd::from(reader)).await?;
    expect(wrote.as_str(), text)?;
    r.say(format!("the worker wrote {wrote:?} into the descriptor sent"));
    // From the worker: the read end of a pipe it made.
    r.worker.post(Job::Pipe("through a pipe, from Python".into()));
    let mut piped = r.message().await?;
    expect(&piped.data, &Done::Piped)?;
    let fd = piped.take_fd().ok_or("Piped came without a descriptor")?;
    let read = read_all(fd).await?;
    expect(read.as_str(), "through a pipe, from Python")?;
    r.say(format!("the parent read {read:?} from the descriptor received"));
    r.terminate().await
}

fn where_(report: &actix_webworker::ErrorReport) -> String {
    let file = report.file.as_deref().unwrap_or("?");
    let file = file.rsplit('/').next().unwrap_or(file);
    format!("{:?} at {file}:{}", report.message, report.line.map_or("?".into(), |l| l.to_string()))
}

async fn errors(r: &mut Run) -> Check {
    r.worker.post(Job::Fail("oops".into()));
    let report = r.error().await?;
    if !report.message.contains("oops") || report.line.is_none() {
        return Err(format!("expected the report of Fail, got {report:?}"));
    }
    r.say(format!("post handler raised {}", where_(&report)));
    match r.ask(Boom).await {
        Err(WorkerError::Panicked(report)) if report.message.contains("boom") => {
            r.say(format!("request handler raised {}", where_(&report)))
        }
        other => return Err(format!("Boom: expected Panicked, got {other:?}")),
    }
    let report = r.error().await?;
    if !report.message.contains("boom") {
        return Err(format!("expected the error event of Boom, got {report:?}"));
    }
    r.say("and the parent heard of it as an error event");
    let product = r.ask(Mul(2, 2)).await.map_err(|e| format!("Mul after the errors: {e}"))?;
    expect(product, 4)?;
    r.say(format!("the worker goes on: Mul(2, 2) = {product}"));
    r.terminate().await
}

async fn terminate(r: &mut Run) -> Check {
    expect(r.ask(Mul(1, 1)).await.map_err(|e| e.to_string())?, 1)?;
    r.terminate().await
}

async fn close(r: &mut Run) -> Check {
    r.worker.post(Job::Close);
    match r.end().await? {
        (said, Some(0)) if said == [Done::Closing] => {
            r.say("parent.close(): on_close posted Closing, exit code 0")
        }
        other => return Err(format!("expected Closing and exit code 0, got {other:?}")),
    }
    Ok(())
}

async fn exit(r: &mut Run) -> Check {
    r.worker.post(Job::Exit(3));
    match r.end().await? {
        (said, Some(3)) if said.is_empty() => r.say("os._exit(3): exit code 3"),
        other => return Err(format!("expected exit code 3 and nothing else, got {other:?}")),
    }
    Ok(())
}

async fn refused(r: &mut Run) -> Check {
    loop {
        match r.next().await? {
            Event::WireError(e @ actix_webworker::WireError::UnknownEntry { .. }) => {
                r.say(e);
                return Ok(());
            }
            Event::WireError(e) => return Err(format!("expected UnknownEntry, got {e:?}")),
            Event::Exit(status) => return Err(format!("exited with {status} before refusing")),
            _ => {}
        }
    }
}

async fn scenario(name: &'static str, command: &Command) -> Check {
    let entry = if name == "refused" { "nope" } else { "demo" };
    let mut r = Run::start(name, command, entry)?;
    let checked = match name {
        "posts" => posts(&mut r).await,
        "requests" => requests(&mut r).await,
        "ask" => ask(&mut r).await,
        "fds" => fds(&mut r).await,
        "errors" => errors(&mut r).await,
        "terminate" => terminate(&mut r).await,
        "close" => close(&mut r).await,
        "exit" => exit(&mut r).await,
        _ => refused(&mut r).await,
    };
    if checked.is_err() {
        // Leave no worker behind: it exits once its socket closes.
        r.worker.terminate();
    }
    checked
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (names, command) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], Command::from_args(&args[at + 1..])),
        None => (&args[..], Command::from_args(&[])),
    };
    let mut chosen = Vec::new();
    for name in names {
        match SCENARIOS.iter().find(|s| *s == name) {
            Some(s) => chosen.push(*s),
            None => {
                eprintln!("unknown scenario {name:?}; the scenarios are {}", SCENARIOS.join(", "));
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.to_vec();
    }
    let failed = System::new().block_on(async {
        let mut failed = 0;
        for name in chosen {
            if let Err(e) = scenario(name, &command).await {
                eprintln!("{name}: FAILED: {e}");
                failed += 1;
            }
        }
        failed
    });
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
