//! The requests a protocol declares ([`Declare`]): each with its wire
//! name (its Rust path, or a name of its own that outlives renames), its
//! direction, and the serde shapes of the request and its answer. Both
//! sides read the same declaration from the protocol they share
//! (`Protocol::requests`): the session derives each request's tag from
//! it, checks that the declared requests are answered, and hashes it into
//! the fingerprint.

use std::any::TypeId;

use actix::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::streamed::StreamRequest;

/// The requests a protocol declares; see
/// [`Protocol::requests`](crate::Protocol::requests).
#[derive(Default)]
pub struct Declare {
    pub(crate) requests: Vec<Declared>,
}

/// One declared request.
#[derive(Clone, Debug)]
pub(crate) struct Declared {
    pub ty: TypeId,
    /// Its Rust path.
    pub rust: &'static str,
    /// Its wire name.
    pub name: &'static str,
    /// Whether the parent answers it (else the worker).
    pub to_parent: bool,
    /// Whether it is answered by a stream of items (a
    /// [`StreamRequest`](crate::StreamRequest)).
    pub streams: bool,
    /// The shapes of the request and of its answer (of each item, for a
    /// stream).
    pub shape: fn() -> Result<(u64, u64), Untraceable>,
}

/// Why a type's shape cannot be had: the session's `ShapeError`, as this
/// floor can name it (the error types import the protocol's).
#[derive(Clone, Debug)]
pub(crate) struct Untraceable {
    pub ty: &'static str,
    pub why: String,
}

/// A request just declared: give it a wire name of its own with
/// [`named`](DeclaredRequest::named).
pub struct DeclaredRequest<'a>(&'a mut Declared);

impl DeclaredRequest<'_> {
    /// Its wire name: what tags it on the wire instead of its Rust path,
    /// so that renaming or moving the Rust type changes nothing a worker
    /// (one in another language included) sees. Use a name that says
    /// what the request is, unique in the protocol (`"calc.mul"`).
    pub fn named(self, name: &'static str) -> Self {
        self.0.name = name;
        self
    }
}

impl Declare {
    /// Declares `R`, a [`Request`](crate::Request) the parent asks and the
    /// worker answers.
    pub fn request<R>(&mut self) -> DeclaredRequest<'_>
    where
        R: Message + Serialize + DeserializeOwned + Send + 'static,
        R::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        self.push::<R>(false, false, request_shape::<R>)
    }

    /// Declares `R`, a [`Request`](crate::Request) the worker asks
    /// ([`Parent::ask`](crate::Parent::ask)) and the parent answers
    /// ([`WorkerBuilder::serve`](crate::WorkerBuilder::serve)).
    pub fn request_to_parent<R>(&mut self) -> DeclaredRequest<'_>
    where
        R: Message + Serialize + DeserializeOwned + Send + 'static,
        R::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        self.push::<R>(true, false, request_shape::<R>)
    }

    /// Declares `R`, a [`StreamRequest`](crate::StreamRequest) the parent
    /// asks ([`AskStream`](crate::AskStream)) and the worker answers with
    /// a stream of items ([`Requests::stream`](crate::Requests::stream)).
    /// The shape of its item joins the fingerprint.
    pub fn stream<R: StreamRequest>(&mut self) -> DeclaredRequest<'_> {
        self.push::<R>(false, true, stream_shape::<R>)
    }

    /// Declares `R`, a [`StreamRequest`](crate::StreamRequest) the worker
    /// asks ([`Parent::ask_stream`](crate::Parent::ask_stream)) and the
    /// parent answers ([`WorkerBuilder::serve_stream`](crate::WorkerBuilder::serve_stream)).
    pub fn stream_to_parent<R: StreamRequest>(&mut self) -> DeclaredRequest<'_> {
        self.push::<R>(true, true, stream_shape::<R>)
    }

    fn push<R: 'static>(
        &mut self,
        to_parent: bool,
        streams: bool,
        shape: fn() -> Result<(u64, u64), Untraceable>,
    ) -> DeclaredRequest<'_> {
        let rust = std::any::type_name::<R>();
        let ty = TypeId::of::<R>();
        self.requests.push(Declared { ty, rust, name: rust, to_parent, streams, shape });
        let last = self.requests.len() - 1;
        DeclaredRequest(&mut self.requests[last])
    }
}

/// The shapes of a streamed request and of its item.
fn stream_shape<R: StreamRequest>() -> Result<(u64, u64), Untraceable> {
    Ok((<Traced as Shapes>::shape::<R>()?, <Traced as Shapes>::shape::<R::Item>()?))
}

/// The shapes of a request and of its answer, as the session's tracer
/// sees them.
fn request_shape<R>() -> Result<(u64, u64), Untraceable>
where
    R: Message + Serialize + DeserializeOwned + 'static,
    R::Result: Serialize + DeserializeOwned + 'static,
{
    Ok((<Traced as Shapes>::shape::<R>()?, <Traced as Shapes>::shape::<R::Result>()?))
}

/// The serde shape of a type, as a number: what both sides compare.
/// Implemented for [`Traced`] where the tracer is (`session/shape.rs`), so
/// that this floor names it without importing a higher one.
pub(crate) trait Shapes {
    fn shape<T: Serialize + DeserializeOwned + 'static>() -> Result<u64, Untraceable>;
}

/// The implementor of [`Shapes`].
pub(crate) struct Traced;

/// A protocol for the tests: `test_protocol!(Name, |d| body)` declares the
/// requests `body` declares on `d` (posts are `u32` both ways).
#[cfg(test)]
macro_rules! test_protocol {
    ($vis:vis $name:ident, |$d:ident| $body:expr) => {
        $vis struct $name;
        impl $crate::protocol::Protocol for $name {
            type ToWorker = u32;
            type FromWorker = u32;
            fn requests($d: &mut $crate::declare::Declare) {
                $body;
            }
        }
    };
}
#[cfg(test)]
pub(crate) use test_protocol;
