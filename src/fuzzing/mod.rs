//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! They run the decoding a peer's bytes go through, on arbitrary input:
//! the envelope header, the hello, the payload codec, the whole reading
//! path (WebSocket framing over the fd-aware socket, then the envelope),
//! and the parent's whole side of a connection (reader, dispatch, answers,
//! events to a recipient) with descriptors sent along. Any panic, hang,
//! unbounded allocation or leaked descriptor they find is a bug.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorReport, WireError};
use crate::wire::{codec, envelope, ws, wsframe};

mod link;
mod seeds;

pub use self::link::link;
pub use self::seeds::seeds;

/// What a stranger's first bytes to a remote worker's port go through:
/// the token frame (in the clear, and after a TLS handshake with the
/// parent's certificate, the same bytes as a client's first flight), and,
/// on the worker's side, the secrets block read from its stdin.
pub fn auth(data: &[u8]) {
    let _ = crate::handoff::parse_secrets(&String::from_utf8_lossy(data));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        let mut clear = data;
        let _ = crate::parent::remote::read_token(&mut clear).await;
        let Ok(server) = crate::wire::tls::TlsServer::self_signed() else { return };
        let Ok((ours, mut theirs)) = tokio::net::UnixStream::pair() else { return };
        let bytes = data.to_vec();
        let client = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = theirs.write_all(&bytes).await;
            let _ = theirs.shutdown().await;
            // What the server answers is read and dropped, so it never
            // waits on a full socket.
            let mut sink = Vec::new();
            let _ = theirs.read_to_end(&mut sink).await;
        });
        let accepted =
            tokio::time::timeout(std::time::Duration::from_secs(1), server.acceptor.accept(ours))
                .await;
        if let Ok(Ok(mut stream)) = accepted {
            let _ = crate::parent::remote::read_token(&mut stream).await;
        }
        let _ = client.await;
    });
}

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

/// Decodes one message as the receiving side does after the WebSocket
/// layer: header, then the payload as the kind says.
pub fn envelope(data: &[u8]) {
    let Ok((header, payload)) = envelope::decode(data) else { return };
    if header.kind == envelope::Kind::Batch {
        // Each entry as the reader hands it on (nested batches it refuses).
        let mut pos = 2;
        while let Ok(Some(range)) = envelope::batch_entry(data, pos) {
            pos = range.end;
            if data[range.clone()].first() != Some(&(envelope::Kind::Batch as u8)) {
                envelope(&data[range]);
            }
        }
        return;
    }
    let _ = match header.kind {
        envelope::Kind::Hello => envelope::read_hello(payload).map(drop),
        envelope::Kind::Error => codec::decode::<ErrorReport>(payload).map(drop),
        envelope::Kind::Failed => {
            codec::decode::<crate::session::requests::Failure>(payload).map(drop)
        }
        _ => codec::decode::<Sample>(payload).map(drop),
    };
    // The same payload as JSON, as a worker in another language writes it.
    let _ = codec::decode_as::<Sample>(crate::protocol::Codec::Json, payload);
}

/// Feeds `data` as raw bytes from a peer into the reading side (WebSocket
/// framing, size limits, the envelope) until it ends or fails.
pub fn stream(data: &[u8]) {
    let Ok((mut ours, theirs)) = std::os::unix::net::UnixStream::pair() else { return };
    // The whole input fits a socket buffer for the sizes fuzzers use; the
    // peer's end is then closed, so the reader sees EOF after the data.
    if ours.write_all(&data[..data.len().min(100_000)]).is_err() {
        return;
    }
    drop(ours);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async move {
        let Ok(conn) = ws::open(theirs, 1 << 20).await else { return };
        let (mut reader, _writer) = conn.split();
        while let Some(item) = reader.next().await {
            match item {
                Ok(inbound) => envelope(&reconstruct(&inbound)),
                Err(WireError::Decode(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

/// One unmasked binary WebSocket frame, as either side sends it.
fn ws_binary(payload: &[u8]) -> Vec<u8> {
    wsframe::frame(2, payload)
}

/// The message bytes again, header included, for [`envelope`].
fn reconstruct(inbound: &ws::reader::Inbound) -> Vec<u8> {
    let mut buf = Vec::new();
    envelope::begin(&mut buf, inbound.header);
    buf.extend_from_slice(inbound.payload());
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_entry_points_take_garbage() {
        for data in
            [&b""[..], b"\x02\x00\xff\xff", b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", b"\x01"]
        {
            super::envelope(data);
            super::stream(data);
            super::auth(data);
        }
    }
}
