//! The worker side: the runtime that runs inside the child process and
//! drives the user's actor.
//!
//! A worker is an ordinary actix actor that also implements [`WorkerActor`]:
//! it handles [`Received`] messages of its protocol, posts back through its
//! [`Parent`] handle at any time, and may implement `on_close` and
//! `on_error`. The runtime is entered with one call: [`run_worker`] from the
//! `main` of a worker binary, or [`run_if_worker`] on the first line of a
//! `main` that is both parent and worker.

mod bootstrap;
mod handle;
mod inbox;
mod panic;
mod runtime;

use std::rc::Rc;

use actix::{Actor, Context, Handler};
use tokio::sync::mpsc::UnboundedSender;

use self::inbox::Command;

pub use self::handle::Parent;
use crate::error::ErrorReport;
use crate::handoff::{self, exit_code};
use crate::protocol::Protocol;
use crate::protocol::Received;
use crate::protocol::Request;
use crate::session::answers::Handlers;

/// An actor that can run as a worker.
///
/// ```
/// use actix::{Actor, Context, Handler};
/// use actix_webworker::{Parent, Protocol, Received, WorkerActor};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] pub struct Ping(u32);
/// # struct Pings;
/// # impl Protocol for Pings { type ToWorker = Ping; type FromWorker = Ping; }
///
/// struct Echo {
///     parent: Parent<Pings>,
/// }
///
/// impl Actor for Echo {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<Received<Ping>> for Echo {
///     type Result = ();
///     fn handle(&mut self, msg: Received<Ping>, _: &mut Context<Self>) {
///         let _ = self.parent.post(Ping(msg.data.0 + 1));
///     }
/// }
///
/// impl WorkerActor for Echo {
///     type Protocol = Pings;
/// }
/// ```
pub trait WorkerActor:
    Actor<Context = Context<Self>> + Handler<Received<<Self::Protocol as Protocol>::ToWorker>>
{
    /// The protocol this worker speaks.
    type Protocol: Protocol;

    /// Registers the [`Request`] types this worker answers,
    /// each with the actor's own `Handler` for it:
    ///
    /// ```ignore
    /// fn requests(requests: &mut Requests<Self>) {
    ///     requests.answer::<Sum>().answer::<Hash>();
    /// }
    /// ```
    ///
    /// A request of a type not registered here fails in the parent with
    /// [`WorkerError::Unhandled`](crate::WorkerError::Unhandled).
    fn requests(requests: &mut Requests<Self>) {
        let _ = requests;
    }

    /// Runs when the worker is terminated by its parent, closes itself, or
    /// its parent goes away (the `onclose` of the original). Messages posted
    /// here still reach the parent when it is alive.
    fn on_close(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// Sees every uncaught panic in the worker first (the worker's own
    /// `onerror`). Return `true` if it is handled: the parent is then not
    /// told. The default handles nothing.
    fn on_error(&mut self, error: &ErrorReport, ctx: &mut Context<Self>) -> bool {
        let _ = (error, ctx);
        false
    }
}

/// The request types a worker answers; see [`WorkerActor::requests`].
pub struct Requests<W: WorkerActor> {
    pub(crate) handlers: Handlers,
    /// Shared by the handlers (and cloned per request without an atomic).
    ctl: Rc<UnboundedSender<Command<W>>>,
}

impl<W: WorkerActor> Requests<W> {
    pub(crate) fn new(ctl: UnboundedSender<Command<W>>) -> Self {
        Requests { handlers: Handlers::new(panic::last_report), ctl: Rc::new(ctl) }
    }

    /// Answers requests of type `R` with the actor's `Handler<R>`.
    ///
    /// A handler whose answer is a `ResponseFuture` or a
    /// `ResponseActFuture` can be cancelled: when the parent stops waiting
    /// (the request's timeout, or its caller going away), the future is
    /// dropped and nothing is sent.
    pub fn answer<R>(&mut self) -> &mut Self
    where
        R: Request,
        W: Handler<R>,
        <W as Handler<R>>::Result: 'static,
    {
        let ctl = self.ctl.clone();
        self.handlers.insert::<R>(move |req, reply| {
            let again = ctl.clone();
            // Sent back (and dropped, failing the request) if the actor is gone.
            let _ = ctl.send(Command::call(move |act: &mut W, ctx: &mut Context<W>| {
                inbox::answer(act, req, ctx, reply, &again)
            }));
        });
        self
    }
}

/// A named worker entry, for one executable that is both parent and worker.
pub struct Entry {
    name: String,
    run: Box<dyn FnOnce() -> i32 + Send>,
}

impl Entry {
    /// An entry `name` whose actor is built by `make` in the worker process.
    pub fn new<W, F>(name: impl Into<String>, make: F) -> Entry
    where
        W: WorkerActor,
        F: FnOnce(Parent<W::Protocol>) -> W + Send + 'static,
    {
        Entry { name: name.into(), run: Box::new(move || runtime::run(make)) }
    }
}

/// Runs `run`, which starts a runtime of its own: here, or, when this
/// thread runs one already (`run_if_worker` in an async `main` under
/// `#[actix::main]`, `#[actix_rt::main]` or `#[tokio::main]`), on a fresh
/// thread, whose exit code it returns.
fn outside_any_runtime(run: Box<dyn FnOnce() -> i32 + Send>) -> i32 {
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    let thread = std::thread::Builder::new().name("actix-webworker".into()).spawn(run);
    match thread {
        Ok(thread) => thread.join().unwrap_or(exit_code::PANIC),
        Err(e) => {
            tracing::error!(error = %e, "could not start the worker's thread");
            exit_code::IO
        }
    }
}

/// Runs the worker entry this process was started for, and exits; returns
/// at once, doing nothing, when this process is not a worker.
///
/// Call it on the **first line of `main`**: when the executable is
/// re-run as a worker, nothing of the parent's `main` should run before it.
/// An async `main` (`#[actix::main]`, `#[actix_rt::main]`,
/// `#[tokio::main]`) works the same: the worker then runs its own runtime
/// on a thread of its own.
///
/// ```no_run
/// # use actix_webworker::{Entry, run_if_worker};
/// #[actix::main]
/// async fn main() {
///     run_if_worker([/* Entry::new("echo", |parent| EchoWorker { parent }) */]);
///     // ... the parent's code ...
/// }
/// ```
pub fn run_if_worker(entries: impl IntoIterator<Item = Entry>) {
    let Some(name) = std::env::var_os(handoff::ENV_ENTRY) else {
        if std::env::var_os(handoff::ENV_FD).is_some() {
            tracing::warn!(
                "started as a worker without an entry name; running as a normal program"
            );
        }
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let mut entries: Vec<Entry> = entries.into_iter().collect();
    let code = match entries.iter().position(|e| e.name == name) {
        Some(i) => outside_any_runtime(entries.swap_remove(i).run),
        None => runtime::refuse(&name, entries.into_iter().map(|e| e.name).collect()),
    };
    std::process::exit(code);
}

/// Runs this process as a worker with the actor `make` builds, and exits
/// with the worker's exit code. For a worker binary of its own:
///
/// ```no_run
/// # use actix_webworker::run_worker;
/// fn main() {
///     // run_worker(|parent| EchoWorker { parent });
/// }
/// ```
pub fn run_worker<W, F>(make: F) -> !
where
    W: WorkerActor,
    F: FnOnce(Parent<W::Protocol>) -> W + Send + 'static,
{
    std::process::exit(outside_any_runtime(Box::new(move || runtime::run(make))))
}
