//! Web Workers for actix: every worker a real OS process, every worker an
//! actor in the parent.
//!
//! The parent starts a worker with a builder and gets an
//! [`Addr<Worker<P>>`](Worker): posting a typed message is sending it a
//! [`Post`], and [`Ask`] sends a typed [`Request`] whose answer comes back
//! with its own type. The worker runs an ordinary actix actor (a
//! [`WorkerActor`]) that receives those messages, answers requests with its
//! own handlers, posts and asks back through its [`Parent`], and has
//! `on_close` and `on_error` hooks. Events (online, message, error, exit,
//! restarts) reach the parent through an actix
//! [`Recipient`](actix::Recipient). Messages may carry file descriptors
//! both ways, and a [`RestartPolicy`] brings a crashed worker back behind
//! the same address.
//!
//! ```text
//! parent process                                  worker process
//! Addr<Worker<P>> --Post--> Worker actor          runtime (actix System)
//!                           | encode (bincode)      | decode
//!                           v                       v
//!                           outbox -> WebSocket ==> WebSocket -> your actor
//!                                    over a UNIX socketpair      |
//! events Recipient <-- link task <== (SCM_RIGHTS fds)  <== Parent::post
//! ```
//!
//! # Example
//!
//! One executable that is both parent and worker (see `examples/echo.rs`
//! for the complete program):
//!
//! ```no_run
//! use actix::prelude::*;
//! use actix_webworker::{Entry, Event, Parent, Protocol, Received, Worker, WorkerActor,
//!                       WorkerAddrExt, WorkerEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! struct Hello { foo: String }
//! #[derive(Serialize, Deserialize, Debug)]
//! struct Test { test: String }
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     type ToWorker = Hello;
//!     type FromWorker = Test;
//! }
//!
//! // The worker.
//! struct EchoWorker { parent: Parent<Echo> }
//! impl Actor for EchoWorker { type Context = Context<Self>; }
//! impl WorkerActor for EchoWorker { type Protocol = Echo; }
//! impl Handler<Received<Hello>> for EchoWorker {
//!     type Result = ();
//!     fn handle(&mut self, _: Received<Hello>, _: &mut Context<Self>) {
//!         let _ = self.parent.post(Test { test: "this is a test".into() });
//!     }
//! }
//!
//! // The parent.
//! struct Printer;
//! impl Actor for Printer { type Context = Context<Self>; }
//! impl Handler<WorkerEvent<Echo>> for Printer {
//!     type Result = ();
//!     fn handle(&mut self, ev: WorkerEvent<Echo>, _: &mut Context<Self>) {
//!         if let Event::Exit(status) = ev.kind {
//!             println!("exit: {status}");
//!             System::current().stop();
//!         }
//!     }
//! }
//!
//! fn main() {
//!     // First line of main: a re-run as a worker stops here.
//!     actix_webworker::run_if_worker([Entry::new("echo", |parent| EchoWorker { parent })]);
//!
//!     System::new().block_on(async {
//!         let printer = Printer.start();
//!         let worker = Worker::<Echo>::builder()
//!             .entry("echo")
//!             .events(printer.recipient())
//!             .start()
//!             .expect("worker starts");
//!         worker.post(Hello { foo: "bar".into() });
//!         worker.terminate();
//!     });
//! }
//! ```
//!
//! # Map of the crate
//!
//! - `protocol`: the [`Protocol`] trait naming the message types.
//! - `request`: typed requests across the boundary ([`Request`], [`Ask`]).
//! - `supervise`: the [`RestartPolicy`] and its decisions.
//! - `parent`: the [`WorkerBuilder`], the [`Worker`] actor, [`WorkerEvent`]s,
//!   and the launching and reaping of processes.
//! - `child`: the worker runtime ([`run_if_worker`], [`run_worker`],
//!   [`WorkerActor`], [`Parent`]).
//! - `wire`: what both share: the envelope, the codec (bincode), the
//!   fd-aware socket (SCM_RIGHTS) and the WebSocket over it.
//! - `error`: [`SpawnError`], [`WorkerError`], [`WireError`], and the
//!   [`ExitStatus`] and [`ErrorReport`] they carry.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(unix)]

mod child;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod parent;
mod protocol;
mod request;
mod supervise;
mod testing;
mod wire;

#[doc(hidden)]
pub mod __private {
    //! What the crate's macros expand to; not part of the API.
    pub mod testing {
        pub use crate::testing::enable;
    }
}

pub use crate::child::{
    exit_code, run_if_worker, run_worker, Entry, Parent, Requests, WorkerActor,
};
pub use crate::error::{ErrorReport, ExitStatus, SpawnError, WireError, WorkerError};
pub use crate::parent::builder::{Limits, WhenFull, WorkerBuilder};
pub use crate::parent::events::{Event, GaveUp, Received, WorkerEvent};
pub use crate::parent::output::Output;
pub use crate::parent::sink::WorkerEvents;
pub use crate::parent::spawn::ResourceLimits;
pub use crate::parent::worker::{
    Ask, Grace, Join, Post, PostResponse, Terminate, Worker, WorkerAddrExt,
};
pub use crate::protocol::Protocol;
pub use crate::request::Request;
pub use crate::supervise::{Restart, RestartPolicy};
pub use crate::wire::MAX_FDS_PER_MESSAGE;
