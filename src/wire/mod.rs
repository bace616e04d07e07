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
    ARENA.with(|arena| match arena.try_borrow_mut() {
        Ok(mut arena) => {
            if arena.capacity() < ARENA_MIN_ROOM {
                arena.reserve(ARENA_CHUNK);
            }
            encode_in(&mut arena)?;
            let bytes = arena.split().freeze();
            if bytes.len() > ARENA_KEEP {
                *arena = BytesMut::new();
            }
            Ok(bytes)
        }
        // Encoding from inside a `Serialize` impl that is itself being
        // encoded: a buffer of its own.
        Err(_) => {
            let mut buf = BytesMut::with_capacity(128);
            encode_in(&mut buf)?;
            Ok(buf.freeze())
        }
    })
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
