//! The shape of a protocol's message types, as serde sees them: what both
//! sides compare at the handshake, and the check that bincode can carry
//! them.
//!
//! The shape is traced from the types' `Deserialize` (with
//! `serde-reflection`): every struct, enum, variant and field, by name and
//! format, whatever crate or compiler built them. Two builds whose types
//! have the same shape understand each other; a changed field, variant or
//! type is refused at the handshake. The same tracing finds what bincode
//! cannot carry, before any message is sent:
//!
//! - types read with `deserialize_any` (`#[serde(untagged)]`, internally or
//!   adjacently tagged enums): bincode cannot tell what comes next without
//!   the field names it does not write;
//! - types bincode cannot write (`#[serde(flatten)]`, maps of unknown
//!   length) or would read back otherwise than they were written: every
//!   sample value the tracing makes goes through bincode and back;
//! - fields skipped when writing (`#[serde(skip_serializing_if = ..)]`):
//!   the reader expects them, and would read the next field's bytes as
//!   this one's. Found when the values tried are skipped: the tracing's
//!   samples, and the "zero" value (every option `None`, every sequence
//!   and string empty, every number 0); a predicate none of them meets
//!   goes unseen.
//!
//! A type whose `Deserialize` cannot be traced (one that checks its input,
//! as some date or decimal types do) falls back to its Rust type name.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_reflection::{Samples, Tracer, TracerConfig};

use crate::declare::{Shapes, Traced, Untraceable};
use crate::error::ShapeError;
use crate::protocol::{Fnv, NoPosts, Protocol};
use crate::wire::codec;

/// The shape of one type: a fingerprint of it, or why it cannot be sent.
/// Traced apart from any message being decoded on this thread (see
/// `carry::tracing`).
fn trace<T: Serialize + DeserializeOwned + 'static>() -> Result<u64, ShapeError> {
    crate::wire::shared::carry::tracing(trace_apart::<T>)
}

fn trace_apart<T: Serialize + DeserializeOwned + 'static>() -> Result<u64, ShapeError> {
    let ty = std::any::type_name::<T>();
    if TypeId::of::<T>() == TypeId::of::<NoPosts>() {
        // No values to trace, nothing ever written: its name says it all.
        return Ok(by_name("NoPosts"));
    }
    let fail = |why: String| ShapeError { ty, why };
    let mut tracer = Tracer::new(TracerConfig::default());
    ours(&mut tracer).map_err(fail)?;
    let (root, samples) = match tracer.trace_simple_type::<T>() {
        Ok(traced) => traced,
        // What serde would ask of bincode that bincode cannot do.
        Err(serde_reflection::Error::NotSupported(what)) => {
            return Err(fail(match what {
                "deserialize_any" => "it is read with deserialize_any (#[serde(untagged)], or an \
                     internally or adjacently tagged enum), which bincode cannot do; use a plain \
                     (externally tagged) enum"
                    .into(),
                "deserialize_identifier" => "it is read by field names (#[serde(flatten)]), \
                     which bincode does not write; nest the struct instead"
                    .into(),
                other => format!("it is read with {other}, which bincode cannot do"),
            }))
        }
        Err(e) => {
            // Not traceable (a type that checks what it reads): its name.
            tracing::debug!(ty, error = %e, "type not traced; fingerprinted by name");
            return Ok(by_name(ty));
        }
    };
    // The zero value (options None, sequences empty) is the one a field
    // is most often skipped for when written.
    let zero = codec::zero::<T>();
    // Written back, each sample must have the shape it was read with: a
    // field skipped when writing is not.
    let mut written = Samples::new();
    for sample in samples.iter().chain(zero.as_ref()) {
        if let Err(e) = tracer.trace_value(&mut written, sample) {
            // The tracer's own account (both formats, hundreds of bytes of
            // its internals) is for whoever debugs this crate.
            tracing::debug!(ty, error = %e, "a sample written back has another shape");
            return Err(fail(
                "a field is skipped when it is written (#[serde(skip_serializing_if)]?): \
                 bincode would then read the next field's bytes as this one's; write every \
                 field, with an Option where it may be missing"
                    .into(),
            ));
        }
    }
    // And through bincode itself, each sample must come back as it went:
    // what bincode cannot write (`#[serde(flatten)]`) or would read back
    // wrong is found here.
    for sample in samples.iter().chain(zero.as_ref()) {
        let mut first = Vec::new();
        codec::encode_into(sample, &mut first)
            .map_err(|e| fail(format!("bincode cannot write it (#[serde(flatten)]?): {e}")))?;
        let back: T = codec::decode(&first)
            .map_err(|e| fail(format!("bincode cannot read back what it wrote: {e}")))?;
        let mut again = Vec::new();
        codec::encode_into(&back, &mut again).map_err(|e| fail(e.to_string()))?;
        if again != first {
            return Err(fail("bincode reads back something else than was written".into()));
        }
    }
    let registry = tracer.registry().map_err(|e| fail(e.to_string()))?;
    let mut h = Fnv::new();
    // The type itself (a container's name, or the whole format of one
    // that is none: a tuple, a number, a sequence), then every container
    // it holds: the registry is ordered (a BTreeMap), its text canonical.
    h.write(format!("{root:?}").as_bytes());
    h.write(format!("{registry:?}").as_bytes());
    Ok(h.finish())
}

/// Enums of ours that a message may hold, traced whole first (the tracing
/// of a type explores the variants of that type itself, not of the enums
/// inside it): shared buffers, and channels' ends.
fn ours(tracer: &mut Tracer) -> Result<(), String> {
    use crate::wire::shared::carry::EndOnWire;
    use crate::wire::shared::SharedBytes;
    if let Err(e) = tracer.trace_simple_type::<SharedBytes>() {
        return Err(format!("the shape of SharedBytes: {e}"));
    }
    if let Err(e) = tracer.trace_simple_type::<EndOnWire>() {
        return Err(format!("the shape of a channel's end: {e}"));
    }
    Ok(())
}

/// The fingerprint of a type known by its name alone.
fn by_name(name: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(name.as_bytes());
    h.finish()
}

/// The shape of one type (a request, its answer, a worker's data), or
/// why it cannot go through the wire; traced once per type.
pub(crate) fn shape_of<T: Serialize + DeserializeOwned + 'static>() -> Result<u64, ShapeError> {
    cached::<T>(|| trace::<T>())
}

/// How the ground floor (`declare.rs`) reaches the tracer.
impl Shapes for Traced {
    fn shape<T: Serialize + DeserializeOwned + 'static>() -> Result<u64, Untraceable> {
        shape_of::<T>().map_err(|ShapeError { ty, why }| Untraceable { ty, why })
    }
}

/// `compute`'s result for type `K`, computed once.
fn cached<K: 'static>(
    compute: impl FnOnce() -> Result<u64, ShapeError>,
) -> Result<u64, ShapeError> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Result<u64, ShapeError>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(known) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&TypeId::of::<K>()) {
        return known.clone();
    }
    let computed = compute();
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(TypeId::of::<K>(), computed.clone());
    computed
}

/// The fingerprint both sides compare during the handshake: the shapes of
/// the protocol's message types, its `VERSION` and the requests it
/// declares; or why one of them cannot be sent. Computed once per
/// protocol.
pub(crate) fn fingerprint<P: Protocol>() -> Result<u64, ShapeError> {
    cached::<P>(|| {
        let mut h = Fnv::new();
        h.write(&cached::<P::ToWorker>(trace::<P::ToWorker>)?.to_le_bytes());
        h.write(&cached::<P::FromWorker>(trace::<P::FromWorker>)?.to_le_bytes());
        h.write(&P::VERSION.to_le_bytes());
        super::declared::table::<P>()?.hash_into(&mut h);
        Ok(h.finish())
    })
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::{fingerprint, trace};
    use crate::protocol::Protocol;

    #[derive(Serialize, Deserialize)]
    enum Plain {
        A { x: u32, name: String },
        B(Vec<u8>),
        C,
    }

    #[derive(Serialize, Deserialize)]
    enum PlainRenamed {
        A { x: u64, name: String },
        B(Vec<u8>),
        C,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        A(u32),
        B(String),
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Internally {
        A { x: u32 },
    }

    #[derive(Serialize, Deserialize)]
    struct Inner {
        y: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct Flattened {
        x: u32,
        #[serde(flatten)]
        inner: Inner,
    }

    #[derive(Serialize, Deserialize)]
    struct Skipping {
        #[serde(skip_serializing_if = "Option::is_none")]
        maybe: Option<u32>,
        after: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct SkippingEmpty {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        items: Vec<u32>,
        after: u32,
    }

    #[test]
    fn plain_types_have_a_shape_that_changes_with_a_field() {
        let a = trace::<Plain>().unwrap();
        assert_eq!(a, trace::<Plain>().unwrap());
        assert_ne!(a, trace::<PlainRenamed>().unwrap(), "a field's type changed");
        // Types that are no container (no name of their own) too.
        assert_ne!(trace::<(String, u32)>().unwrap(), trace::<(String, u64)>().unwrap());
        assert_ne!(trace::<u32>().unwrap(), trace::<String>().unwrap());
    }

    #[test]
    fn what_bincode_cannot_carry_is_named() {
        for (err, needle) in [
            (trace::<Untagged>().unwrap_err(), "deserialize_any"),
            (trace::<Internally>().unwrap_err(), "deserialize_any"),
            (trace::<Flattened>().unwrap_err(), "flatten"),
            (trace::<Skipping>().unwrap_err(), "skipped"),
            (trace::<SkippingEmpty>().unwrap_err(), "skipped"),
        ] {
            assert!(err.why.contains(needle), "{}: {}", err.ty, err.why);
        }
    }

    /// The same shapes, as a separately built worker has them: other Rust
    /// paths, the same serde names and formats.
    mod elsewhere {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub enum Plain {
            A { x: u32, name: String },
            B(Vec<u8>),
            C,
        }
    }

    struct Here;
    impl Protocol for Here {
        type ToWorker = Plain;
        type FromWorker = u32;
    }
    struct There;
    impl Protocol for There {
        type ToWorker = elsewhere::Plain;
        type FromWorker = u32;
    }
    struct Changed;
    impl Protocol for Changed {
        type ToWorker = PlainRenamed;
        type FromWorker = u32;
    }
    struct Bumped;
    impl Protocol for Bumped {
        type ToWorker = Plain;
        type FromWorker = u32;
        const VERSION: u32 = 2;
    }

    #[test]
    fn the_fingerprint_is_the_shape_not_the_rust_path() {
        let here = fingerprint::<Here>().unwrap();
        assert_eq!(here, fingerprint::<There>().unwrap(), "same shapes, other paths");
        assert_ne!(here, fingerprint::<Changed>().unwrap(), "a field's type changed");
        assert_ne!(here, fingerprint::<Bumped>().unwrap(), "VERSION bumped");
    }

    /// Protocols that differ in what they declare.
    mod declaring {
        use actix::Message;
        use serde::{Deserialize, Serialize};

        use crate::declare::test_protocol;

        #[derive(Message, Serialize, Deserialize)]
        #[rtype(result = "i64")]
        pub struct Mul(i64, i64);

        /// `Mul` renamed in Rust, its serde name kept.
        #[derive(Message, Serialize, Deserialize)]
        #[rtype(result = "i64")]
        #[serde(rename = "Mul")]
        pub struct Times(i64, i64);

        test_protocol!(pub Nothing, |d| {
            let _ = d;
        });
        test_protocol!(pub Named, |d| d.request::<Mul>().named("mul"));
        test_protocol!(pub Renamed, |d| d.request::<Times>().named("mul"));
        test_protocol!(pub OtherName, |d| d.request::<Mul>().named("times"));
        test_protocol!(pub ToParent, |d| d.request_to_parent::<Mul>().named("mul"));
        test_protocol!(pub OneName, |d| {
            d.request::<Mul>().named("calc");
            d.request::<Times>().named("calc");
        });
    }

    #[test]
    fn the_declaration_joins_the_fingerprint_but_not_the_rust_path() {
        use declaring::*;
        let plain = fingerprint::<Nothing>().unwrap();
        let named = fingerprint::<Named>().unwrap();
        assert_ne!(plain, named, "declared requests change it");
        assert_eq!(named, fingerprint::<Renamed>().unwrap(), "a rename with the same serde name");
        assert_ne!(named, fingerprint::<OtherName>().unwrap(), "another wire name");
        assert_ne!(named, fingerprint::<ToParent>().unwrap(), "the other direction");
        assert!(fingerprint::<OneName>().is_err(), "one wire name twice: the start fails");
    }
}
