//! The parent side: options ([`builder`]), launching and reaping processes
//! ([`spawn`]), the `Worker` actor ([`worker`]), the task that follows one
//! child process ([`link`]), and the events it reports ([`events`]).

pub(crate) mod builder;
pub(crate) mod events;
pub(crate) mod lifecycle;
pub(crate) mod link;
pub(crate) mod messages;
pub(crate) mod options;
pub(crate) mod output;
pub(crate) mod process;
pub(crate) mod sink;
pub(crate) mod spawn;
pub(crate) mod worker;
