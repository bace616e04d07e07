//! Mistakes a user makes, each a clear error: a worker started for an
//! entry it does not have, one built from other message types, a
//! worker whose events nobody receives, and a launcher that would swallow
//! the worker's command.

use actix_webworker::{Event, Join, Restart, WireError, Worker, WorkerAddrExt, WorkerError};
use libtest_mimic::Trial;

use crate::common::*;
use crate::errors::Recorder;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::trials![
        misuse::an_unknown_entry_is_a_typed_error_naming_the_known_ones,
        misuse::a_worker_of_other_message_types_is_never_restarted,
        misuse::without_a_recipient_errors_and_exits_are_logged,
        misuse::types_bincode_cannot_carry_are_refused_naming_the_type,
        misuse::a_value_that_skips_a_field_as_written_is_refused_before_it_is_sent,
    ];
    // Launchers are for remote workers.
    tests.extend(crate::with_feature!(
        "tcp",
        trials![misuse::a_launcher_that_would_swallow_the_command_is_refused_at_start]
    ));
    tests
}

/// Under a policy that restarts on failure: the events up to `GaveUp`.
async fn until_given_up(events: &mut Events<Test>) -> Vec<Event<Test>> {
    let mut seen = Vec::new();
    loop {
        let ev = events.next().await;
        let done = matches!(ev, Event::GaveUp(_));
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

pub fn an_unknown_entry_is_a_typed_error_naming_the_known_ones() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("no-such-entry").restart(fast(Restart::OnFailure)).start();
        let worker = worker.unwrap();
        let pending = worker.ask(Sum(vec![1]));
        let seen = until_given_up(&mut events).await;
        let refused = seen.iter().find_map(|ev| match ev {
            Event::WireError(WireError::UnknownEntry { entry, known }) => Some((entry, known)),
            _ => None,
        });
        let (entry, known) = refused.expect("an UnknownEntry error");
        assert_eq!(entry, "no-such-entry");
        assert!(known.iter().any(|k| k == "test") && known.iter().any(|k| k == "crash"));
        // Certain to fail again: one process, no restart.
        assert!(!seen.iter().any(|ev| matches!(ev, Event::Restarting { .. })), "{seen:?}");
        let Some(Event::GaveUp(gave_up)) = seen.last() else { unreachable!() };
        assert!(matches!(gave_up.cause, Some(WireError::UnknownEntry { .. })), "{gave_up:?}");
        assert!(gave_up.reason.contains("no-such-entry"), "{}", gave_up.reason);
        assert_eq!(gave_up.exits.len(), 1);
        // What was asked fails with the cause, not only the exit code.
        let pending = pending.await;
        let cause = WireError::UnknownEntry { entry: entry.clone(), known: known.clone() };
        assert_eq!(pending, Err(WorkerError::Wire(cause)));
        assert_eq!(worker.send(Join).await.unwrap().code, Some(64));
    });
}

pub fn a_worker_of_other_message_types_is_never_restarted() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("v2").capture_output();
        let worker = worker.restart(fast(Restart::OnFailure)).start().unwrap();
        let seen = until_given_up(&mut events).await;
        assert!(!seen.iter().any(|ev| matches!(ev, Event::Restarting { .. })), "{seen:?}");
        let Some(Event::GaveUp(gave_up)) = seen.last() else { unreachable!() };
        assert!(
            matches!(gave_up.cause, Some(WireError::FingerprintMismatch { .. })),
            "{gave_up:?}"
        );
        worker.send(Join).await.unwrap();
    });
}

pub fn without_a_recipient_errors_and_exits_are_logged() {
    let recorder = Recorder::default();
    let logged = recorder.clone();
    let seen = recorder.clone();
    tracing::subscriber::with_default(recorder, || {
        run(async move {
            // No `.events(..)`: nobody receives its events.
            let worker = Worker::<Test>::builder()
                .entry("test")
                .env("RUST_BACKTRACE", "0")
                .restart(actix_webworker::RestartPolicy::never())
                .start()
                .unwrap();
            worker.post(Cmd::Panic("nobody listens".into()));
            assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
            // The report goes out after the worker's `on_error`: the log is
            // the only place to see it arrive.
            let reported = settles(|| seen.said(&["uncaught error", "nobody listens"])).await;
            assert!(reported, "the panic was not logged");
            worker.post(Cmd::Exit(3));
            assert_eq!(worker.send(Join).await.unwrap().code, Some(3));
        });
    });
    assert!(logged.said(&["exited", "exit code 3"]), "the exit was not logged");
}

/// A message type bincode cannot read back.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(untagged)]
pub enum Untagged {
    Number(u64),
    Text(String),
}

/// A request whose fields are skipped when empty: silent wrong data.
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Skipping {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<u64>,
    pub after: u64,
}

struct UntaggedProtocol;

impl actix_webworker::Protocol for UntaggedProtocol {
    type ToWorker = Untagged;
    type FromWorker = Reply;
}

pub fn types_bincode_cannot_carry_are_refused_naming_the_type() {
    run(async {
        let res = Worker::<UntaggedProtocol>::builder().entry("test").start();
        match res {
            Err(actix_webworker::SpawnError::Protocol(e)) => {
                assert!(e.ty.ends_with("Untagged"), "{e}");
                assert!(e.to_string().contains("untagged"), "{e}");
            }
            other => panic!("started: {:?}", other.map(drop)),
        }
        let (worker, mut events) = start();
        let res = worker.ask(Skipping { items: Vec::new(), after: 1 }).await;
        match res {
            Err(WorkerError::Wire(WireError::Encode(text))) => {
                assert!(text.contains("Skipping") && text.contains("skipped"), "{text}");
                // One line a user can act on, not the shape tracer's
                // internals after it.
                assert!(text.len() < 400 && !text.contains('\n'), "{} bytes: {text}", text.len());
            }
            other => panic!("asked: {other:?}"),
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// Skips its level when it is 7: a predicate the check of the types at
/// `start()` never meets (it tries 0s, empties and `None`s).
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Gauge {
    #[serde(skip_serializing_if = "is_seven")]
    pub level: u32,
    pub note: Option<u32>,
}

fn is_seven(n: &u32) -> bool {
    *n == 7
}

/// A value that skips a field as it is written is refused before it is
/// sent, naming the type, the struct and the field (in debug builds, as
/// the tests run). Before, `Gauge { level: 7, note: Some(0) }` went out and
/// arrived as `Gauge { level: 1, note: None }`.
pub fn a_value_that_skips_a_field_as_written_is_refused_before_it_is_sent() {
    run(async {
        let (worker, mut events) = start();
        // Not skipped: sent (and the worker, which serves no `Gauge`, says so).
        let res = worker.ask(Gauge { level: 1, note: Some(0) }).await;
        assert!(matches!(res, Err(WorkerError::Unhandled(_))), "{res:?}");
        let res = worker.ask(Gauge { level: 7, note: Some(0) }).await;
        match res {
            Err(WorkerError::Wire(e @ WireError::SkippedField { .. })) => {
                let WireError::SkippedField { ty, strukt, field } = &e else { unreachable!() };
                assert!(ty.ends_with("Gauge") && *strukt == "Gauge" && *field == "level", "{e}");
            }
            other => panic!("asked: {other:?}"),
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// `["sh", "-c"]`, the launcher most users try first, would run `env` as
/// the shell's whole script (printing the environment) and the worker
/// never: refused at `start()`, naming the working form, which starts.
#[cfg(feature = "tcp")]
pub fn a_launcher_that_would_swallow_the_command_is_refused_at_start() {
    run(async {
        let swallowing: [&[&str]; 4] = [
            &["sh", "-c"],
            &["/bin/bash", "-lc"],
            &["ssh", "host", "sh", "-c"],
            &["env", "dash", "-ec"],
        ];
        for launcher in swallowing {
            let (rec, _events) = events::<Test>();
            let refused = builder(rec).transport(loopback()).launcher(launcher).start();
            let Err(e) = refused else { panic!("{launcher:?} was not refused") };
            assert!(
                matches!(e, actix_webworker::SpawnError::SwallowingLauncher { .. }),
                "{launcher:?}: {e:?}"
            );
            assert!(e.to_string().contains(r#"["sh", "-c", "exec \"$@\"", "sh"]"#), "{e}");
            let said = e.to_string();
            assert!(!said.contains("  ") && !said.contains('\n'), "one line, as written: {said}");
        }
        // The form the refusal names starts the worker.
        let (rec, mut events) = events::<Test>();
        let working = ["sh", "-c", "exec \"$@\"", "sh"];
        let worker = builder(rec).transport(loopback()).launcher(working).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![40, 2])).await.unwrap(), 42);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
