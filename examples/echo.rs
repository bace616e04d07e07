//! The original webworker's README sample, as an actix program: the parent
//! posts `{ foo: "bar" }`, the worker answers `{ test: "this is a test" }`,
//! the parent prints it and terminates the worker, whose `on_close` prints
//! `Worker shutting down.`, and the parent prints the exit.
//!
//! `cargo run --example echo`

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Parent, Protocol, Received, Worker, WorkerActor, WorkerAddrExt,
};
use serde::{Deserialize, Serialize};

/// Parent → worker.
#[derive(Serialize, Deserialize, Debug)]
struct Hello {
    foo: String,
}

/// Worker → parent.
#[derive(Serialize, Deserialize, Debug)]
struct Test {
    test: String,
}

/// The protocol both sides share.
struct Echo;

impl Protocol for Echo {
    type ToWorker = Hello;
    type FromWorker = Test;
}

// ---- the worker -----------------------------------------------------------

struct EchoWorker {
    parent: Parent<Echo>,
}

impl Actor for EchoWorker {
    type Context = Context<Self>;
}

impl Handler<Received<Hello>> for EchoWorker {
    type Result = ();

    fn handle(&mut self, msg: Received<Hello>, _: &mut Context<Self>) {
        eprintln!("worker got {:?}", msg.data);
        let _ = self.parent.post(Test { test: "this is a test".into() });
    }
}

impl WorkerActor for EchoWorker {
    type Protocol = Echo;

    fn on_close(&mut self, _: &mut Context<Self>) {
        println!("Worker shutting down.");
    }
}

// ---- the parent -----------------------------------------------------------

#[actix::main]
async fn main() {
    // First line of main: when this program is re-run as the worker, this
    // call runs the worker and exits; in the parent it returns at once.
    run_if_worker([Entry::new("echo", |parent| EchoWorker { parent })]);

    let (worker, mut events) =
        Worker::<Echo>::builder().entry("echo").start_with_events().expect("the worker starts");
    // Posted before the worker is up: queued until its handshake is done.
    worker.post(Hello { foo: "bar".into() });

    // onmessage, onerror, onexit.
    while let Some(event) = events.next().await {
        match event.kind {
            Event::Online => println!("worker {} (pid {}) is online", event.name, event.pid),
            Event::Message(msg) => {
                println!("Received message: {:?}", msg.data);
                worker.terminate();
            }
            Event::Error(report) => println!("Worker error: {report}"),
            Event::Exit(status) => {
                println!("Worker exited: code={:?} signal={:?}", status.code, status.signal);
                std::process::exit(if status.success() { 0 } else { 1 });
            }
            other => println!("event: {other:?}"),
        }
    }
}
