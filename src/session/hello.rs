//! Opening a session: the WebSocket over the socket, then the hellos, in
//! which each side checks the other's build (the fingerprint of
//! `shape.rs`) and the parent names the codec.

use crate::error::WireError;
use crate::protocol::Codec;
use crate::wire::envelope;
use crate::wire::writer::Writer;
use crate::wire::ws;
use crate::wire::ws::reader::Reader;

/// Who speaks first in the hello: the parent, so that a worker of another
/// build can answer with what it is. The parent names the codec; the
/// worker takes it and names it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    First(Codec),
    AfterPeer,
}

/// The connection after both hellos: what reads, what writes, and the
/// peer's hello.
pub(crate) struct Opened {
    pub reader: Reader,
    pub writer: Writer,
    pub peer: envelope::Hello,
    /// How this connection's payloads are written.
    pub codec: Codec,
}

/// Opens the WebSocket over `sock` and exchanges hellos (see [`hello`]).
pub(crate) async fn open(
    sock: impl Into<ws::Socket>,
    max_message_size: usize,
    fingerprint: u64,
    order: Turn,
) -> Result<Opened, Option<WireError>> {
    let conn = ws::open(sock, max_message_size).await.map_err(Some)?;
    hello(conn, fingerprint, order).await
}

/// Exchanges hellos over an opened connection; `Err(None)` when the peer
/// closed the socket first. Ours is sent whatever we think of theirs, so
/// the peer can say what is wrong too.
pub(crate) async fn hello(
    mut conn: ws::Connection,
    fingerprint: u64,
    order: Turn,
) -> Result<Opened, Option<WireError>> {
    // A send error means the peer is gone already; its EOF says so.
    if let Turn::First(codec) = order {
        let _ = conn.send(envelope::hello(fingerprint, codec)).await;
    }
    let named = match order {
        Turn::First(ours) => ours,
        Turn::AfterPeer => Codec::default(),
    };
    let peer = conn.recv_hello(fingerprint, named).await;
    let codec = match (order, &peer) {
        (Turn::First(ours), _) => ours,
        (Turn::AfterPeer, Ok(theirs)) => theirs.codec,
        // Named back as ours, whatever it was, so the peer can tell.
        (Turn::AfterPeer, Err(_)) => Codec::default(),
    };
    if order == Turn::AfterPeer {
        let _ = conn.send(envelope::hello(fingerprint, codec)).await;
    }
    let peer = peer?;
    if peer.codec != codec {
        return Err(Some(WireError::CodecMismatch { ours: codec, theirs: peer.codec }));
    }
    let (mut reader, sink) = conn.split();
    reader.set_codec(codec);
    Ok(Opened { reader, writer: Writer::new(sink), peer, codec })
}
