//! What the three async-main tests share: a worker that doubles numbers,
//! and the parent's check, run in an actix System.

use actix::prelude::*;
use actix_webworker::{
    Entry, Join, Parent, Protocol, Received, Requests, Worker, WorkerActor, WorkerAddrExt,
};
use serde::{Deserialize, Serialize};

pub struct Doubling;

impl Protocol for Doubling {
    type ToWorker = ();
    type FromWorker = ();
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Double(pub u64);

pub struct Doubler;

impl Actor for Doubler {
    type Context = Context<Self>;
}

impl Handler<Received<()>> for Doubler {
    type Result = ();
    fn handle(&mut self, _: Received<()>, _: &mut Context<Self>) {}
}

impl Handler<Double> for Doubler {
    type Result = u64;
    fn handle(&mut self, msg: Double, _: &mut Context<Self>) -> u64 {
        msg.0 * 2
    }
}

impl WorkerActor for Doubler {
    type Protocol = Doubling;
    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Double>();
    }
}

pub fn entry() -> Entry {
    Entry::new("double", |_: Parent<Doubling>| Doubler)
}

/// Starts the worker, has it answer, ends it; inside an actix System.
pub async fn check() {
    let worker = Worker::<Doubling>::builder().entry("double").start().expect("the worker starts");
    assert_eq!(worker.ask(Double(21)).await.expect("the worker answers"), 42);
    worker.terminate();
    let status = worker.send(Join).await.expect("the worker joins");
    assert!(status.success(), "{status}");
    println!("the worker answered 42 and exited cleanly");
}
