//! How a local worker's process is made: exec'd afresh (the default), or
//! forked from a template worker kept waiting past its exec
//! ([`StartMethod::ForkServer`], `spawn/server.rs`). Chosen with
//! [`WorkerBuilder::start_method`] (`fork_server.rs`).
//!
//! [`WorkerBuilder::start_method`]: crate::parent::builder::WorkerBuilder::start_method

/// How a local worker's process is made (see
/// [`WorkerBuilder::start_method`](crate::parent::builder::WorkerBuilder::start_method)).
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
    /// no descriptor of the parent's, its own process group, SIGTERM when
    /// the parent dies, its resource limits. It runs on a thread of its
    /// own. Python's `multiprocessing` calls this a fork server.
    ///
    /// One template serves the workers of one command (program, arguments,
    /// environment, directory), at most 8 commands per parent; the entry,
    /// the message limit, the standard descriptors and the resource limits
    /// may differ from one worker to the next. What the program does
    /// before that first line is done once, in the template, and every
    /// worker starts with its result: its memory, and what it opened
    /// (still open in each worker, shared).
    ///
    /// What that means beside an exec'd start:
    /// - **Shared secrets of the process.** Every worker of a template has
    ///   its address-space layout, stack canary and any random state
    ///   seeded before that first line: a worker that leaks its memory
    ///   tells an attacker its siblings' too. For workers that run
    ///   untrusted input through native code, keep [`Exec`](Self::Exec).
    /// - **A program replaced on disk** (a deploy) is not picked up until
    ///   the template exits: templates are keyed by the path, and the
    ///   template is the build that was there when it started.
    /// - `/proc/PID/environ` and `cmdline` of a worker show the template's
    ///   (with `ACTIX_WEBWORKER_TEMPLATE`), not the worker's own
    ///   variables.
    /// - The first start of a command starts the template first and waits
    ///   for it (up to 5 s for a program that never says it is ready,
    ///   after which that command's workers are exec'd; the program was
    ///   run once, with the parent's stdout and stderr).
    ///
    /// Where a template cannot serve, the worker is exec'd as with
    /// [`Exec`](Self::Exec), and nothing else changes: a program that is
    /// not an actix-webworker worker, one that calls `run_if_worker` from
    /// an async `main` or a test harness (a process with a runtime or
    /// more than one thread cannot be forked safely), a transport other
    /// than the local socket, a launcher, a ninth command. A template
    /// that fails once a request has reached it fails that start (the
    /// request's descriptors may be in a fork) and is not asked again.
    /// The template holds one idle process's memory (its resident pages
    /// are shared with the workers forked from it) and exits with the
    /// parent.
    ForkServer,
}
