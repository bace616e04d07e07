//! The error types, one per boundary: starting a worker ([`SpawnError`]),
//! talking to one ([`WorkerError`]), and what arrives on the wire
//! ([`WireError`]). The two plain facts errors carry, how a process ended
//! ([`ExitStatus`]) and what a panic said ([`ErrorReport`]), are in
//! `report.rs`.

use std::io;
use std::path::PathBuf;

pub use crate::report::{ErrorReport, ExitStatus, Lost};

/// Something wrong with what came over the socket, or with what was about
/// to be sent. A message that does not decode (`Decode`) leaves the
/// connection up; anything wrong in the framing of what arrives ends it. A
/// refused outgoing message (`Encode`, `TooLarge`, `TooManyFds`) is never
/// sent, and nothing else is affected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A message shorter than its header says.
    #[error("truncated message: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The connection ended in the middle of a message.
    #[error("the connection ended in the middle of a message")]
    CutOff,
    /// A header with an unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A message of a kind that is not allowed here.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// A traced request whose trace context is malformed (ids of zeros,
    /// reserved flags); the request itself is answered with a failure.
    #[error("bad trace context: {0}")]
    BadTraceContext(&'static str),
    /// The first message was not a hello.
    #[error("the peer did not start with a hello (is it an actix-webworker worker?)")]
    NotAHello,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Ours.
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peer was built with other message types.
    #[error(
        "message types differ: our fingerprint is {ours:016x}, the peer's is {theirs:016x} \
         (was the worker built from another version of the protocol?)"
    )]
    FingerprintMismatch {
        /// Ours.
        ours: u64,
        /// The peer's.
        theirs: u64,
    },
    /// The peer's hello names a codec we do not know.
    #[error("the peer's hello names codec {0}, which we do not know")]
    UnknownCodec(u8),
    /// The worker's hello names another codec than the parent's.
    #[error("codec mismatch: we write {ours:?}, the peer writes {theirs:?}")]
    CodecMismatch {
        /// Ours.
        ours: crate::protocol::Codec,
        /// The peer's.
        theirs: crate::protocol::Codec,
    },
    /// A message over the configured size limit.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A payload that does not decode as the expected type.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// A batch larger than any writer makes (see `PROTOCOL.md`).
    #[error("batch of {size} bytes is over the limit of {limit} bytes")]
    BatchTooLarge {
        /// Its size.
        size: usize,
        /// The largest batch taken.
        limit: usize,
    },
    /// The worker did not finish its handshake in time (see
    /// [`WorkerBuilder::handshake_timeout`](crate::WorkerBuilder::handshake_timeout)).
    #[error("no handshake from the worker within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The worker was started for an entry it does not have (see
    /// [`WorkerBuilder::entry`](crate::WorkerBuilder::entry) and
    /// [`run_if_worker`](crate::run_if_worker)). Certain to fail again: never
    /// restarted.
    #[error("the worker has no entry named {entry:?}; it knows {known:?}")]
    UnknownEntry {
        /// The entry asked for.
        entry: String,
        /// The entries the worker registers.
        known: Vec<String>,
    },
    /// The worker does not answer requests its protocol declares (see
    /// [`Protocol::requests`](crate::Protocol::requests)): it refused to
    /// start. Certain to fail again: never restarted.
    #[error("the worker's entry {entry:?} does not answer {requests:?}, which its protocol declares: register them in WorkerActor::requests")]
    Unanswered {
        /// The entry it was started for.
        entry: String,
        /// The requests it does not answer, by their Rust paths.
        requests: Vec<String>,
    },
    /// The worker's hello came from another process than the one started.
    #[error("the hello came from process {theirs}, which is not the worker started ({ours})")]
    WrongPeer {
        /// The process started.
        ours: u32,
        /// The process the hello names.
        theirs: u32,
    },
    /// A value that could not be encoded.
    #[error("could not encode message: {0}")]
    Encode(String),
    /// A value that skips a field as it is written (`skip_serializing`, or
    /// a `skip_serializing_if` that holds for it): bincode writes no field
    /// names, so the peer would read another value. Refused before it is
    /// sent, in debug builds (release builds rely on the check of the
    /// types at `start()`, which finds skips only for the values it tries).
    #[error(
        "{ty} cannot be sent: field `{field}` of `{strukt}` is skipped when written, and bincode          would read the next field's bytes as its own (drop the skip_serializing_if, or use the          JSON codec)"
    )]
    SkippedField {
        /// The message's type.
        ty: &'static str,
        /// The struct or variant that skips a field.
        strukt: &'static str,
        /// The field skipped.
        field: &'static str,
    },
    /// A WebSocket text frame (only binary messages are used).
    #[error("unexpected text frame")]
    TextFrame,
    /// A message that claims descriptors that never arrived.
    #[error("message claims {claimed} descriptors, {available} arrived")]
    MissingFds {
        /// What the header claims.
        claimed: usize,
        /// What is there.
        available: usize,
    },
    /// Descriptors arrived that no message claimed (a peer sending
    /// descriptors with no message to carry them); they are closed.
    #[error("{count} descriptors arrived that no message claimed")]
    UnclaimedFds {
        /// How many.
        count: usize,
    },
    /// A shared buffer ([`SharedBytes`](crate::SharedBytes)) that came with
    /// a message was refused: its descriptor missing, not a memfd sealed
    /// against writing, shrinking and growing, or smaller than announced.
    /// Nothing of it was mapped.
    #[error("a shared buffer was refused: {why}")]
    SharedBuffer {
        /// What was wrong with it.
        why: String,
    },
    /// Too many descriptors on one message.
    #[error("{count} descriptors on one message, the limit is {limit}")]
    TooManyFds {
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The WebSocket or the socket under it failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Nothing came from the worker for this long, pings included (see
    /// [`WorkerBuilder::heartbeat`](crate::WorkerBuilder::heartbeat)): the
    /// peer is taken for lost, its process (or launcher) is killed, and the
    /// exit that follows is that of the kill, not one the worker chose.
    #[error("nothing heard from the worker for {0:?}: taken for lost")]
    Silent(std::time::Duration),
    /// A connection to a remote worker's port was refused before anything
    /// was served: it gave another token than the one made for this
    /// launch, or none in time. The parent goes on waiting for the worker
    /// it started.
    #[error("a connection from {peer} was refused: {why}")]
    AuthRefused {
        /// Where it came from.
        peer: String,
        /// Why.
        why: String,
    },
    /// More connections to a remote worker's port were refused, `count` of
    /// them since the last refusal told: after one
    /// [`AuthRefused`](WireError::AuthRefused), the port tells at most one
    /// refusal event a second, so that whoever can reach the port (a
    /// scanner, a flood) cannot fill the events of its worker.
    #[error("{count} more connections refused (the last from {peer}: {why})")]
    AuthRefusedMore {
        /// How many, since the last refusal told.
        count: u64,
        /// Where the last came from.
        peer: String,
        /// Why the last was refused.
        why: String,
    },
    /// The other side sent an item of a streamed answer when the asker's
    /// window had no room left for it (it had read `received` bytes of
    /// items and granted `granted`): the stream fails with this, and is
    /// cancelled.
    #[error("a stream item past the window: {received} bytes received of {granted} granted")]
    PastWindow {
        /// The bytes of items the asker had granted.
        granted: u64,
        /// The bytes of items it had received before this one.
        received: u64,
    },
    /// The other side sent a stream item or end for request `0`, which
    /// this side never asked: reported, and dropped.
    #[error("a stream frame for request {0}, never asked")]
    UnknownStream(u64),
    /// The other side asked request type `tag` in the other form: a
    /// streamed one as one answer, or the other way.
    #[error("the request with tag {0:016x} was asked in the wrong form (streamed or not)")]
    WrongForm(u64),
    /// The other side asked request `0` while this side was still
    /// answering a request of that id (ids are unique on a connection):
    /// reported, and nothing is done or sent for it.
    #[error("a request under id {0}, which is still being answered")]
    DuplicateId(u64),
}

impl WireError {
    /// Whether another process started the same way would meet this error
    /// again: the worker is of another protocol version, was built with
    /// other message types, or has no such entry. Such a worker is never
    /// restarted.
    pub fn is_certain(&self) -> bool {
        matches!(
            self,
            WireError::VersionMismatch { .. }
                | WireError::FingerprintMismatch { .. }
                | WireError::UnknownCodec(_)
                | WireError::CodecMismatch { .. }
                | WireError::UnknownEntry { .. }
                | WireError::Unanswered { .. }
        )
    }
}

/// Why a type cannot go through the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ty} cannot be sent: {why}")]
pub struct ShapeError {
    /// The type (its Rust name).
    pub ty: &'static str,
    /// What about it.
    pub why: String,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The program could not be run.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket or another resource could not be set up.
    #[error("could not set up the worker's {what}: {source}")]
    Setup {
        /// Which resource.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `start()` was called outside a running actix System.
    #[error("Worker::start must be called inside a running actix System")]
    NoSystem,
    /// A pool has no host for another member: every host given to
    /// [`hosts`](crate::PoolBuilder::hosts) is at its
    /// [`limit`](crate::Host::limit), or (`down`) those with room are taken
    /// for down. The pool tries again when the first comes back.
    #[error("no host for another member (of {hosts}: {})", if *down { "those with room are down" } else { "all full" })]
    NoHost {
        /// How many hosts the pool has.
        hosts: usize,
        /// Some have room, but are down for now.
        down: bool,
    },
    /// A message type of the protocol (or of a request) that cannot go
    /// through the wire; see [`Protocol`](crate::Protocol).
    #[error("{0}")]
    Protocol(#[from] ShapeError),
    /// Requests the protocol declares the parent answers
    /// ([`Declare::request_to_parent`](crate::Declare::request_to_parent)) that
    /// no [`serve`](crate::WorkerBuilder::serve) answers, by their Rust paths.
    #[error(
        "the parent serves none of {0:?}, which the protocol declares it answers: add .serve(..)"
    )]
    Unserved(Vec<String>),
    /// The worker's data ([`WorkerBuilder::data`](crate::WorkerBuilder::data))
    /// cannot be sent: over the largest message, or not encodable.
    #[error("the worker's data cannot be sent: {0}")]
    Data(WireError),
    /// An option the worker cannot run with.
    #[error("invalid worker option: {0}")]
    Option(String),
    /// A launcher that ends in a shell's `-c` (`["sh", "-c"]`,
    /// `["ssh", "host", "bash", "-lc"]`): the shell would take the first
    /// word of the worker's command line as its whole script and the rest
    /// as its arguments, so the worker would never start. The working
    /// forms are named in the message.
    #[error(
        "the launcher {launcher:?} ends in a shell's -c: the shell would run only the first word \
         of the worker's command; use [\"sh\", \"-c\", \"exec \\\"$@\\\"\", \"sh\"] \
         (a shell that runs what follows it) or [\"env\"]"
    )]
    SwallowingLauncher {
        /// The launcher as given.
        launcher: Vec<std::ffi::OsString>,
    },
    /// This process was started as a worker and is starting workers before
    /// it ran its own entry: code above `run_if_worker` in `main`, which
    /// every worker would run again, without end.
    #[error(
        "this process was started as a worker and has not run its worker entry yet: \
         call run_if_worker on the first line of main, before any code that starts workers \
         (in a test binary with the standard harness, which has no main of yours: put \
         actix_webworker::test_workers! in the tests' module)"
    )]
    NotYetAWorker,
}

/// Why a message or request to a worker (or to the parent) did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The queue of unsent messages is full.
    #[error("the outgoing queue is full ({limit} messages)")]
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// The message could not be encoded or is too large.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The worker process has exited (and will not be restarted).
    #[error("worker exited with {0}")]
    Exited(ExitStatus),
    /// The worker is shutting down and takes no more messages.
    #[error("worker is terminating")]
    Terminating,
    /// The connection to the other side is gone.
    #[error("the connection to the other side is closed")]
    Disconnected,
    /// No answer came within the request's timeout; a late one is dropped.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The handler of the request panicked (the report says where).
    #[error("the request's handler panicked: {0}")]
    Panicked(ErrorReport),
    /// The other side has no handler for this request type, named as its asker knows it.
    #[error("the other side does not answer this request ({0})")]
    Unhandled(String),
    /// The other side could not decode the request or encode its answer.
    #[error("the other side failed: {0}")]
    Remote(String),
    /// A streamed answer ended with an error its producer raised (an
    /// `Err` item of [`Streamed::fallible`](crate::Streamed::fallible)),
    /// its text.
    #[error("the stream failed: {0}")]
    StreamFailed(String),
    /// Descriptors cannot go to this worker: its connection is TCP (see
    /// [`Transport`](crate::Transport)). Shared buffers go as bytes.
    #[error("descriptors cannot cross to a remote worker")]
    NoDescriptors,
}
