//! WebSocket frame headers: how long one is, and its payload, once enough
//! of it is there. Read by the frame reader (`socket.rs`) and by the
//! ledger of what was written (`ledger.rs`).

/// The header's length and the payload's, once enough of it is there.
pub(crate) fn header(h: &[u8]) -> Option<(usize, u64)> {
    let second = *h.get(1)?;
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let len = 2 + ext + if second & 0x80 != 0 { 4 } else { 0 };
    if h.len() < len {
        return None;
    }
    let payload = match ext {
        0 => u64::from(second & 0x7f),
        2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        _ => u64::from_be_bytes(h[2..10].try_into().ok()?),
    };
    Some((len, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form() {
        assert_eq!(header(&[0x82]), None);
        assert_eq!(header(&[0x82, 3]), Some((2, 3)));
        assert_eq!(header(&[0x82, 126, 1]), None);
        assert_eq!(header(&[0x82, 126, 1, 0]), Some((4, 256)));
        assert_eq!(header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1]), Some((10, 1)));
        // Masked: four key bytes after the length.
        assert_eq!(header(&[0x82, 0x81, 1, 2, 3]), None);
        assert_eq!(header(&[0x82, 0x81, 1, 2, 3, 4]), Some((6, 1)));
    }
}
