//! Typed request/response across the process boundary, both ways.

use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{Ask, Event, Worker, WorkerAddrExt, WorkerError};
use futures_util::future::join_all;

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        requests::typed_answers,
        requests::ten_thousand_concurrent_requests_each_get_their_answer,
        requests::timeout_gives_a_typed_error_and_late_answers_are_dropped,
        requests::a_timed_out_or_abandoned_request_is_cancelled_in_the_worker,
        requests::a_worker_reports_its_figures,
        requests::pending_requests_fail_when_the_worker_dies,
        requests::handler_panic_fails_that_request_only,
        requests::a_panic_in_an_actor_future_fails_that_request_only,
        requests::a_request_the_worker_asked_in_on_close_is_still_served,
        requests::worker_asks_the_parent,
        requests::worker_asks_the_parent_with_shared_buffers,
        requests::worker_asking_an_unserved_request_gets_unhandled,
        requests::posts_and_requests_keep_their_order,
    ]
}

pub fn typed_answers() {
    run(async {
        let (worker, mut events) = start();
        assert_eq!(worker.ask(Sum(vec![1, 2, 3])).await.unwrap(), 6);
        assert_eq!(worker.ask(SlowEcho { n: 42, delay_ms: 1 }).await.unwrap(), 42);
        assert_eq!(worker.ask(Seen).await.unwrap(), 0);
        let res: Result<(), WorkerError> = worker.ask(Unregistered).await;
        assert!(matches!(res, Err(WorkerError::Unhandled(_))), "{res:?}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn ten_thousand_concurrent_requests_each_get_their_answer() {
    run(async {
        let (worker, mut events) = start();
        // Delays vary, so answers come back out of order.
        let asks = (0..10_000u64).map(|n| worker.ask(SlowEcho { n, delay_ms: (n * 7) % 5 }));
        let answers = join_all(asks).await;
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), n as u64);
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn timeout_gives_a_typed_error_and_late_answers_are_dropped() {
    run(async {
        let (worker, mut events) = start();
        let res = worker
            .send(Ask::new(SlowEcho { n: 1, delay_ms: 300 }).timeout(Duration::from_millis(50)))
            .await
            .unwrap();
        assert!(matches!(res, Err(WorkerError::Timeout(d)) if d == Duration::from_millis(50)));
        let res = worker.send(Ask::new(Never).timeout(Duration::from_millis(50))).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Timeout(_))), "{res:?}");
        // The first was cancelled in the worker (its future dropped), the
        // second (`Never`, a plain handler that drops its answer) fails there
        // on its own; neither harms what follows.
        assert_eq!(worker.ask(SlowEcho { n: 2, delay_ms: 400 }).await.unwrap(), 2);
        assert_eq!(worker.ask(Sum(vec![5])).await.unwrap(), 5);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_timed_out_or_abandoned_request_is_cancelled_in_the_worker() {
    run(async {
        let (worker, mut events) = start();
        let limit = Duration::from_millis(50);
        // Its timeout fires: the worker drops the handler's future, a
        // `ResponseFuture`, and then a `ResponseActFuture`; or, where the
        // cancel reaches it before the handler's turn came (a loaded
        // machine), the handler never starts.
        let res = worker.send(Ask::new(Hold(1)).timeout(limit)).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Timeout(_))), "{res:?}");
        given_up(&worker, &mut events, 1).await;
        let res = worker.send(Ask::new(HoldInActor(2)).timeout(limit)).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Timeout(_))), "{res:?}");
        given_up(&worker, &mut events, 2).await;
        // Its caller goes away (the future dropped, no timeout) once the
        // worker runs it (a request asked after it has been answered).
        // (Dropped before the `Worker` actor takes it, actix drops the
        // message: it never leaves.)
        let held = worker.send(Ask::new(Hold(3)));
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        drop(held);
        assert!(given_up(&worker, &mut events, 3).await, "Hold(3) had started");
        let held = worker.ask(HoldInActor(4));
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        drop(held);
        assert!(given_up(&worker, &mut events, 4).await, "HoldInActor(4) had started");
        // Nothing is owed for them: many more go through, and the worker
        // answers on.
        let held: Vec<_> = (10..60).map(|n| worker.send(Ask::new(Hold(n)))).collect();
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        drop(held);
        let mut dropped: Vec<u64> = Vec::new();
        while dropped.len() < 50 {
            if let Reply::Dropped(n) = events.message().await.data {
                dropped.push(n);
            }
        }
        dropped.sort_unstable();
        assert_eq!(dropped, (10..60).collect::<Vec<_>>());
        assert_eq!(worker.ask(Sum(vec![1, 2])).await.unwrap(), 3);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// After request `n` (a `Hold` or `HoldInActor`) was given up: either its
/// handler had started, and its future is dropped, or it never starts.
/// Which one: whether it had started (its `Holding(n)` comes before the
/// answer to a request asked after the cancel).
pub(crate) async fn given_up(
    worker: &Addr<Worker<Test>>,
    events: &mut Events<Test>,
    n: u64,
) -> bool {
    assert_eq!(worker.ask(Sum(vec![n])).await.unwrap(), n);
    let rest: Vec<Reply> = events
        .rest()
        .await
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Message(m) => Some(m.data),
            _ => None,
        })
        .collect();
    if !rest.contains(&Reply::Holding(n)) {
        println!("CANCEL request {n} given up before its handler started: never started");
        return false;
    }
    if !rest.contains(&Reply::Dropped(n)) {
        loop {
            if events.message().await.data == Reply::Dropped(n) {
                break;
            }
        }
    }
    true
}

pub fn a_worker_reports_its_figures() {
    run(async {
        let (worker, mut events) = start();
        for n in 0..100u64 {
            assert_eq!(worker.ask(Sum(vec![n])).await.unwrap(), n);
        }
        let res = worker.send(Ask::new(Hold(1)).timeout(Duration::from_millis(20))).await.unwrap();
        assert!(res.is_err());
        let held = worker.ask(Never);
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        let stats = worker.send(actix_webworker::Stats).await.unwrap();
        assert_eq!(stats.members.len(), 1);
        let me = &stats.members[0];
        assert!(me.online && me.pid > 0, "{stats:?}");
        assert_eq!(me.in_flight, 1, "the Never: {stats:?}");
        assert_eq!((stats.completed, stats.failed), (101, 1), "{stats:?}");
        assert_eq!((stats.busy, stats.idle), (1, 0));
        assert!(stats.rtt_p50 > Duration::ZERO && stats.rtt_p99 >= stats.rtt_p50);
        worker.terminate();
        assert!(events.exit().await.success());
        assert!(held.await.is_err());
    });
}

pub fn pending_requests_fail_when_the_worker_dies() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected a pid") };
        let asks: Vec<_> = (0..100).map(|_| worker.ask(Never)).collect();
        // Make sure all 100 are in the worker before it dies.
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        kill(pid, Signal::SIGKILL);
        let all = tokio::time::timeout(Duration::from_secs(2), join_all(asks))
            .await
            .expect("pending requests resolved within 2 s of the kill");
        for res in all {
            assert!(matches!(res, Err(WorkerError::Exited(s)) if s.signal == Some(9)), "{res:?}");
        }
        assert_eq!(events.exit().await.signal, Some(9));
    });
}

pub fn handler_panic_fails_that_request_only() {
    run(async {
        let (worker, mut events) = start();
        let res = worker.ask(PanicRequest).await;
        match res {
            Err(WorkerError::Panicked(report)) => {
                assert_eq!(report.message, "request handler panic");
                assert_eq!(report.line, Some(PANIC_LINE));
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(worker.ask(Sum(vec![2, 3])).await.unwrap(), 5);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A request answered by a `ResponseActFuture` (or a `ResponseFuture`)
/// that panics fails only itself, as a plain handler's does (README,
/// Requests): the panic is reported, another request in flight on the
/// actor is still answered, the worker goes on and ends with 0. Before,
/// for the actor's future: the panic unwound out of the actor's context,
/// which could not be polled again; the worker exited with 101 and the
/// other request failed with `Exited(101)`.
pub fn a_panic_in_an_actor_future_fails_that_request_only() {
    run(async {
        let (worker, mut events) = start();
        let held = worker.ask(SlowEcho { n: 7, delay_ms: 300 });
        let held = actix::spawn(held);
        for failed in [worker.ask(PanicInActor).await, worker.ask(PanicInFuture).await] {
            match failed {
                Err(WorkerError::Panicked(report)) => {
                    assert_eq!(report.message, "request future panic");
                }
                other => panic!("expected Panicked, got {other:?}"),
            }
        }
        let mut reports = 0;
        while reports < 2 {
            match events.next().await {
                Event::Online => continue,
                Event::Error(report) => assert_eq!(report.message, "request future panic"),
                other => panic!("expected the panics' reports, got {other:?}"),
            }
            reports += 1;
        }
        assert_eq!(held.await.unwrap().unwrap(), 7);
        assert_eq!(worker.ask(Sum(vec![2, 3])).await.unwrap(), 5);
        worker.terminate();
        assert_eq!(events.exit().await.code, Some(0));
    });
}

/// Counts the `GetConfig`s it serves; `Stall` keeps it busy.
pub struct Served(u64);

impl Actor for Served {
    type Context = Context<Self>;
}

/// Busy for a while; answers how many it served so far.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Stall(pub Duration);

impl Handler<Stall> for Served {
    type Result = u64;

    fn handle(&mut self, msg: Stall, _: &mut Context<Self>) -> u64 {
        std::thread::sleep(msg.0);
        self.0
    }
}

impl Handler<GetConfig> for Served {
    type Result = String;

    fn handle(&mut self, msg: GetConfig, _: &mut Context<Self>) -> String {
        self.0 += 1;
        format!("value of {}", msg.0)
    }
}

/// A worker that asks its parent in `on_close` and does not wait for the
/// answer: the parent's served actor, busy when the worker's connection
/// ends, still handles the request it read (its answer is refused with
/// the connection). From a review of bc2b6e5, which cancelled every answer
/// owed when a connection ended: the request was then never handled.
pub fn a_request_the_worker_asked_in_on_close_is_still_served() {
    run(async {
        let arbiter = Arbiter::new();
        let served = Served::start_in_arbiter(&arbiter.handle(), |_| Served(0));
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .entry("ask-on-close")
            .serve(served.clone().recipient::<GetConfig>())
            .start()
            .unwrap();
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        // Busy while the worker closes.
        let busy = served.send(Stall(Duration::from_millis(1500)));
        worker.terminate();
        assert!(events.exit().await.success());
        assert_eq!(busy.await.unwrap(), 0);
        // Behind the worker's request in the served actor's mailbox.
        assert_eq!(served.send(Stall(Duration::ZERO)).await.unwrap(), 1);
        arbiter.stop();
    });
}

/// Answers the worker's `GetConfig` (`trace.rs` too).
pub struct Config;

impl Actor for Config {
    type Context = Context<Self>;
}

impl Handler<GetConfig> for Config {
    type Result = String;

    fn handle(&mut self, msg: GetConfig, _: &mut Context<Self>) -> String {
        format!("value of {}", msg.0)
    }
}

impl Handler<Reversed> for Config {
    type Result = actix::MessageResult<Reversed>;

    fn handle(&mut self, msg: Reversed, _: &mut Context<Self>) -> Self::Result {
        let mut bytes = msg.0.to_vec();
        bytes.reverse();
        let back = actix_webworker::SharedBytes::copy_from_slice(&bytes).unwrap();
        actix::MessageResult((back, msg.0.is_mapped()))
    }
}

/// Shared buffers in the other direction: a worker's request to the
/// parent and the parent's answer both carry one, as descriptors.
pub fn worker_asks_the_parent_with_shared_buffers() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let config = Config.start();
        let worker = builder(rec).serve(config.recipient::<Reversed>()).start().unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (back, mapped) = worker.ask(AskParentShared(sent.clone())).await.unwrap().unwrap();
        let mut expected = sent;
        expected.reverse();
        assert_eq!(back, expected);
        assert!(mapped, "the parent's answer came as bytes");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn worker_asks_the_parent() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let config = Config.start();
        let worker = builder(rec).serve(config.recipient::<GetConfig>()).start().unwrap();
        let answer = worker.ask(AskParent("colour".into())).await.unwrap();
        assert_eq!(answer.unwrap(), "value of colour");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn worker_asking_an_unserved_request_gets_unhandled() {
    run(async {
        let (worker, mut events) = start();
        let answer = worker.ask(AskParent("colour".into())).await.unwrap();
        let text = answer.unwrap_err();
        assert!(text.contains("does not answer"), "{text}");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn posts_and_requests_keep_their_order() {
    run(async {
        let (worker, mut events) = start();
        let mut seen = Vec::new();
        for i in 0..200 {
            worker.post(Cmd::Echo(i));
            seen.push(worker.ask(Seen));
        }
        for (i, s) in join_all(seen).await.into_iter().enumerate() {
            assert_eq!(s.unwrap(), i as u64 + 1);
        }
        for i in 0..200 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
