//! The worker side: the runtime that runs inside the child process and
//! drives the user's actor.
//!
//! A worker is an ordinary actix actor that also implements [`WorkerActor`]:
//! it handles [`Received`] messages of its protocol, posts back through its
//! [`Parent`] handle at any time, and may implement `on_close` and
//! `on_error`. The runtime is entered with one call: [`run_worker`] from the
//! `main` of a worker binary, or [`run_if_worker`] on the first line of a
//! `main` that is both parent and worker.

mod actor;
mod bootstrap;
mod entry;
mod handle;
mod inbox;
mod panic;
mod refusal;
mod runtime;
mod template;

pub use self::actor::{Requests, WorkerActor};
pub use self::entry::{run_if_worker, run_worker, Entry};
pub use self::handle::Parent;
