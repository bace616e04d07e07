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
