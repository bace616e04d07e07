//! Whether a value skips a field as it is written (`#[serde(skip_serializing)]`,
//! or `skip_serializing_if` whose predicate holds for this value): bincode
//! writes no names, so the reader would take the next field's bytes for the
//! skipped one's and build another value, silently. The shape check at
//! `start()` finds a skip only for the values it tries; this walks each
//! value actually sent (in debug builds: see `encode_into_as`).
//!
//! A serializer that writes nothing and fails at the first `skip_field`,
//! naming the struct and the field.

use serde::ser::{self, Serialize};

/// The first field `value` skips as it is written: its struct's name and
/// its own.
pub(crate) fn first_skipped<T: Serialize + ?Sized>(
    value: &T,
) -> Option<(&'static str, &'static str)> {
    match value.serialize(Walk) {
        Err(Found::Skipped(strukt, field)) => Some((strukt, field)),
        _ => None,
    }
}

#[derive(Debug)]
enum Found {
    Skipped(&'static str, &'static str),
    /// A `Serialize` of the user's failed: encoding says so itself.
    Other,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Found::Other
    }
}

/// Walks a value, writing nothing.
#[derive(Clone, Copy)]
struct Walk;

/// A compound value being walked; the struct's name, for a skip.
struct Inner(&'static str);

type R = Result<(), Found>;

macro_rules! leaves {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> R { Ok(()) })*
    };
}

impl ser::Serializer for Walk {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Inner;
    type SerializeTuple = Inner;
    type SerializeTupleStruct = Inner;
    type SerializeTupleVariant = Inner;
    type SerializeMap = Inner;
    type SerializeStruct = Inner;
    type SerializeStructVariant = Inner;

    leaves!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Inner, Found> {
        Ok(Inner(""))
    }
    fn serialize_tuple(self, _: usize) -> Result<Inner, Found> {
        Ok(Inner(""))
    }
    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Inner, Found> {
        Ok(Inner(name))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Inner, Found> {
        Ok(Inner(variant))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Inner, Found> {
        Ok(Inner(""))
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Inner, Found> {
        Ok(Inner(name))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Inner, Found> {
        Ok(Inner(variant))
    }
    fn is_human_readable(&self) -> bool {
        // As bincode, whose encoding is the one checked.
        false
    }
}

/// The compounds: each element walked in turn.
macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ty)?) => {
        impl ser::$trait for Inner {
            type Ok = ();
            type Error = Found;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? v: &T) -> R {
                v.serialize(Walk)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for Inner {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        k.serialize(Walk)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Walk)
    }
    fn end(self) -> R {
        Ok(())
    }
}

macro_rules! with_fields {
    ($trait:ident) => {
        impl ser::$trait for Inner {
            type Ok = ();
            type Error = Found;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> R {
                v.serialize(Walk)
            }
            fn skip_field(&mut self, field: &'static str) -> R {
                Err(Found::Skipped(self.0, field))
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    };
}

with_fields!(SerializeStruct);
with_fields!(SerializeStructVariant);

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::first_skipped;

    #[derive(Serialize)]
    struct Gauge {
        #[serde(skip_serializing_if = "is_seven")]
        level: u32,
        note: Option<u32>,
    }

    fn is_seven(n: &u32) -> bool {
        *n == 7
    }

    #[derive(Serialize)]
    struct Skipped {
        #[serde(skip)]
        _never: u32,
        always: u32,
    }

    #[derive(Serialize)]
    enum Outer {
        Many(Vec<Gauge>),
        Named { inner: Gauge },
    }

    #[test]
    fn a_field_skipped_for_this_value_is_named_wherever_it_is() {
        let fine = Gauge { level: 1, note: Some(0) };
        assert_eq!(first_skipped(&fine), None);
        assert_eq!(first_skipped(&Gauge { level: 7, note: None }), Some(("Gauge", "level")));
        let deep =
            Outer::Many(vec![Gauge { level: 2, note: None }, Gauge { level: 7, note: None }]);
        assert_eq!(first_skipped(&deep), Some(("Gauge", "level")));
        let named = Outer::Named { inner: Gauge { level: 7, note: Some(1) } };
        assert_eq!(first_skipped(&named), Some(("Gauge", "level")));
        assert_eq!(first_skipped(&Outer::Named { inner: fine }), None);
        // Skipped both ways, always: not written, not read; fine.
        assert_eq!(first_skipped(&Skipped { _never: 1, always: 2 }), None);
    }
}
