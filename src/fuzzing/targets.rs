//! The entry points that take a peer's bytes alone: the envelope, the
//! reading path, and a stranger's first bytes to a remote worker's port.

use std::io::Write;

use super::sample::Sample;
use crate::error::{ErrorReport, WireError};
use crate::wire::{codec, envelope, ws};

/// What a stranger's first bytes to a remote worker's port go through:
/// the token frame (in the clear, and after a TLS handshake with the
/// parent's certificate, the same bytes as a client's first flight), and,
/// on the worker's side, the secrets block read from its stdin. With the
/// `tls` feature only (`fuzz/` builds with it).
#[cfg(feature = "tls")]
pub fn auth(data: &[u8]) {
    let _ = crate::handoff::parse_secrets(&String::from_utf8_lossy(data));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        let mut clear = data;
        let _ = crate::parent::remote::token::read_token(&mut clear).await;
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
            let _ = crate::parent::remote::token::read_token(&mut stream).await;
        }
        let _ = client.await;
    });
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
    if let Some(context) = crate::wire::trace::context_bytes(data) {
        let _ = crate::wire::trace::TraceContext::from_bytes(context);
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

/// The message bytes again, header included, for [`envelope`].
fn reconstruct(inbound: &ws::reader::Inbound) -> Vec<u8> {
    let mut buf = Vec::new();
    let context = inbound.trace_context().and_then(Result::ok).map(|cx| cx.to_bytes());
    crate::wire::trace::begin_traced(&mut buf, inbound.header, context.as_ref());
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
            #[cfg(feature = "tls")]
            super::auth(data);
        }
    }
}
