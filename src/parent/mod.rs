//! The parent side: the builder ([`builder`]) and what it builds from
//! ([`options`]); the `Worker` actor ([`worker`]), its messages
//! ([`messages`]; a streamed request's in [`ask_stream`]), a line to it past its mailbox ([`port`]) and the life of
//! its processes ([`lifecycle`]); starting a process ([`spawn`]; exec'd
//! or forked from a template: [`start_method`], [`fork_server`]), on a
//! thread of its own ([`spawner`]), and following it until it is reaped
//! ([`process`]); the port a remote worker connects back to (`remote`,
//! with the `tcp` feature),
//! and a worker started through a launcher ([`launcher`]); the task that
//! runs one process's session ([`link`]), the parent's side of that session
//! ([`side`]), the events it reports ([`events`]) through a window
//! ([`sink`]), and captured output ([`output`]).

pub(crate) mod answered;
pub(crate) mod ask_stream;
pub(crate) mod builder;
pub(crate) mod direct;
pub(crate) mod events;
pub(crate) mod fork_server;
pub(crate) mod launcher;
pub(crate) mod lifecycle;
pub(crate) mod link;
pub(crate) mod messages;
pub(crate) mod options;
pub(crate) mod output;
pub(crate) mod port;
pub(crate) mod process;
#[cfg(feature = "tcp")]
pub(crate) mod remote;
pub(crate) mod side;
pub(crate) mod sink;
pub(crate) mod spawn;
pub(crate) mod spawner;
pub(crate) mod start_method;
pub(crate) mod stats;
pub(crate) mod turn;
pub(crate) mod worker;
