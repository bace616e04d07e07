//! The idle worker as a binary of its own, which holds only what a worker
//! runs (the parent's code is not linked in): started by `idle_worker
//! --own-binary` as its `program`, never on its own.
//!
//! `cargo build --release --example idle_child`

use actix_webworker::{run_worker, Parent};

#[path = "idle/protocol.rs"]
mod protocol;

use protocol::{Idle, IdleWorker};

fn main() {
    run_worker(|_: Parent<Idle>| IdleWorker);
}
