//! How a process becomes a worker: the named [`Entry`]s of an executable
//! that is both parent and worker ([`run_if_worker`]), or a worker binary
//! of its own ([`run_worker`]).

use super::actor::WorkerActor;
use super::handle::Parent;
use super::{refusal, runtime, template};
use crate::handoff::{self, exit_code};

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
/// `#[actix::main]`, `#[actix_rt::main]` or `#[tokio::main]`), or this
/// process is a fork of a template (`forked`), on a fresh thread, whose
/// exit code it returns. In a fork, the thread that made it is glibc's
/// copy of the template's, still named by the template's thread id
/// (`clone3` does not tell glibc): a call about "this thread"
/// (`pthread_setaffinity_np(pthread_self())`) would reach the template.
/// A fresh thread is the worker's own.
fn outside_any_runtime(run: Box<dyn FnOnce() -> i32 + Send>, forked: bool) -> i32 {
    if !forked && tokio::runtime::Handle::try_current().is_err() {
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
    // A template returns here only in each worker it forks.
    let forked = template::serve_if_template();
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
        Some(i) => outside_any_runtime(entries.swap_remove(i).run, forked),
        None => refusal::refuse(&name, entries.into_iter().map(|e| e.name).collect()),
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
    let forked = template::serve_if_template();
    std::process::exit(outside_any_runtime(Box::new(move || runtime::run(make)), forked))
}
