//! What both sides share: the envelope ([`frame`]), payload encoding
//! ([`codec`]), the fd-aware socket ([`fd`]), the WebSocket over it
//! ([`socket`]) and the queue that feeds it ([`outbox`]).

pub(crate) mod boundary;
pub(crate) mod codec;
pub(crate) mod depth;
pub(crate) mod fd;
pub(crate) mod frame;
pub(crate) mod outbox;
pub(crate) mod socket;

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use crate::error::{WireError, WorkerError};

/// The most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 64;

/// Encodes one complete message: header, then `data`; checks the descriptor
/// count and the size limit before anything is queued.
///
/// Small messages are cut from a per-thread arena: one allocation serves
/// many messages, and it is reused whole once the writer has dropped them
/// all. A message larger than [`ARENA_KEEP`] leaves with the arena's buffer,
/// and the arena starts afresh, so a thread never holds on to the memory of
/// its largest message.
pub(crate) fn encode<M: Serialize + ?Sized>(
    kind: frame::Kind,
    id: u64,
    tag: u64,
    data: &M,
    nfds: usize,
    max_message_size: usize,
) -> Result<Bytes, WorkerError> {
    if nfds > MAX_FDS_PER_MESSAGE {
        return Err(WireError::TooManyFds { count: nfds, limit: MAX_FDS_PER_MESSAGE }.into());
    }
    let encode_in = |buf: &mut BytesMut| -> Result<(), WorkerError> {
        frame::begin(buf, kind, nfds as u8, id, tag);
        let header = buf.len();
        let encoded = codec::encode_into(data, buf);
        let size = buf.len() - header;
        if let Err(e) = encoded {
            buf.clear();
            return Err(e.into());
        }
        if size > max_message_size {
            buf.clear();
            return Err(WireError::TooLarge { size, limit: max_message_size }.into());
        }
        Ok(())
    };
    let from_arena = ARENA.try_with(|arena| {
        let mut arena = arena.try_borrow_mut().ok()?;
        if arena.capacity() < ARENA_MIN_ROOM {
            arena.reserve(ARENA_CHUNK);
        }
        Some(encode_in(&mut arena).map(|()| {
            let bytes = arena.split().freeze();
            if bytes.len() > ARENA_KEEP {
                *arena = BytesMut::new();
            }
            bytes
        }))
    });
    match from_arena {
        Ok(Some(encoded)) => encoded,
        // Encoding from inside a `Serialize` impl that is itself being
        // encoded, or while the thread is being torn down: a buffer of its
        // own.
        _ => {
            let mut buf = BytesMut::with_capacity(128);
            encode_in(&mut buf)?;
            Ok(buf.freeze())
        }
    }
}

/// The size of a fresh arena buffer.
const ARENA_CHUNK: usize = 64 * 1024;
/// Below this much room a fresh arena buffer is taken before encoding.
const ARENA_MIN_ROOM: usize = 1024;
/// Messages over this size do not leave their buffer to the arena.
const ARENA_KEEP: usize = 16 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::Kind;

    fn post(data: &impl Serialize) -> Bytes {
        encode(Kind::Post, 0, 0, data, 0, 1 << 20).unwrap()
    }

    #[test]
    fn arena_slices_stay_intact_and_large_messages_do_not_stay() {
        let msgs: Vec<Bytes> = (0..5_000u32).map(|i| post(&format!("m{i}"))).collect();
        for (i, msg) in msgs.iter().enumerate() {
            let (header, payload) = frame::decode(msg).unwrap();
            assert_eq!(header.kind, Kind::Post);
            assert_eq!(codec::decode::<String>(payload).unwrap(), format!("m{i}"));
        }
        let big = post(&serde_bytes::ByteBuf::from(vec![1u8; 100_000]));
        // Header, a 5-byte varint length, the bytes as one block.
        assert_eq!(big.len(), 2 + 5 + 100_000);
        ARENA.with(|arena| assert!(arena.borrow().capacity() < ARENA_KEEP));
        // Over the limit: an error, and the arena is left clean.
        let refused = encode(Kind::Post, 0, 0, &vec![0u8; 64], 0, 8);
        assert!(matches!(refused, Err(WorkerError::Wire(WireError::TooLarge { .. }))));
        assert_eq!(&post(&7u8)[..], &[Kind::Post as u8, 0, 7]);
    }

    /// A `Serialize` impl that encodes a message of its own.
    struct Nested;

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&post(&"inner"))
        }
    }

    #[test]
    fn encoding_inside_encoding_uses_a_buffer_of_its_own() {
        let outer = post(&Nested);
        let (_, payload) = frame::decode(&outer).unwrap();
        let inner: serde_bytes::ByteBuf = codec::decode(payload).unwrap();
        let (_, inner_payload) = frame::decode(&inner).unwrap();
        assert_eq!(codec::decode::<String>(inner_payload).unwrap(), "inner");
    }
}
