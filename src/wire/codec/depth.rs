//! A depth guard for decoding: bincode has no nesting limit, and a few
//! hundred kilobytes of a recursive type nested deep enough overflow the
//! decoding thread's stack, which aborts the whole process (`catch_unwind`
//! cannot stop it). [`Guard`] wraps any serde `Deserializer` and counts how
//! deeply values nest; past [`MAX_DEPTH`] decoding fails with an error.
//!
//! It forwards every call, wrapping each visitor, sequence, map and enum
//! access it passes through so that nested values are guarded too.
//!
//! It also counts what the values decoded take in memory beyond the bytes
//! they took on the wire: each element of a sequence or map takes at
//! least a byte there, and `size_of` of its type once decoded (an empty
//! `String`: 1 byte, then 24); a value larger than the place it fills
//! (a `Box`'s content) is on the heap, whole. A peer's message is bounded in memory, not
//! only in bytes: past the limit of [`made_within`], decoding fails, and
//! what was made is counted where its bytes are ([`made_within`]).

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// How deeply values may nest. Deep enough for any sane message, shallow
/// enough for a thread's stack in a debug build.
pub(crate) const MAX_DEPTH: usize = 512;

/// The shared count of how deep decoding is, and of what the elements
/// decoded take beyond their bytes (within `limit`).
pub(crate) struct Depth {
    level: Cell<usize>,
    made: Cell<usize>,
    limit: usize,
}

impl Depth {
    pub(crate) fn new() -> Self {
        Depth { level: Cell::new(0), made: Cell::new(0), limit: LIMIT.with(Cell::get) }
    }

    fn enter<E: de::Error>(&self) -> Result<DepthToken<'_>, E> {
        let d = self.level.get() + 1;
        if d > MAX_DEPTH {
            return Err(E::custom(format_args!("values nest deeper than {MAX_DEPTH} levels")));
        }
        self.level.set(d);
        Ok(DepthToken(self))
    }

    /// Counts an element of type `T` decoded: what it takes beyond the
    /// byte it took at least on the wire (nothing for a byte).
    #[inline]
    fn made<T, E: de::Error>(&self) -> Result<(), E> {
        self.beyond(std::mem::size_of::<T>().saturating_sub(1))
    }

    /// Counts a value of type `T` decoded into a place of `slot` bytes:
    /// one larger than its place is held elsewhere, whole (a `Box`'s,
    /// `Rc`'s or `Arc`'s content, on the heap); one that fits, nothing.
    #[inline]
    fn held<T, E: de::Error>(&self, slot: usize) -> Result<(), E> {
        let size = size_of::<T>();
        self.beyond(if size > slot { size } else { 0 })
    }

    #[inline]
    fn beyond<E: de::Error>(&self, beyond: usize) -> Result<(), E> {
        if beyond == 0 {
            return Ok(());
        }
        let made = self.made.get().saturating_add(beyond);
        if made > self.limit {
            return Err(E::custom(format_args!(
                "values that take more than {} bytes beyond their encoding once decoded",
                self.limit
            )));
        }
        self.made.set(made);
        Ok(())
    }
}

thread_local! {
    /// The most the elements of one decode may take beyond their bytes
    /// (see [`made_within`]); and what the decodes since it began made.
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static MADE: Cell<usize> = const { Cell::new(0) };
}

/// Runs `decode` with what its elements take beyond their bytes held to
/// `limit`; its result, and what they took.
pub(crate) fn made_within<R>(limit: usize, decode: impl FnOnce() -> R) -> (R, usize) {
    /// Puts the outer limit and count back, also when `decode` panics.
    struct Restore(usize, usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.with(|l| l.set(self.0));
            MADE.with(|m| m.set(self.1));
        }
    }
    let outer = Restore(LIMIT.with(|l| l.replace(limit)), MADE.with(|m| m.replace(0)));
    let result = decode();
    let made = MADE.with(Cell::get);
    drop(outer);
    (result, made)
}

/// Leaves a level when dropped.
struct DepthToken<'a>(&'a Depth);

impl Drop for DepthToken<'_> {
    fn drop(&mut self) {
        self.0.level.set(self.0.level.get() - 1);
    }
}

/// A value decoded under a fresh [`Guard`].
pub(crate) struct DepthLimited<T>(pub(crate) T);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for DepthLimited<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let depth = Depth::new();
        let decoded = T::deserialize(Guard { inner: d, depth: &depth, slot: size_of::<T>() })
            .map(DepthLimited);
        MADE.with(|m| m.set(m.get().saturating_add(depth.made.get())));
        decoded
    }
}

/// A guarded deserializer.
pub(crate) struct Guard<'a, D> {
    pub(crate) inner: D,
    pub(crate) depth: &'a Depth,
    /// The size of the place its value fills (see [`Depth::held`]).
    slot: usize,
}

/// `visitor` guarded, what its value takes beyond its `slot` counted.
#[inline]
fn wrap<'a, 'de, V: Visitor<'de>, E: de::Error>(
    depth: &'a Depth,
    slot: usize,
    visitor: V,
    inline: bool,
) -> Result<Wrap<'a, V>, E> {
    depth.held::<V::Value, E>(slot)?;
    Ok(Wrap { inner: visitor, depth, inline })
}

macro_rules! forward_deserializer {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(wrap(self.depth, self.slot, visitor, false)?)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<'_, D> {
    type Error = D::Error;

    forward_deserializer!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_bytes,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    // Owned strings and byte buffers are read as borrowed ones: the
    // borrowed path checks that the claimed length is really there before
    // anything is allocated, and the visitor copies exactly that much. (The
    // owned path allocates whatever a length prefix claims first.)
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_str(wrap(self.depth, self.slot, visitor, false)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_bytes(wrap(self.depth, self.slot, visitor, false)?)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, wrap(self.depth, self.slot, visitor, false)?)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(name, wrap(self.depth, self.slot, visitor, false)?)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, wrap(self.depth, self.slot, visitor, true)?)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(name, len, wrap(self.depth, self.slot, visitor, true)?)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, wrap(self.depth, self.slot, visitor, true)?)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, wrap(self.depth, self.slot, visitor, false)?)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A guarded visitor.
struct Wrap<'a, V> {
    inner: V,
    depth: &'a Depth,
    /// It visits a struct's, tuple's or variant's fields: held in their
    /// value, whose own size is counted where it is an element.
    inline: bool,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>)
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let _level = self.depth.enter::<D::Error>()?;
        self.inner.visit_some(Guard { inner: d, depth: self.depth, slot: size_of::<V::Value>() })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let _level = self.depth.enter::<D::Error>()?;
        let slot = size_of::<V::Value>();
        self.inner.visit_newtype_struct(Guard { inner: d, depth: self.depth, slot })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let _level = self.depth.enter::<A::Error>()?;
        self.inner.visit_seq(Access { inner: seq, depth: self.depth, inline: self.inline })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let _level = self.depth.enter::<A::Error>()?;
        self.inner.visit_map(Access { inner: map, depth: self.depth, inline: self.inline })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let _level = self.depth.enter::<A::Error>()?;
        self.inner.visit_enum(Access { inner: data, depth: self.depth, inline: false })
    }
}

/// A guarded seed: what a sequence, map or variant hands out.
struct Seed<'a, S> {
    inner: S,
    depth: &'a Depth,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Guard { inner: d, depth: self.depth, slot: size_of::<S::Value>() })
    }
}

/// A guarded sequence, map, enum or variant access.
struct Access<'a, A> {
    inner: A,
    depth: &'a Depth,
    /// Fields (see [`Wrap`]): not counted as elements.
    inline: bool,
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        // Counted once decoded: the look past the last element finds none
        // (counted first, an empty `Vec<[[f32; 32]; 32]>` took 4 KiB); an
        // element being decoded is bounded by its type till then.
        let element = self.inner.next_element_seed(Seed { inner: seed, depth: self.depth })?;
        if element.is_some() && !self.inline {
            self.depth.made::<T::Value, A::Error>()?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(Seed { inner: seed, depth: self.depth })?;
        if key.is_some() && !self.inline {
            self.depth.made::<K::Value, A::Error>()?;
        }
        Ok(key)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let value = self.inner.next_value_seed(Seed { inner: seed, depth: self.depth })?;
        if !self.inline {
            self.depth.made::<T::Value, A::Error>()?;
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'a, A> {
    type Error = A::Error;
    type Variant = Access<'a, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, depth })?;
        Ok((value, Access { inner: variant, depth, inline: false }))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let _level = self.depth.enter::<A::Error>()?;
        self.inner.newtype_variant_seed(Seed { inner: seed, depth: self.depth })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Wrap { inner: visitor, depth: self.depth, inline: true })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, Wrap { inner: visitor, depth: self.depth, inline: true })
    }
}
