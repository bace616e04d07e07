//! Testing your own workers with the default test harness: `#[test]` and
//! `#[actix::test]` functions start workers defined in this test binary.
//! `test_workers!` is all it takes.

#[path = "async_main/common.rs"]
mod common;

use actix_webworker::{Join, Worker, WorkerAddrExt};
use common::{Double, Doubling};

actix_webworker::test_workers![common::entry()];

#[test]
fn a_plain_test_starts_a_worker() {
    actix::System::new().block_on(common::check());
}

#[actix::test]
async fn an_actix_test_starts_a_worker() {
    common::check().await;
}

#[actix::test]
async fn several_workers_at_once() {
    let workers: Vec<_> = (0..4)
        .map(|_| Worker::<Doubling>::builder().entry("double").start().expect("starts"))
        .collect();
    for (i, worker) in workers.iter().enumerate() {
        assert_eq!(worker.ask(Double(i as u64)).await.unwrap(), 2 * i as u64);
    }
    for worker in workers {
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
    }
}

/// A test harness runs `run_if_worker` on a thread of its own: such a
/// process cannot be forked safely, so the template says so and exits,
/// and the worker is exec'd. Asking for a fork server there costs one
/// refused template, and the worker works.
#[actix::test]
async fn a_fork_server_in_a_test_harness_falls_back_to_exec() {
    use actix_webworker::{Event, StartMethod};
    let (worker, mut events) = Worker::<Doubling>::builder()
        .entry("double")
        .start_method(StartMethod::ForkServer)
        .start_with_events()
        .expect("starts");
    let pid = loop {
        let event = events.next().await.expect("events");
        if let Event::Online = event.kind {
            break event.pid;
        }
    };
    assert_eq!(worker.ask(Double(21)).await.unwrap(), 42);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("ACTIX_WEBWORKER_FD="), "exec'd: {environ}");
    assert!(!environ.contains("ACTIX_WEBWORKER_TEMPLATE="), "not forked: {environ}");
    worker.terminate();
    assert!(worker.send(Join).await.unwrap().success());
}
