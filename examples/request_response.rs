//! Typed request/response across the process boundary, both ways.
//!
//! The parent asks a worker to sum a `Vec<u64>` and to hash a byte string,
//! and awaits both typed answers. At start the worker asks the parent for a
//! configuration value (the greeting it prints), served by an actor of the
//! parent. The protocol declares its requests (each with a wire name of
//! its own, so renaming a Rust type changes nothing on the wire, and a
//! worker that forgot one would refuse to start, naming it), has no posts
//! at all (`NoPosts`), and the worker is started with its data (Node's
//! `workerData`): the label it prints its answers with.
//!
//! Run it with `cargo run --example request_response`.

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Declare, Entry, Join, NoPosts, Parent, Protocol, Requests, Worker, WorkerActor,
    WorkerAddrExt, WorkerError,
};
use serde::{Deserialize, Serialize};

/// Parent → worker: add these up.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Sum(Vec<u64>);

/// Parent → worker: hash these bytes (FNV-1a, 64 bits).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Hash(#[serde(with = "serde_bytes")] Vec<u8>);

/// Worker → parent: the value of a configuration key.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Option<String>")]
struct GetConfig(String);

/// No plain messages in this protocol: only requests.
struct Calc;

impl Protocol for Calc {
    type ToWorker = NoPosts;
    type FromWorker = NoPosts;

    fn requests(declare: &mut Declare) {
        declare.request::<Sum>().named("calc.sum");
        declare.request::<Hash>().named("calc.hash");
        declare.request_to_parent::<GetConfig>().named("calc.config");
    }
}

// ---- the worker -----------------------------------------------------------

struct CalcWorker {
    parent: Parent<Calc>,
    /// The worker's data: how it labels what it prints.
    label: String,
}

impl Actor for CalcWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Ask the parent once, at start.
        let asked = self.parent.ask(GetConfig("greeting".into()));
        ctx.spawn(asked.into_actor(self).map(|answer, act, _| match answer {
            Ok(Some(greeting)) => eprintln!("{}: the parent says {greeting:?}", act.label),
            Ok(None) => eprintln!("{}: the parent has no greeting", act.label),
            Err(e) => eprintln!("{}: could not ask the parent: {e}", act.label),
        }));
    }
}

impl Handler<Sum> for CalcWorker {
    type Result = u64;

    fn handle(&mut self, msg: Sum, _: &mut Context<Self>) -> u64 {
        msg.0.iter().sum()
    }
}

impl Handler<Hash> for CalcWorker {
    type Result = u64;

    fn handle(&mut self, msg: Hash, _: &mut Context<Self>) -> u64 {
        msg.0
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }
}

impl WorkerActor for CalcWorker {
    type Protocol = Calc;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Sum>().answer::<Hash>();
    }
}

// The handler of the posts that never come (`NoPosts` has no values).
actix_webworker::no_posts!(CalcWorker);

// ---- the parent -----------------------------------------------------------

/// Serves the worker's configuration requests.
struct Config;

impl Actor for Config {
    type Context = Context<Self>;
}

impl Handler<GetConfig> for Config {
    type Result = Option<String>;

    fn handle(&mut self, msg: GetConfig, _: &mut Context<Self>) -> Option<String> {
        (msg.0 == "greeting").then(|| "hello from the parent".to_owned())
    }
}

async fn parent() -> Result<(), WorkerError> {
    let config = Config.start();
    let worker = Worker::<Calc>::builder()
        .entry("calc")
        .serve(config.recipient::<GetConfig>())
        .data("calc worker".to_owned())
        .start()
        .expect("the worker process starts");

    let sum = worker.ask(Sum((1..=100).collect()));
    let hash = worker.ask(Hash(b"actix-webworker".to_vec()));
    let (sum, hash) = (sum.await?, hash.await?);
    println!("sum of 1..=100 = {sum}");
    println!("hash of \"actix-webworker\" = {hash:016x}");
    assert_eq!(sum, 5050);

    worker.terminate();
    let status = worker.send(Join).await.map_err(|_| WorkerError::Disconnected)?;
    println!("worker exited: {status}");
    Ok(())
}

fn main() {
    run_if_worker([Entry::new("calc", |parent: Parent<Calc>| {
        let label = parent.data::<String>().unwrap_or_else(|e| format!("worker ({e})"));
        CalcWorker { parent, label }
    })]);

    let result = System::new().block_on(parent());
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
