//! The README sample of the original webworker, in actix.
//!
//! The parent posts `{ foo: "bar" }`; the worker answers
//! `{ test: "this is a test" }`; the parent prints it and terminates the
//! worker; the worker's `on_close` prints "Worker shutting down."; the parent
//! prints the exit event and exits 0.
//!
//! One executable plays both parts: the worker is this same program re-run
//! with the entry "echo".
//!
//! Run it with `cargo run --example echo`.

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Event, Parent, Protocol, Received, Worker, WorkerActor, WorkerAddrExt,
    WorkerEvent,
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

/// Receives the worker's events: onmessage, onerror, onexit.
struct Main {
    worker: Option<Addr<Worker<Echo>>>,
}

impl Actor for Main {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let worker = Worker::<Echo>::builder()
            .entry("echo")
            .events(ctx.address().recipient())
            .start()
            .expect("the worker process starts");
        // Posted before the worker is up: queued until its handshake is done.
        worker.post(Hello { foo: "bar".into() });
        self.worker = Some(worker);
    }
}

impl Handler<WorkerEvent<Echo>> for Main {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent<Echo>, _: &mut Context<Self>) {
        match event.kind {
            Event::Online => println!("worker {} (pid {}) is online", event.name, event.pid),
            Event::Message(msg) => {
                println!("Received message: {:?}", msg.data);
                if let Some(worker) = &self.worker {
                    worker.terminate();
                }
            }
            Event::Error(report) => println!("Worker error: {report}"),
            Event::Exit(status) => {
                println!("Worker exited: code={:?} signal={:?}", status.code, status.signal);
                System::current().stop_with_code(if status.success() { 0 } else { 1 });
            }
            other => println!("event: {other:?}"),
        }
    }
}

fn main() {
    // First line of main: when this program is re-run as the worker, this
    // call runs the worker and exits; in the parent it returns at once.
    run_if_worker([Entry::new("echo", |parent| EchoWorker { parent })]);

    let system = System::new();
    system.block_on(async {
        Main { worker: None }.start();
    });
    let code = system.run_with_code().expect("the actix system runs");
    std::process::exit(code);
}
