//! The requests of a protocol as a session uses them: each declared
//! request's tag (from its wire name), checked once per protocol (no two
//! with one name or tag, each request and answer a type the wire can
//! carry), and the tag of any request on the asking path, cached so that
//! a stream of asks pays one comparison each.
//!
//! A request its protocol does not declare is tagged by its Rust path, as
//! before declarations existed.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::declare::{Declared, Shapes, Traced, Untraceable};
use crate::error::ShapeError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::{declared, tag_of, tag_of_name, Fnv, Protocol, Request};
use crate::streamed::StreamRequest;

/// One declared request, with its tag.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub declared: Declared,
    pub tag: u64,
    /// The shapes of the request and its answer.
    pub shapes: (u64, u64),
}

/// What a protocol declares, checked.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
}

impl Table {
    fn build<P: Protocol>() -> Result<Table, ShapeError> {
        let mut entries: Vec<Entry> = Vec::new();
        for declared in declared::<P>() {
            let shapes = (declared.shape)().map_err(|e| ShapeError { ty: e.ty, why: e.why })?;
            let tag = tag_of_name(declared.name);
            let fail = |why: String| ShapeError { ty: declared.rust, why };
            if let Some(twin) = entries.iter().find(|e| e.declared.ty == declared.ty) {
                return Err(fail(format!("it is declared twice (as {:?})", twin.declared.name)));
            }
            if let Some(twin) = entries.iter().find(|e| e.tag == tag) {
                let (name, other) = (declared.name, twin.declared.rust);
                return Err(fail(format!("its wire name {name:?} is also that of {other}")));
            }
            entries.push(Entry { declared, tag, shapes });
        }
        Ok(Table { entries })
    }

    /// The declared request of type `ty`.
    fn get(&self, ty: TypeId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.declared.ty == ty)
    }

    /// The declared requests one side must answer (the parent's, or the
    /// worker's) that `answers` says it does not: their Rust paths.
    pub(crate) fn unanswered(&self, parent: bool, answers: impl Fn(u64) -> bool) -> Vec<String> {
        let owed = self.entries.iter().filter(|e| e.declared.to_parent == parent);
        owed.filter(|e| !answers(e.tag)).map(|e| e.declared.rust.to_owned()).collect()
    }

    /// Adds the declaration to a fingerprint: names, directions and
    /// shapes, in the order of the names (not of the declaration, nor of
    /// the Rust paths, which a rename changes). Nothing for a protocol
    /// that declares nothing, whose fingerprint is what it always was.
    pub(crate) fn hash_into(&self, h: &mut Fnv) {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by_key(|e| e.declared.name);
        for e in entries {
            h.write(e.declared.name.as_bytes());
            // Bit 1: answered by a stream (nothing for the others, whose
            // fingerprint is what it always was).
            let streams = u8::from(e.declared.streams) << 1;
            h.write(&[0, u8::from(e.declared.to_parent) | streams]);
            h.write(&e.shapes.0.to_le_bytes());
            h.write(&e.shapes.1.to_le_bytes());
        }
    }
}

/// What protocol `P` declares, checked; once per protocol.
pub(crate) fn table<P: Protocol>() -> Result<Arc<Table>, ShapeError> {
    type Tables = Mutex<HashMap<TypeId, Result<Arc<Table>, ShapeError>>>;
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let tables = TABLES.get_or_init(Default::default);
    let key = TypeId::of::<P>();
    if let Some(known) = tables.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return known.clone();
    }
    let built = Table::build::<P>().map(Arc::new);
    tables.lock().unwrap_or_else(|e| e.into_inner()).insert(key, built.clone());
    built
}

/// The tag of request type `R` in protocol `P`, once `R` and its answer
/// are known to be types the wire can carry. The last few looked up on
/// this thread are remembered: a stream of asks of a few types takes no
/// lock and looks nothing up but these.
pub(crate) fn request_tag<P: Protocol, R: Request>() -> Result<u64, ShapeError> {
    checked_tag::<P, R, R::Answer>()
}

/// The tag of streamed request type `R` in protocol `P`, once `R` and its
/// item are known to be types the wire can carry (as [`request_tag`]).
pub(crate) fn stream_tag<P: Protocol, R: StreamRequest>() -> Result<u64, ShapeError> {
    checked_tag::<P, R, R::Item>()
}

/// The tag of `R`, answered with `A`s, once both are known to be types
/// the wire can carry.
fn checked_tag<P, R, A>() -> Result<u64, ShapeError>
where
    P: Protocol,
    R: Serialize + DeserializeOwned + 'static,
    A: Serialize + DeserializeOwned + 'static,
{
    /// (protocol, request, tag), the newest first.
    type Recent = [Option<(TypeId, TypeId, u64)>; RECENT];
    thread_local! {
        static LAST: RefCell<Recent> = const { RefCell::new([None; RECENT]) };
    }
    let key = (TypeId::of::<P>(), TypeId::of::<R>());
    let known = LAST.with_borrow(|recent| {
        recent.iter().flatten().find(|(p, r, _)| (*p, *r) == key).map(|&(.., tag)| tag)
    });
    if let Some(tag) = known {
        return Ok(tag);
    }
    let tag = table::<P>()?.get(key.1).map_or_else(tag_of::<R>, |e| e.tag);
    let untraceable = |e: Untraceable| ShapeError { ty: e.ty, why: e.why };
    <Traced as Shapes>::shape::<R>().map_err(untraceable)?;
    <Traced as Shapes>::shape::<A>().map_err(untraceable)?;
    LAST.with_borrow_mut(|recent| {
        recent.rotate_right(1);
        recent[0] = Some((key.0, key.1, tag));
    });
    Ok(tag)
}

/// How many request types [`request_tag`] remembers per thread.
const RECENT: usize = 4;

/// The tag of request type `R` in protocol `P`, for a side that answers
/// it (registered once, not on any hot path). A protocol whose
/// declaration is wrong tags it by its Rust path: it fails at start-up
/// all the same, by its fingerprint.
pub(crate) fn answered_tag<P: Protocol, R: 'static>() -> u64 {
    let table = table::<P>().ok();
    table.and_then(|t| t.get(TypeId::of::<R>()).map(|e| e.tag)).unwrap_or_else(tag_of::<R>)
}

/// How request type `R` is named to whoever asked it and got no answer:
/// its Rust path, and its wire name where that is another.
pub(crate) fn describe<P: Protocol, R: 'static>() -> String {
    let rust = std::any::type_name::<R>();
    match table::<P>().ok().and_then(|t| t.get(TypeId::of::<R>()).map(|e| e.declared.name)) {
        Some(name) if name != rust => format!("{rust} (wire name {name:?})"),
        _ => rust.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use actix::Message;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "i64")]
    struct Mul(i64, i64);

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "u64")]
    struct Sum(Vec<u64>);

    /// A request too (any message of serde types is one).
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "()")]
    struct Twice;

    use crate::declare::test_protocol;

    test_protocol!(Nothing, |d| {
        let _ = d;
    });
    test_protocol!(Named, |d| d.request::<Mul>().named("mul"));
    test_protocol!(TwiceDeclared, |d| {
        d.request::<Mul>();
        d.request::<Mul>().named("mul");
    });
    test_protocol!(OneName, |d| {
        d.request::<Mul>().named("calc");
        d.request::<Sum>().named("calc");
    });

    #[test]
    fn a_declared_request_is_tagged_by_its_wire_name_and_another_by_its_path() {
        assert_eq!(request_tag::<Named, Mul>().unwrap(), tag_of_name("mul"));
        assert_eq!(request_tag::<Named, Sum>().unwrap(), tag_of::<Sum>());
        assert_eq!(request_tag::<Nothing, Mul>().unwrap(), tag_of::<Mul>());
        // Looked up again, from the thread's cache, alternating; and past
        // what it holds.
        for _ in 0..3 {
            assert_eq!(request_tag::<Named, Mul>().unwrap(), tag_of_name("mul"));
            assert_eq!(request_tag::<Nothing, Mul>().unwrap(), tag_of::<Mul>());
            assert_eq!(request_tag::<Named, Sum>().unwrap(), tag_of::<Sum>());
            assert_eq!(request_tag::<Nothing, Sum>().unwrap(), tag_of::<Sum>());
            assert_eq!(request_tag::<Nothing, Twice>().unwrap(), tag_of::<Twice>());
        }
        assert_eq!(describe::<Named, Mul>(), format!("{} (wire name \"mul\")", type_name::<Mul>()));
        assert_eq!(describe::<Named, Sum>(), type_name::<Sum>());
    }

    #[test]
    fn a_type_or_a_name_declared_twice_is_refused_naming_the_type() {
        let twice = table::<TwiceDeclared>().unwrap_err();
        assert!(twice.ty.ends_with("Mul") && twice.why.contains("twice"), "{twice}");
        let one_name = table::<OneName>().unwrap_err();
        assert!(one_name.ty.ends_with("Sum") && one_name.why.contains("\"calc\""), "{one_name}");
    }

    #[test]
    fn what_a_side_must_answer_and_does_not_is_named() {
        let table = table::<Named>().unwrap();
        assert_eq!(table.unanswered(false, |_| false), [type_name::<Mul>()]);
        assert!(table.unanswered(false, |tag| tag == tag_of_name("mul")).is_empty());
        assert!(table.unanswered(true, |_| false).is_empty(), "the parent owes nothing");
    }

    fn type_name<T>() -> &'static str {
        std::any::type_name::<T>()
    }
}
