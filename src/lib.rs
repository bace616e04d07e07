//! Web Workers for actix: every worker a real OS process, every worker an
//! actor in the parent. Linux only.
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
//! the same address. A [`WorkerPool`] puts many worker processes behind one
//! address.
//!
//! ```text
//! parent process                                   worker process
//! Addr<Worker<P>> --Post--> Worker actor           runtime (actix System)
//!                   encode (session's Sender,        session: read loop,
//!                   bincode) -> outbox               dispatch by kind
//!                           |                          |  decode
//!                           v                          v
//!                   writer -> WebSocket ==========> WebSocket -> inbox -> your actor
//!                            over a UNIX socketpair (SCM_RIGHTS fds)       |
//! events Recipient <-- link task: session <================= Parent::post (a Sender)
//! ```
//!
//! # Example
//!
//! One executable that is both parent and worker (`examples/echo.rs` is the
//! same, with more said): the worker answers a greeting, the parent prints
//! the answer and ends the worker.
//!
//! ```
//! use actix::prelude::*;
//! use actix_webworker::{
//!     Entry, Event, Parent, Protocol, Received, Worker, WorkerActor, WorkerAddrExt,
//! };
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
//! // The worker: an actix actor.
//! struct EchoWorker { parent: Parent<Echo> }
//! impl Actor for EchoWorker { type Context = Context<Self>; }
//! impl WorkerActor for EchoWorker { type Protocol = Echo; }
//! impl Handler<Received<Hello>> for EchoWorker {
//!     type Result = ();
//!     fn handle(&mut self, msg: Received<Hello>, _: &mut Context<Self>) {
//!         let _ = self.parent.post(Test { test: format!("hello, {}", msg.data.foo) });
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     // First line of main: a re-run as a worker stops here.
//!     actix_webworker::run_if_worker([Entry::new("echo", |parent| EchoWorker { parent })]);
//!
//!     let (worker, mut events) =
//!         Worker::<Echo>::builder().entry("echo").start_with_events().unwrap();
//!     worker.post(Hello { foo: "bar".into() });
//!     while let Some(event) = events.next().await {
//!         match event.kind {
//!             Event::Message(msg) => {
//!                 println!("{}", msg.data.test);
//!                 assert_eq!(msg.data.test, "hello, bar");
//!                 worker.terminate();
//!             }
//!             Event::Exit(status) => assert!(status.success(), "{status}"),
//!             _ => {}
//!         }
//!     }
//! }
//! ```
//!
//! # Map of the crate
//!
//! Five floors, each importing only its own or those below: `pool` (many
//! workers behind one address) above `parent` and `child` (the two sides,
//! peers; `channel`, used on both, beside them) above `session` (one connected endpoint, the same on both sides)
//! above `wire` (bytes on the socket) above the ground (protocol, handoff,
//! errors, restarts). The map of every file is the README's "Inside the
//! crate"; the public items, by where they live:
//!
//! - `pool`: [`WorkerPool`], [`PoolBuilder`], [`PoolEvent`], [`Stats`].
//! - `parent`: [`WorkerBuilder`], [`Worker`], [`Post`], [`Ask`],
//!   [`Port`] (posts and requests past the actor's mailbox),
//!   [`WorkerEvent`], [`Limits`], [`Transport`] (remote workers over TCP,
//!   with the features below).
//! - `child`: [`run_if_worker`], [`run_worker`], [`WorkerActor`], [`Parent`].
//! - `session`: [`Propagator`] and [`set_propagator`], how an
//!   application's trace ids travel with requests ([`TraceContext`]; see
//!   docs/tracing.md).
//! - `channel`: [`MessageChannel`] and its [`ChannelEnd`]s, which travel
//!   inside messages to two workers; opened, a [`Channel`] posts and asks
//!   the other end, whose actor receives [`ChannelEvent`]s
//!   (`docs/channels.md`).
//! - `protocol`: [`Protocol`], [`Codec`] (bincode, or JSON for workers in
//!   other languages), [`Request`], [`Received`], [`NoPosts`] (a worker
//!   that only answers requests); `declare`: [`Declare`], the requests a
//!   protocol declares, with their [`wire_name`]s.
//! - `error`: [`SpawnError`], [`WorkerError`], [`WireError`], and the
//!   [`ExitStatus`] and [`ErrorReport`] they carry.
//! - `supervise`: [`RestartPolicy`] and its decisions.
//! - `wire`: [`SharedBytes`] and [`SharedBytesMut`], payloads that cross as
//!   sealed memfds rather than bytes.
//!
//! # Features
//!
//! None is on by default: a worker is a local process, reached over a UNIX
//! socketpair, and nothing of TCP or TLS is compiled.
//!
//! - `tcp`: remote workers that connect back over TCP, in the clear
//!   (`Transport::PlainTcp`).
//! - `tls` (with `tcp`): the same over TLS, rustls with ring
//!   (`Transport::Tls`).
//!
//! A worker's program must be built with the features of the transport its
//! parent asks for: one built without `tcp` that is asked to connect back
//! exits with [`exit_code::NOT_A_WORKER`], saying which feature it lacks.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "actix-webworker runs on Linux only: it stands on pidfds, SCM_RIGHTS, SO_PEERCRED and \
     PR_SET_PDEATHSIG"
);

mod channel;
mod child;
mod declare;
mod error;
/// Entry points of the fuzz targets in `fuzz/`: built only for them
/// (cargo-fuzz sets `cfg(fuzzing)`) and for the crate's own tests.
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod held;
mod os;
mod parent;
mod pool;
mod protocol;
mod report;
mod session;
mod streamed;
mod supervise;
mod testing;
mod wire;

#[doc(hidden)]
pub mod __private {
    //! What the crate's macros expand to, and what its own tests read;
    //! not part of the API.
    pub mod testing {
        pub use crate::testing::enable;

        /// How far the descriptor table had been grown ahead when the
        /// spawner thread was first started (`None`: not yet).
        pub fn reserved_before_spawner() -> Option<i32> {
            crate::parent::spawner::reserved_before_spawner()
        }
    }
    pub use actix;
}

pub use crate::channel::{
    Channel, ChannelClosed, ChannelEnd, ChannelEvent, ChannelOptions, CloseReason, MessageChannel,
    Opening,
};
pub use crate::child::{run_if_worker, run_worker, Entry, Parent, Requests, WorkerActor};
pub use crate::declare::{Declare, DeclaredRequest};
pub use crate::error::{
    ErrorReport, ExitStatus, Lost, ShapeError, SpawnError, WireError, WorkerError,
};
pub use crate::handoff::exit_code;
pub use crate::parent::ask_stream::AskStream;
pub use crate::parent::builder::{Single, WorkerBuilder};
pub use crate::parent::events::{Event, GaveUp, WorkerEvent};
pub use crate::parent::messages::{
    Ask, AskResponse, Join, Post, PostResponse, Terminate, WorkerAddrExt,
};
pub use crate::parent::options::{Limits, ResourceLimits, Transport, WhenFull};
pub use crate::parent::output::Output;
pub use crate::parent::port::Port;
pub use crate::parent::process::Grace;
pub use crate::parent::sink::WorkerEvents;
pub use crate::parent::start_method::StartMethod;
pub use crate::parent::stats::{MemberStats, PoolStats, Stats};
pub use crate::parent::worker::Worker;
pub use crate::pool::{
    Broadcast, Host, PoolAsk, PoolBuilder, PoolEvent, PoolStream, Pooled, Recycle, WorkerPool,
};
pub use crate::protocol::{request_name, wire_name, Codec, NoPosts, Protocol, Received, Request};
pub use crate::session::data::DataError;
pub use crate::session::streams::{AnswerStream, DEFAULT_STREAM_WINDOW};
pub use crate::session::trace::{set_propagator, Propagator};
pub use crate::streamed::{StreamRequest, Streamed};
pub use crate::supervise::{Restart, RestartPolicy};
pub use crate::wire::inline::InlineBytes;
pub use crate::wire::shared::{SharedBytes, SharedBytesMut};
pub use crate::wire::trace::TraceContext;
pub use crate::wire::MAX_FDS_PER_MESSAGE;
