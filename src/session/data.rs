//! A worker's data: the typed value its parent gives it at start-up, the
//! `workerData` of Node. The parent encodes it once, with the connection's
//! codec and within the largest message, and sends it right after the
//! hellos, before anything else (its hello says one follows); the worker
//! keeps it and decodes it when asked, as the type the actor asks for,
//! after comparing that type's serde shape with the shape the parent sent.
//!
//! It travels on the connection, never in the arguments or the
//! environment, which other users of the host can read.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::shape::shape_of;
use crate::error::{ShapeError, SpawnError, WireError, WorkerError};
use crate::protocol::Codec;
use crate::wire::codec;
use crate::wire::encode::encode;
use crate::wire::envelope::Header;

/// Why a worker could not read its data ([`Parent::data`](crate::Parent::data)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The parent gave this worker no data.
    #[error("the parent gave this worker no data (WorkerBuilder::data)")]
    Missing,
    /// The data is of another type than the one asked for: its serde
    /// shape differs.
    #[error("the worker's data is not a {ty}: the parent gave a value of another shape")]
    OtherType {
        /// The type asked for.
        ty: &'static str,
    },
    /// The type asked for cannot go through the wire at all.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The data did not decode as the type asked for.
    #[error("the worker's data does not decode as {ty}: {why}")]
    Decode {
        /// The type asked for.
        ty: &'static str,
        /// What the decoder said.
        why: String,
    },
}

/// The message that carries `value` as a worker's data, in `codec`, of at
/// most `max` bytes.
pub(crate) fn message<T>(value: &T, codec: Codec, max: usize) -> Result<Bytes, SpawnError>
where
    T: Serialize + DeserializeOwned + 'static,
{
    let shape = shape_of::<T>()?;
    // Sent once, as the hellos end: in one piece.
    let encoded = encode(codec, Header::data(shape), value, max);
    encoded.map(|msg| msg.contiguous()).map_err(|e| match e {
        WorkerError::Wire(e) => SpawnError::Data(e),
        other => SpawnError::Data(WireError::Encode(other.to_string())),
    })
}

/// A worker's data as it arrived: the shape of its type (0 from a parent
/// that does not know it), its payload, and the codec it is written in.
#[derive(Debug)]
pub(crate) struct Data {
    pub shape: u64,
    pub payload: Bytes,
    pub codec: Codec,
}

impl Data {
    /// The data as a `T`, if it has `T`'s shape.
    pub(crate) fn read<T: DeserializeOwned + Serialize + 'static>(&self) -> Result<T, DataError> {
        let ty = std::any::type_name::<T>();
        if self.shape != 0 && self.shape != shape_of::<T>()? {
            return Err(DataError::OtherType { ty });
        }
        codec::decode_as(self.codec, &self.payload)
            .map_err(|e| DataError::Decode { ty, why: e.to_string() })
    }
}
