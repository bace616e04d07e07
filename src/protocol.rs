//! The vocabulary both sides share: the [`Protocol`] naming the message
//! types and declaring its requests (`declare.rs`, with their wire names),
//! the [`Codec`] their payloads are written with, a message as received
//! ([`Received`], with its descriptors), typed requests ([`Request`]), and
//! [`NoPosts`] for a worker that only answers requests.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use actix::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::declare::{Declare, Declared};

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
///
/// A protocol may also declare its [`Request`]s ([`requests`](Protocol::requests)):
/// each then has a wire name of its own, is checked at start-up (a worker
/// that does not answer one refuses to start, naming it), and joins the
/// fingerprint.
pub trait Protocol: 'static {
    /// What the parent posts to the worker ([`NoPosts`] for a worker that
    /// only answers requests).
    type ToWorker: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker posts to the parent ([`NoPosts`] for none).
    type FromWorker: Serialize + DeserializeOwned + Send + 'static;
    /// A version of your own, part of the fingerprint.
    const VERSION: u32 = 0;

    /// Declares the requests of the protocol, both ways, each with its
    /// wire name: the name that tags it on the wire, by default its Rust
    /// path, or one of your own that outlives renames and that a worker
    /// in another language answers by (see `PROTOCOL.md`, "Requests").
    ///
    /// ```
    /// use actix::Message;
    /// use actix_webworker::{wire_name, Declare, Protocol};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Message, Serialize, Deserialize)]
    /// #[rtype(result = "u64")]
    /// struct Sum(Vec<u64>);
    ///
    /// #[derive(Message, Serialize, Deserialize)]
    /// #[rtype(result = "i64")]
    /// struct Mul(i64, i64);
    ///
    /// #[derive(Message, Serialize, Deserialize)]
    /// #[rtype(result = "String")]
    /// struct GetConfig(String);
    ///
    /// struct Calc;
    /// impl Protocol for Calc {
    ///     type ToWorker = ();
    ///     type FromWorker = ();
    ///     fn requests(declare: &mut Declare) {
    ///         declare.request::<Sum>();                 // named by its path
    ///         declare.request::<Mul>().named("mul");     // named for good
    ///         declare.request_to_parent::<GetConfig>().named("config");
    ///     }
    /// }
    ///
    /// assert_eq!(wire_name::<Calc, Mul>(), "mul");
    /// assert!(wire_name::<Calc, Sum>().ends_with("Sum"));
    /// ```
    ///
    /// What a declaration promises, checked before anything is sent:
    /// every [`request`](Declare::request) is answered by the worker (its
    /// [`WorkerActor::requests`](crate::WorkerActor::requests) registers
    /// it; a worker that misses one refuses to start, and the parent gets
    /// [`WireError::Unanswered`](crate::WireError::Unanswered) naming it),
    /// and every [`request_to_parent`](Declare::request_to_parent) is
    /// served by the parent ([`WorkerBuilder::serve`](crate::WorkerBuilder::serve);
    /// `start()` fails with [`SpawnError::Unserved`](crate::SpawnError::Unserved)
    /// otherwise). The declared names, directions and the serde shapes of
    /// each request and its answer join the fingerprint, so a worker built
    /// from another declaration is refused at the handshake. A request
    /// that is not declared still works, named by its Rust path.
    fn requests(declare: &mut Declare) {
        let _ = declare;
    }
}

/// The posts of a protocol that has none: a type with no values. A worker
/// that only answers requests sets `type ToWorker = NoPosts` (and
/// `FromWorker` too if it never posts back); the parent then cannot post
/// to it, which the compiler checks. Its actor still needs a handler for
/// posts that never come, which [`no_posts!`](crate::no_posts) writes:
///
/// ```
/// use actix::prelude::*;
/// use actix_webworker::{Declare, NoPosts, Parent, Protocol, Requests, WorkerActor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Sum(Vec<u64>);
///
/// struct Calc;
/// impl Protocol for Calc {
///     type ToWorker = NoPosts;
///     type FromWorker = NoPosts;
///     fn requests(declare: &mut Declare) {
///         declare.request::<Sum>().named("sum");
///     }
/// }
///
/// struct Adder { parent: Parent<Calc> }
/// impl Actor for Adder { type Context = Context<Self>; }
/// impl Handler<Sum> for Adder {
///     type Result = u64;
///     fn handle(&mut self, msg: Sum, _: &mut Context<Self>) -> u64 { msg.0.iter().sum() }
/// }
/// impl WorkerActor for Adder {
///     type Protocol = Calc;
///     fn requests(requests: &mut Requests<Self>) {
///         requests.answer::<Sum>();
///     }
/// }
/// actix_webworker::no_posts!(Adder);
/// ```
///
/// (Rust allows no blanket `Handler` impl for every actor in this crate:
/// the orphan rule forbids an impl of actix's trait for a type parameter,
/// hence the macro.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum NoPosts {}

/// Writes the handler of [`NoPosts`] for a worker's actor that takes no
/// posts: `actix_webworker::no_posts!(MyWorker);` beside its
/// `impl WorkerActor`. The handler can never run (`NoPosts` has no values).
#[macro_export]
macro_rules! no_posts {
    ($actor:ty) => {
        impl $crate::__private::actix::Handler<$crate::Received<$crate::NoPosts>> for $actor {
            type Result = ();

            fn handle(
                &mut self,
                msg: $crate::Received<$crate::NoPosts>,
                _: &mut <$actor as $crate::__private::actix::Actor>::Context,
            ) {
                match msg.data {}
            }
        }
    };
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

/// The Rust path of request type `R` (`std::any::type_name`): its wire
/// name when its protocol declares no other (see [`wire_name`]).
pub fn request_name<R: Request>() -> &'static str {
    std::any::type_name::<R>()
}

/// The name that tags request type `R` on the wire in protocol `P`: the
/// name `P` declares for it ([`DeclaredRequest::named`](crate::DeclaredRequest::named)),
/// else its Rust path. The tag is the 64-bit FNV-1a hash of it (see
/// `PROTOCOL.md`); a worker written in another language answers, or asks,
/// requests by these names.
pub fn wire_name<P: Protocol, R: Request>() -> &'static str {
    let found = declared::<P>().into_iter().find(|d| d.ty == std::any::TypeId::of::<R>());
    found.map_or_else(request_name::<R>, |d| d.name)
}

/// What protocol `P` declares.
pub(crate) fn declared<P: Protocol>() -> Vec<Declared> {
    let mut declare = Declare::default();
    P::requests(&mut declare);
    declare.requests
}

/// The tag of the request type whose wire name is `name`.
pub(crate) fn tag_of_name(name: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(name.as_bytes());
    h.finish()
}

/// The tag of request type `R` when no protocol names it: from its Rust
/// path, which is the same for every build of one program (a worker of
/// another program must be built by the same compiler for its tags to
/// match).
pub(crate) fn tag_of<R: 'static>() -> u64 {
    tag_of_name(std::any::type_name::<R>())
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
