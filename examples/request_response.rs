//! Typed request/response across the process boundary, both ways.
//!
//! The parent asks a worker to sum a `Vec<u64>` and to hash a byte string,
//! and awaits both typed answers. At start the worker asks the parent for a
//! configuration value (the greeting it prints), served by an actor of the
//! parent.
//!
//! Run it with `cargo run --example request_response`.

use actix::prelude::*;
use actix_webworker::{
    run_if_worker, Entry, Join, Parent, Protocol, Received, Requests, Worker, WorkerActor,
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
    type ToWorker = ();
    type FromWorker = ();
}

// ---- the worker -----------------------------------------------------------

struct CalcWorker {
    parent: Parent<Calc>,
}

impl Actor for CalcWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Ask the parent once, at start.
        let asked = self.parent.ask(GetConfig("greeting".into()));
        ctx.spawn(asked.into_actor(self).map(|answer, _, _| match answer {
            Ok(Some(greeting)) => eprintln!("worker: the parent says {greeting:?}"),
            Ok(None) => eprintln!("worker: the parent has no greeting"),
            Err(e) => eprintln!("worker: could not ask the parent: {e}"),
        }));
    }
}

impl Handler<Received<()>> for CalcWorker {
    type Result = ();

    fn handle(&mut self, _: Received<()>, _: &mut Context<Self>) {}
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
    run_if_worker([Entry::new("calc", |parent| CalcWorker { parent })]);

    let result = System::new().block_on(parent());
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
