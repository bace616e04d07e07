//! What the idle worker examples share: the protocol, and the worker that
//! answers one request. `idle_worker` runs it from its own binary (an
//! entry of `run_if_worker`) or, with `--own-binary`, from `idle_child`.

use actix::prelude::*;
use actix_webworker::{Declare, NoPosts, Protocol, Requests, WorkerActor};
use serde::{Deserialize, Serialize};

/// Asked once the worker is up: the answer says it serves.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Ping(pub u64);

pub struct Idle;

impl Protocol for Idle {
    type ToWorker = NoPosts;
    type FromWorker = ();

    // Named for good: the worker binary of its own (`idle_child`) is
    // another crate, where the path of `Ping` differs.
    fn requests(declare: &mut Declare) {
        declare.request::<Ping>().named("ping");
    }
}

pub struct IdleWorker;

impl Actor for IdleWorker {
    type Context = Context<Self>;
}

impl Handler<Ping> for IdleWorker {
    type Result = u64;

    fn handle(&mut self, Ping(n): Ping, _: &mut Context<Self>) -> u64 {
        n
    }
}

impl WorkerActor for IdleWorker {
    type Protocol = Idle;

    fn requests(requests: &mut Requests<Self>) {
        requests.answer::<Ping>();
    }
}
actix_webworker::no_posts!(IdleWorker);
