//! How a local worker's process is made: exec'd afresh (the default), or
//! forked from a template worker kept waiting past its exec
//! ([`StartMethod::ForkServer`], `spawn/server.rs`). Chosen with
//! [`WorkerBuilder::start_method`] (`fork_server.rs`).
//!
//! [`WorkerBuilder::start_method`]: crate::parent::builder::WorkerBuilder::start_method

/// How a local worker's process is made (see
/// [`WorkerBuilder::start_method`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartMethod {
    /// Each worker is its program exec'd afresh: the loader, the
    /// program's relocations and the page faults of its code, each time.
    #[default]
    Exec,
    /// Workers are forked from a *template*: the same program, started
    /// once (on the first such start, and again if it dies) and kept
    /// waiting on the first line of its `main`, in
    /// [`run_if_worker`](crate::run_if_worker) or
    /// [`run_worker`](crate::run_worker), past exec and the loader. Each
    /// worker is then a fork of it, made the parent's own child, with
    /// every guarantee of an exec'd start: its own standard descriptors,
    /// no descriptor but its socket, its own process group, SIGTERM when
    /// the parent dies, its resource limits. Python's `multiprocessing`
    /// calls this a fork server.
    ///
    /// One template serves the workers of one command (program, arguments,
    /// environment, directory); the entry, the message limit, the standard
    /// descriptors and the resource limits may differ from one worker to
    /// the next. What the program does before that first line is done once,
    /// in the template, and every worker starts with its result (memory,
    /// but not descriptors: all but the three standard ones are closed).
    ///
    /// Where a template cannot serve, the worker is exec'd as with
    /// [`Exec`](Self::Exec), and nothing else changes: a program that is
    /// not an actix-webworker worker, one that calls `run_if_worker` from
    /// an async `main` or a test harness (a process with a runtime or
    /// more than one thread cannot be forked safely), a transport other
    /// than the local socket, a launcher. The template holds one idle
    /// process's memory (its resident pages are shared with the workers
    /// forked from it) and exits with the parent.
    ForkServer,
}
