//! The builder's choice of how a worker's process is made
//! ([`StartMethod`]): apart from `builder.rs`, which the options it reads
//! (`options.rs`, and through it `start_method.rs`) must not import back.

use super::builder::WorkerBuilder;
use super::start_method::StartMethod;
use crate::protocol::Protocol;

impl<P: Protocol, K> WorkerBuilder<P, K> {
    /// How the worker's process is made: exec'd (the default) or forked
    /// from a template ([`StartMethod::ForkServer`]), which starts a
    /// worker in a fraction of the time and keeps the parent's event loop
    /// free while many start.
    ///
    /// ```no_run
    /// # use actix_webworker::{Protocol, StartMethod, Worker};
    /// # struct Calc;
    /// # impl Protocol for Calc { type ToWorker = u64; type FromWorker = u64; }
    /// # fn start() -> Result<(), actix_webworker::SpawnError> {
    /// let worker = Worker::<Calc>::builder()
    ///     .entry("calc")
    ///     .start_method(StartMethod::ForkServer)
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.options.spec.start_method = method;
        self
    }
}
