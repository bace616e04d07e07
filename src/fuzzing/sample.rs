//! What the fuzz targets feed: a message type with the shapes users
//! send, and the WebSocket frame each side wraps a message in.

use serde::{Deserialize, Serialize};

use crate::wire::wsframe;

/// A message type with the shapes users send: enums, strings, byte
/// blocks, sequences, options, nesting, floats, shared buffers.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Sample {
    Unit,
    Text(String),
    Bytes(#[serde(with = "serde_bytes_like")] Vec<u8>),
    Numbers(Vec<u64>),
    Nested { name: Option<String>, inner: Vec<(u32, String)> },
    Float(f64),
    Shared(Vec<crate::wire::shared::SharedBytes>),
}

/// `serde_bytes` without the dependency: a `Vec<u8>` as one byte block.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One unmasked binary WebSocket frame, as either side sends it.
pub(crate) fn ws_binary(payload: &[u8]) -> Vec<u8> {
    wsframe::frame(2, payload)
}
