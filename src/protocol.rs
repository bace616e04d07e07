//! The vocabulary both sides share: the [`Protocol`] naming the message
//! types, the [`Codec`] their payloads are written with, a message as
//! received ([`Received`], with its descriptors), and typed requests
//! ([`Request`]).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use actix::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Names the typed messages of one kind of worker. Implement it on a unit
/// struct that both the parent and the worker code can see:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug)]
/// enum ToWorker { Hello { foo: String } }
///
/// #[derive(Serialize, Deserialize, Debug)]
/// enum FromWorker { Test { test: String } }
///
/// struct Echo;
///
/// impl actix_webworker::Protocol for Echo {
///     type ToWorker = ToWorker;
///     type FromWorker = FromWorker;
/// }
/// ```
///
/// At start-up both sides exchange a fingerprint of the protocol: the serde
/// shape of both message types (every struct, enum, variant and field, by
/// name and format, as their `Deserialize` reads them) and
/// [`VERSION`](Protocol::VERSION). A worker built separately, by another
/// compiler even, is accepted when its types have the same shape; one whose
/// types changed (a field's type, a variant) is refused with
/// [`WireError::FingerprintMismatch`](crate::WireError::FingerprintMismatch)
/// instead of decoding garbage. Bump `VERSION` for a change the shape does
/// not show (what a field means).
///
/// The types must be ones bincode can carry: `WorkerBuilder::start` refuses
/// with [`SpawnError::Protocol`](crate::SpawnError::Protocol), naming the
/// type, those read with `deserialize_any` (`#[serde(untagged)]`, internally
/// or adjacently tagged enums), `#[serde(flatten)]`, and fields skipped when
/// written (`#[serde(skip_serializing_if)]`, as far as its common predicates
/// go: write an `Option` instead).
pub trait Protocol: 'static {
    /// What the parent posts to the worker.
    type ToWorker: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker posts to the parent.
    type FromWorker: Serialize + DeserializeOwned + Send + 'static;
    /// A version of your own, part of the fingerprint.
    const VERSION: u32 = 0;
}

/// How a connection's payloads are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2, compact and fast: the default, for workers built from
    /// the same Rust types (see `PROTOCOL.md`, "Payloads").
    #[default]
    Bincode,
    /// JSON (serde_json), self-describing: for workers written in another
    /// language (see `PROTOCOL.md`, "JSON payloads").
    Json,
}

impl Codec {
    /// Its number in the hello.
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            Codec::Bincode => 0,
            Codec::Json => 1,
        }
    }

    /// The codec numbered `n` in a hello, if it is one.
    pub(crate) fn from_wire(n: u8) -> Option<Self> {
        match n {
            0 => Some(Codec::Bincode),
            1 => Some(Codec::Json),
            _ => None,
        }
    }
}

/// A message with the descriptors that were sent along with it.
///
/// `fds` is empty unless descriptors were sent with this very message, so
/// [`fd`](Received::fd) is `Some` only then, like `e.fd` in the original.
#[non_exhaustive]
pub struct Received<M> {
    /// The message.
    pub data: M,
    /// The descriptors sent with it, in the order they were attached.
    pub fds: Vec<OwnedFd>,
    /// Its share of what workers' messages hold of this process, given
    /// back when it is dropped.
    _held: crate::held::Held,
}

impl<M> Received<M> {
    /// A message received, holding `holds` of this process until dropped.
    pub(crate) fn new(data: M, fds: Vec<OwnedFd>, holds: crate::held::Holds) -> Self {
        Received { data, fds, _held: crate::held::Held::take(holds) }
    }

    /// The first descriptor sent with this message, if any.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fds.first().map(AsFd::as_fd)
    }

    /// Takes the first descriptor sent with this message, if any.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }
}

impl<M: 'static> Message for Received<M> {
    type Result = ();
}

impl<M: fmt::Debug> fmt::Debug for Received<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received").field("data", &self.data).field("fds", &self.fds).finish()
    }
}

/// A message that can cross the process boundary as a request: an actix
/// [`Message`] that is a serde type, whose answer (`Message::Result`) is a
/// serde type too. Implemented for every such type; declare a request the
/// actix way:
///
/// ```
/// use actix::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Sum(Vec<u64>);
/// ```
///
/// The worker's actor answers it with an ordinary `Handler<Sum>` (plain,
/// `ResponseFuture` or `ResponseActFuture`), registered in
/// [`WorkerActor::requests`](crate::WorkerActor::requests); the parent asks
/// with `worker.send(Ask::new(Sum(..))).await` and gets
/// `Result<u64, WorkerError>`. A handler whose answer type is not the
/// request's does not compile.
pub trait Request:
    Message<Result = Self::Answer> + Serialize + DeserializeOwned + Send + 'static
{
    /// The answer's type: the message's `Result`.
    type Answer: Serialize + DeserializeOwned + Send + 'static;
}

impl<R> Request for R
where
    R: Message + Serialize + DeserializeOwned + Send + 'static,
    R::Result: Serialize + DeserializeOwned + Send + 'static,
{
    type Answer = R::Result;
}

/// The name that tags request type `R` on the wire: its Rust path
/// (`std::any::type_name`). The tag is the 64-bit FNV-1a hash of it (see
/// `PROTOCOL.md`); a worker written in another language is given these
/// names to answer, or ask, these requests.
pub fn request_name<R: Request>() -> &'static str {
    std::any::type_name::<R>()
}

/// The tag that names request type `R` on the wire: from its Rust path,
/// which is the same for every build of one program (a worker of another
/// program must be built by the same compiler for its tags to match).
pub(crate) fn tag_of<R: 'static>() -> u64 {
    let mut h = Fnv::new();
    h.write(std::any::type_name::<R>().as_bytes());
    h.finish()
}

/// 64-bit FNV-1a: the same for the same bytes in every build, unlike
/// `DefaultHasher`.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
