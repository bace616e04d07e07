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

use serde::Serialize;

use crate::error::{WireError, WorkerError};

/// The most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 64;

/// Encodes one complete message: header, then `data`; checks the descriptor
/// count and the size limit before anything is queued.
pub(crate) fn encode<M: Serialize + ?Sized>(
    kind: frame::Kind,
    id: u64,
    tag: u64,
    data: &M,
    nfds: usize,
    max_message_size: usize,
) -> Result<Vec<u8>, WorkerError> {
    if nfds > MAX_FDS_PER_MESSAGE {
        return Err(WireError::TooManyFds { count: nfds, limit: MAX_FDS_PER_MESSAGE }.into());
    }
    // Room for a small message without growing.
    let mut bytes = Vec::with_capacity(128);
    frame::begin(&mut bytes, kind, nfds as u8, id, tag);
    let header = bytes.len();
    codec::encode_into(data, &mut bytes)?;
    let size = bytes.len() - header;
    if size > max_message_size {
        return Err(WireError::TooLarge { size, limit: max_message_size }.into());
    }
    Ok(bytes)
}
