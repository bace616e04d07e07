//! onerror on the worker side, errors from anywhere in the worker,
//! terminate's grace variants, and the worker's stdio.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_webworker::{Event, Grace, Join, Terminate, Worker, WorkerAddrExt};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        errors::panic_in_a_timer_reaches_the_parent,
        errors::on_error_that_handles_keeps_it_from_the_parent,
        errors::panic_in_started_is_reported_before_the_exit,
        errors::terminate_twice_and_after_the_exit_do_nothing,
        errors::infinite_grace_never_kills,
        errors::println_in_a_worker_reaches_the_parents_stdout,
        errors::a_worker_crash_reaches_an_app_that_logs_with_the_log_crate,
        errors::captured_output_becomes_tracing_events,
        errors::backtrace_when_rust_backtrace_asks,
        errors::a_panicking_interval_is_reported_every_tick_and_the_worker_goes_on,
        errors::a_panic_in_a_future_of_the_context_is_reported_then_the_worker_exits_101,
        errors::a_timer_panic_goes_to_the_parent_even_when_on_error_would_keep_it,
        errors::on_error_keeps_a_handled_panic_in_started_from_the_parent,
        errors::grace_after_signals_a_blocked_worker_for_one_call_and_never_does_not,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![errors::print_role, errors::log_role,]
}

pub fn panic_in_a_timer_reaches_the_parent() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::PanicLater(100));
        let report = events.error().await;
        assert_eq!(report.message, "late");
        assert!(report.file.as_deref().unwrap_or("").ends_with("tests/workers/common/worker.rs"));
        assert_eq!(report.line, Some(PANIC_LINE));
        // A run_later timer cannot be resumed after its panic: the worker
        // exits non-zero, after the report.
        assert_eq!(events.exit().await.code, Some(actix_webworker::exit_code::PANIC));
        drop(worker);
    });
}

pub fn on_error_that_handles_keeps_it_from_the_parent() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Panic("handled: by the worker".into()));
        worker.post(Cmd::Panic("not handled".into()));
        assert_eq!(events.message().await.data, Reply::Handled("handled: by the worker".into()));
        // The next event is the second panic: the first never reached us.
        let report = events.error().await;
        assert_eq!(report.message, "not handled");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn panic_in_started_is_reported_before_the_exit() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("panic-started").start().unwrap();
        let report = events.error().await;
        assert_eq!(report.message, "started panic");
        assert_eq!(report.line, Some(PANIC_LINE));
        worker.terminate();
        events.exit().await;
    });
}

pub fn terminate_twice_and_after_the_exit_do_nothing() {
    run(async {
        let (worker, mut events) = start();
        worker.send(Terminate::default()).await.unwrap();
        worker.send(Terminate(Grace::After(Duration::from_millis(1)))).await.unwrap();
        assert_eq!(events.message().await.data, Reply::Closing);
        // The second terminate did not shorten the grace: a clean exit.
        assert!(events.exit().await.success());
        worker.send(Terminate::default()).await.unwrap();
        assert!(worker.send(Join).await.unwrap().success());
    });
}

pub fn infinite_grace_never_kills() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .grace_period(Duration::from_millis(50))
            .kill_delay(Duration::from_millis(50))
            .start()
            .unwrap();
        worker.post(Cmd::Block(1500));
        worker.send(Terminate(Grace::Never)).await.unwrap();
        assert_eq!(events.message().await.data, Reply::Closing);
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (Some(0), None));
    });
}

/// Run by `println_in_a_worker_reaches_the_parents_stdout`, with its stdout
/// captured.
pub fn print_role() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Print("hello from the worker".into()));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// An app that logs with the `log` crate (env_logger and the like) and
/// installs no tracing subscriber: a worker's crash and exit reach its log.
pub fn log_role() {
    struct Lines(Mutex<Vec<String>>);
    impl log::Log for Lines {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {} {}", record.level(), record.target(), record.args());
            self.0.lock().unwrap().push(line);
        }
        fn flush(&self) {}
    }
    let lines: &'static Lines = Box::leak(Box::new(Lines(Mutex::default())));
    log::set_logger(lines).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let logged = |needle: &[&str]| said(&lines.0.lock().unwrap(), needle);
    run(async {
        let worker = Worker::<Test>::builder()
            .entry("test")
            .env("RUST_BACKTRACE", "0")
            .restart(actix_webworker::RestartPolicy::never())
            .start()
            .unwrap();
        worker.post(Cmd::Panic("told to the log".into()));
        let reported = settles(|| logged(&["ERROR", "uncaught error", "told to the log"])).await;
        assert!(reported, "the panic did not reach the log: {:?}", lines.0.lock().unwrap());
        worker.post(Cmd::Exit(3));
        assert_eq!(worker.send(Join).await.unwrap().code, Some(3));
    });
    assert!(logged(&["WARN", "exited", "exit code 3"]), "{:?}", lines.0.lock().unwrap());
}

pub fn a_worker_crash_reaches_an_app_that_logs_with_the_log_crate() {
    isolated("errors::log_role");
}

pub fn println_in_a_worker_reaches_the_parents_stdout() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["errors::print_role", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("AWW_ISOLATED", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("hello from the worker"), "{stdout}");
}

/// Records every event's `message`, `worker` and `stream` fields.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// Whether one line recorded holds every one of `needle`.
    pub fn said(&self, needle: &[&str]) -> bool {
        said(&self.0.lock().unwrap(), needle)
    }
}

/// Whether one of `lines` holds every one of `needle`.
pub fn said(lines: &[String], needle: &[&str]) -> bool {
    lines.iter().any(|l| needle.iter().all(|n| l.contains(n)))
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("target={} ", event.metadata().target()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

pub fn captured_output_becomes_tracing_events() {
    let recorder = Recorder::default();
    let lines = recorder.0.clone();
    tracing::subscriber::with_default(recorder, || {
        run(async {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec).name("printer").capture_output().start().unwrap();
            worker.post(Cmd::Print("captured line".into()));
            worker.terminate();
            let pid = loop {
                match events.next().await {
                    Event::Exit(status) => {
                        assert!(status.success());
                        break worker.send(Join).await.map(|_| ()).ok();
                    }
                    _ => continue,
                }
            };
            let _ = pid;
            // The capture task may still be reading the last bytes.
            let found = |lines: &Mutex<Vec<String>>| {
                lines.lock().unwrap().iter().any(|l| {
                    l.contains("captured line")
                        && l.contains("worker=printer")
                        && l.contains("stream=stdout")
                        && l.contains("target=actix_webworker::output")
                })
            };
            assert!(
                settles(|| found(&lines)).await,
                "no captured line among {:?}",
                lines.lock().unwrap()
            );
        });
    });
}

pub fn backtrace_when_rust_backtrace_asks() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).env("RUST_BACKTRACE", "1").start().unwrap();
        worker.post(Cmd::Panic("with a backtrace".into()));
        let report = events.error().await;
        let backtrace = report.backtrace.expect("a backtrace");
        assert!(backtrace.contains("boom"), "{backtrace}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// README: "After a panic in a message handler (or an interval) the worker
/// goes on with the next message."
pub fn a_panicking_interval_is_reported_every_tick_and_the_worker_goes_on() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::PanicEvery(100));
        for _ in 0..2 {
            let report = events.error().await;
            assert_eq!(report.message, "tick");
            assert_eq!(report.line, Some(PANIC_LINE));
        }
        // After those panics, the worker still answers and echoes.
        assert_eq!(worker.ask(Sum(vec![1, 2, 3])).await.expect("an answer"), 6);
        worker.post(Cmd::Echo(0));
        let echoed = loop {
            match events.next().await {
                Event::Error(report) => assert_eq!(report.message, "tick"),
                Event::Message(m) => break m.data,
                other => panic!("expected the echo or another tick's report, got {other:?}"),
            }
        };
        assert_eq!(echoed, Reply::Echo(0));
        // Still the same process: it never exited.
        worker.terminate();
        let status = loop {
            match events.next().await {
                Event::Exit(status) => break status,
                Event::Error(report) => assert_eq!(report.message, "tick"),
                Event::Message(m) => assert_eq!(m.data, Reply::Closing),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(status.success(), "{status}");
    });
}

/// README: "A `run_later` timer or another future of the context cannot
/// be resumed after its panic: the worker then exits with code 101, after
/// the report."
pub fn a_panic_in_a_future_of_the_context_is_reported_then_the_worker_exits_101() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::PanicInSpawned("spawned panic".into()));
        // `error` fails on an exit first: the report comes before the exit.
        let report = events.error().await;
        assert_eq!(report.message, "spawned panic");
        assert_eq!(report.line, Some(PANIC_LINE));
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (Some(actix_webworker::exit_code::PANIC), None));
        drop(worker);
    });
}

/// The first of `Handled(..)` or an error report; fails on an exit first.
async fn handled_or_reported(events: &mut Events<Test>) -> Result<String, String> {
    loop {
        match events.next().await {
            Event::Message(m) => match m.data {
                Reply::Handled(message) => return Ok(message),
                other => panic!("unexpected message {other:?}"),
            },
            Event::Error(report) => return Err(report.message),
            Event::Exit(s) => panic!("exited with {s} before the panic was handled or reported"),
            _ => continue,
        }
    }
}

/// Terminates the worker (if it is still there) and checks that no error
/// report reaches the parent before its exit.
async fn no_report_up_to_the_exit(worker: &actix::Addr<Worker<Test>>, events: &mut Events<Test>) {
    worker.terminate();
    loop {
        match events.next().await {
            Event::Exit(_) => return,
            Event::Error(report) => panic!("a report reached the parent: {report}"),
            _ => continue,
        }
    }
}

/// README: a panic the actor cannot survive (a `run_later` timer) "leaves
/// no actor to ask: it goes to the parent as it is, and the worker exits
/// with 101", even one its `on_error` would keep. (Written first as "on_error
/// sees a timer's panic first", which the README said: it failed every
/// time, the context being dropped before the report was offered, and the
/// README now says what the worker does.)
pub fn a_timer_panic_goes_to_the_parent_even_when_on_error_would_keep_it() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::PanicLaterWith(100, "handled: by the worker, late".into()));
        let seen = handled_or_reported(&mut events).await;
        assert_eq!(seen, Err("handled: by the worker, late".to_owned()));
        assert_eq!(events.exit().await.code, Some(101));
        drop(worker);
    });
}

/// README: "`WorkerActor::on_error` sees every panic in the worker first
/// (... `started`); returning `true` keeps it from the parent."
pub fn on_error_keeps_a_handled_panic_in_started_from_the_parent() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("panic-started-handled").start().unwrap();
        let seen = handled_or_reported(&mut events).await;
        assert_eq!(
            seen,
            Ok("handled: started panic".to_owned()),
            "on_error did not handle the panic in started (Err: it reached the parent as Event::Error)"
        );
        no_report_up_to_the_exit(&worker, &mut events).await;
    });
}

/// README: "`Grace::After(d)` sets it for one call; `Grace::Never` waits
/// for the worker's own exit and never signals."
pub fn grace_after_signals_a_blocked_worker_for_one_call_and_never_does_not() {
    run(async {
        // The builder's grace is ten times any wait of the test: a signal
        // seen within the wait came from the 100 ms of this one call.
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).grace_period(WAIT * 10).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected the pid") };
        worker.post(Cmd::Block(WAIT.as_millis() as u64 * 20));
        worker.send(Terminate(Grace::After(Duration::from_millis(100)))).await.unwrap();
        let status = match tokio::time::timeout(WAIT, worker.send(Join)).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                kill(pid, Signal::SIGKILL);
                panic!("the blocked worker was not signalled after its one call's 100 ms grace");
            }
        };
        assert_eq!(status.code, None, "{status}");
        assert!(
            matches!(status.signal, Some(libc::SIGTERM | libc::SIGKILL)),
            "ended by SIGTERM or SIGKILL: {status}"
        );

        // The same blocking, with Grace::Never, and a builder's grace far
        // shorter than the block: never signalled, it exits by itself.
        let (rec, mut never_events) = crate::common::events::<Test>();
        let worker = builder(rec)
            .grace_period(Duration::from_millis(50))
            .kill_delay(Duration::from_millis(50))
            .start()
            .unwrap();
        worker.post(Cmd::Block(1000));
        worker.send(Terminate(Grace::Never)).await.unwrap();
        assert_eq!(never_events.message().await.data, Reply::Closing);
        let status = never_events.exit().await;
        assert_eq!((status.code, status.signal), (Some(0), None), "{status}");
    });
}
