//! One connected endpoint, the same on both sides. A session does not
//! know which side it is: the parent's link and the worker's runtime each
//! run one, and a test runs two over a socketpair.
//!
//! - `hello.rs`: opening one; the hellos that check the peer (`shape.rs`
//!   gives the fingerprint both compare), and the worker's data after
//!   them (`data.rs`).
//! - `endpoint.rs`: the open session: its writer task, read loop and
//!   dispatch by kind, and the [`Side`] trait for what only one side does.
//! - `sender.rs`: the sending half: how a connection is written, and
//!   posts, requests and the one answer future.
//! - `requests.rs`: the table of what this side asked; `answers.rs`: the
//!   handlers of what it may be asked, and the reply each request is owed;
//!   `declared.rs`: each request's tag, from what the protocol declares.
//! - `trace.rs`: the spans of requests on both sides, and the trace
//!   context that joins them across the boundary.
//! - `streams.rs`: a request answered by a stream of items, as its asker
//!   reads it; `produce.rs`: the producer of those items, paced by the
//!   asker's window.

pub(crate) mod answers;
mod caught;
mod credit;
pub(crate) mod data;
pub(crate) mod declared;
mod endpoint;
mod hello;
pub(crate) mod produce;
pub(crate) mod requests;
pub(crate) mod sender;
pub(crate) mod shape;
pub(crate) mod streams;
#[cfg(test)]
mod tests;
pub(crate) mod trace;

pub(crate) use self::endpoint::{Common, Finish, Finished, Flow, Session, Side, Why};
pub(crate) use self::hello::{hello, open, Opened, Then, Turn};

/// Spawns `fut` on this thread's runtime as one boxed future type:
/// tokio's task machinery for it (the task's vtable, its poll, its output
/// and its drop) is then compiled once, not once for each protocol, actor,
/// channel or request type whose future is spawned: 90 KB less text for a
/// program of one protocol, 84 KB less for each further one
/// (docs/performance.md, "code per protocol"). Every spawn of the crate's
/// in a generic context goes through here; the box is one allocation more
/// per spawn, beside the task's own.
#[track_caller]
pub(crate) fn spawn_boxed(
    fut: impl std::future::Future<Output = ()> + 'static,
) -> tokio::task::JoinHandle<()> {
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = Box::pin(fut);
    actix_rt::spawn(fut)
}
