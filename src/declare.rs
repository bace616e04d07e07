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
    /// The shapes of the request and of its answer.
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
        self.push::<R>(false)
    }

    /// Declares `R`, a [`Request`](crate::Request) the worker asks
    /// ([`Parent::ask`](crate::Parent::ask)) and the parent answers
    /// ([`WorkerBuilder::serve`](crate::WorkerBuilder::serve)).
    pub fn request_to_parent<R>(&mut self) -> DeclaredRequest<'_>
    where
        R: Message + Serialize + DeserializeOwned + Send + 'static,
        R::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        self.push::<R>(true)
    }

    fn push<R>(&mut self, to_parent: bool) -> DeclaredRequest<'_>
    where
        R: Message + Serialize + DeserializeOwned + Send + 'static,
        R::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        let rust = std::any::type_name::<R>();
        let shape = request_shape::<R>;
        self.requests.push(Declared { ty: TypeId::of::<R>(), rust, name: rust, to_parent, shape });
        let last = self.requests.len() - 1;
        DeclaredRequest(&mut self.requests[last])
    }
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
