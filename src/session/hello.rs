//! Opening a session: the WebSocket over the socket, then the hellos, in
//! which each side checks the other's build (the fingerprint of
//! `shape.rs`) and the parent names the codec; then, when the parent's
//! hello says so, the worker's data (`data.rs`).

use bytes::Bytes;

use super::data::Data;
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

/// The connection after both hellos (the peer's checked, see [`Then`]):
/// what reads, what writes.
pub(crate) struct Opened {
    pub reader: Reader,
    pub writer: Writer,
    /// How this connection's payloads are written.
    pub codec: Codec,
    /// The worker's data, on the worker's side, when the parent sent some.
    pub data: Option<Data>,
}

/// What the parent sends once the hellos are done: the worker's data, if
/// any, once `peer` has accepted the worker's hello (that it comes from
/// the process started), so that nothing of it reaches another.
pub(crate) struct Then<'a> {
    pub data: Option<Bytes>,
    pub peer: &'a dyn Fn(&envelope::Hello) -> Result<(), WireError>,
}

impl Then<'_> {
    /// Nothing after the hellos, and any peer: the worker's side.
    pub(crate) fn nothing() -> Then<'static> {
        Then { data: None, peer: &|_| Ok(()) }
    }
}

/// Opens the WebSocket over `sock` and exchanges hellos (see [`hello`]).
pub(crate) async fn open(
    sock: impl Into<ws::Socket>,
    max_message_size: usize,
    fingerprint: u64,
    order: Turn,
    then: Then<'_>,
) -> Result<Opened, Option<WireError>> {
    let conn = ws::open(sock, max_message_size).await.map_err(Some)?;
    hello(conn, fingerprint, order, then).await
}

/// Exchanges hellos over an opened connection; `Err(None)` when the peer
/// closed the socket first. Ours is sent whatever we think of theirs, so
/// the peer can say what is wrong too.
pub(crate) async fn hello(
    mut conn: ws::Connection,
    fingerprint: u64,
    order: Turn,
    then: Then<'_>,
) -> Result<Opened, Option<WireError>> {
    // A send error means the peer is gone already; its EOF says so.
    if let Turn::First(codec) = order {
        let flags = if then.data.is_some() { envelope::HELLO_DATA_FOLLOWS } else { 0 };
        let _ = conn.send(envelope::hello(fingerprint, codec, flags)).await;
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
        let _ = conn.send(envelope::hello(fingerprint, codec, 0)).await;
    }
    let peer = peer?;
    if peer.codec != codec {
        return Err(Some(WireError::CodecMismatch { ours: codec, theirs: peer.codec }));
    }
    (then.peer)(&peer).map_err(Some)?;
    let mut data = None;
    if let Some(bytes) = then.data {
        // Before the writer starts, as the hello (its books start after).
        let _ = conn.send(bytes.to_vec()).await;
    } else if order == Turn::AfterPeer && peer.flags & envelope::HELLO_DATA_FOLLOWS != 0 {
        let (shape, payload) = conn.recv_data().await?;
        data = Some(Data { shape, payload: payload.into(), codec });
    }
    let (mut reader, sink) = conn.split();
    reader.set_codec(codec);
    Ok(Opened { reader, writer: Writer::new(sink), codec, data })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::error::SpawnError;
    use crate::session::data::{message, DataError};

    const MAX: usize = 1 << 20;

    #[test]
    fn the_workers_data_follows_the_hellos_and_only_when_there_is_some() {
        actix_rt::System::new().block_on(async {
            for with_data in [true, false] {
                let data = message(&("ten".to_owned(), 10u32), Codec::Json, MAX).unwrap();
                let then = Then { data: with_data.then_some(data), peer: &|_| Ok(()) };
                let (a, b) = UnixStream::pair().unwrap();
                let (a, b) = tokio::join!(
                    open(a, MAX, 7, Turn::First(Codec::Json), then),
                    open(b, MAX, 7, Turn::AfterPeer, Then::nothing())
                );
                assert!(a.unwrap().data.is_none(), "the parent keeps none");
                let Some(data) = b.unwrap().data else {
                    assert!(!with_data, "the worker has its data");
                    continue;
                };
                assert_eq!(data.read::<(String, u32)>().unwrap(), ("ten".to_owned(), 10));
                let other = data.read::<(String, u64)>();
                assert!(matches!(other, Err(DataError::OtherType { .. })), "{other:?}");
            }
        });
        // Larger than a message: refused before anything starts.
        let big = message(&vec![7u8; 4096], Codec::Bincode, 1024);
        assert!(matches!(big, Err(SpawnError::Data(WireError::TooLarge { .. }))), "{big:?}");
    }
}
