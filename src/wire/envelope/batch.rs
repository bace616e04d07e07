//! Batches: small messages written side by side go as one WebSocket
//! message of kind `Batch`, each entry its length (u32) and its bytes.

use bytes::BufMut;

use crate::error::WireError;

/// Bytes in front of each message in a batch: its length.
pub(crate) const BATCH_ENTRY_HEADER: usize = 4;
/// Messages up to this size are batched with those written beside them.
pub(crate) const BATCH_MESSAGE_MAX: usize = 4 * 1024;
/// A batch's own header.
pub(crate) const BATCH_HEADER: usize = 2;
/// A batch is sent once it is this large.
pub(crate) const BATCH_TARGET: usize = 64 * 1024;
/// The largest batch a writer produces, and so the largest a reader
/// takes: the target, plus one more small message.
pub(crate) const MAX_BATCH: usize =
    BATCH_HEADER + BATCH_TARGET + BATCH_ENTRY_HEADER + BATCH_MESSAGE_MAX;

/// Appends one message to a batch being built.
pub(crate) fn push_batch_entry(buf: &mut bytes::BytesMut, msg: &[u8]) {
    let len = u32::try_from(msg.len()).expect("batched messages are small");
    buf.put_u32_le(len);
    buf.put_slice(msg);
}

/// The byte range of the message in `batch` at `pos` (a batch's first
/// entry is at 2), or `None` at its end.
pub(crate) fn batch_entry(
    batch: &[u8],
    pos: usize,
) -> Result<Option<std::ops::Range<usize>>, WireError> {
    let rest = batch.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < BATCH_ENTRY_HEADER {
        return Err(WireError::Truncated { needed: BATCH_ENTRY_HEADER, got: rest.len() });
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let start = pos + BATCH_ENTRY_HEADER;
    if rest.len() - BATCH_ENTRY_HEADER < len {
        return Err(WireError::Truncated { needed: BATCH_ENTRY_HEADER + len, got: rest.len() });
    }
    Ok(Some(start..start + len))
}
