//! The WebSocket frame format (RFC 6455, section 5.2), read and written in
//! this one place: the header our frame reader (`ws/frames.rs`) and the
//! ledger of what was written (`stream/ledger.rs`) read, and the frames
//! written by hand where tungstenite does not write them (a large message
//! from its own buffer, a worker's refusal, a last word when no connection
//! runs). tungstenite writes the rest (`ws/sink.rs`).
//!
//! ```text
//! byte 0      FIN (0x80), three reserved bits, the opcode (0x0f)
//! byte 1      MASK (0x80), the payload's length: up to 125, or 126 (a u16
//!             follows) or 127 (a u64 follows), big endian
//! then        the masking key (4 bytes) if MASK, then the payload
//! ```

/// A message's continued fragment.
pub(crate) const CONTINUATION: u8 = 0;
/// A text message (never ours: refused).
pub(crate) const TEXT: u8 = 1;
/// A binary message: every message of ours.
pub(crate) const BINARY: u8 = 2;
/// The end of the connection.
pub(crate) const CLOSE: u8 = 8;
/// A ping.
pub(crate) const PING: u8 = 9;
/// A pong.
pub(crate) const PONG: u8 = 10;

/// The longest header: two bytes, an 8-byte length and a 4-byte mask.
pub(crate) const MAX_HEADER: usize = 14;

/// The largest payload of a control frame (close, ping, pong).
pub(crate) const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A frame's header, read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The last frame of its message.
    pub fin: bool,
    pub opcode: u8,
    /// The header's own length in bytes.
    pub len: usize,
    /// The payload's length in bytes.
    pub payload: u64,
    /// The masking key, if the payload is masked.
    pub mask: Option<[u8; 4]>,
}

/// The opcode in a frame's first byte.
pub(crate) fn opcode(first: u8) -> u8 {
    first & 0x0f
}

/// Whether a frame's first byte sets a reserved bit (no extension is
/// spoken here, so none may be set).
pub(crate) fn reserved(first: u8) -> bool {
    first & 0x70 != 0
}

/// Whether frames of `opcode` are control frames (close, ping, pong):
/// never fragmented, at most [`MAX_CONTROL_PAYLOAD`] bytes.
pub(crate) fn is_control(opcode: u8) -> bool {
    opcode >= 8
}

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

/// The header at the start of `h`, once all of it is there.
pub(crate) fn read(h: &[u8]) -> Option<Head> {
    let (len, payload) = header(h)?;
    let (first, second) = (h[0], h[1]);
    let mask = (second & 0x80 != 0).then(|| {
        let at = len - 4;
        [h[at], h[at + 1], h[at + 2], h[at + 3]]
    });
    Some(Head { fin: first & 0x80 != 0, opcode: opcode(first), len, payload, mask })
}

/// Unmasks a payload in place.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// One unmasked binary WebSocket frame holding `payload`: a whole message,
/// written by hand where no connection runs (a worker's refusal, a
/// terminate when the parent's System stops).
pub(crate) fn binary_frame(payload: &[u8]) -> Vec<u8> {
    frame(BINARY, payload)
}

/// An `Auth` message in its WebSocket frame: `flags` in its second byte
/// (the worker's: `handoff::AUTH_ASKS_PROOF`; the parent's: 0), then `secret`
/// (the worker's token, the parent's proof) as the secrets block gives it.
#[cfg(feature = "tcp")]
pub(crate) fn auth_frame(flags: u8, secret: &str) -> Vec<u8> {
    let mut auth = vec![crate::wire::envelope::Kind::Auth as u8, flags];
    auth.extend_from_slice(secret.as_bytes());
    binary_frame(&auth)
}

/// One unmasked WebSocket frame with FIN set, of `opcode`.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// The header of an unmasked WebSocket frame with FIN set, of `opcode`,
/// whose payload is `len` bytes.
pub(crate) fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.push(0x80 | opcode);
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out
}

/// How a close frame's reason starts that says what its sender read.
const CLOSE_READ: &str = "read ";

/// The reason of our close frame, `read N`: its sender took `taken` bytes
/// of the peer's stream, in whole frames, and takes no more.
pub(crate) fn close_reason(taken: u64) -> String {
    format!("{CLOSE_READ}{taken}")
}

/// What the reason of a close frame whose payload is `payload` (a 2-byte
/// code, then the reason) says its sender took of our stream, if it says.
pub(crate) fn close_reason_read(payload: &[u8]) -> Option<u64> {
    let reason = std::str::from_utf8(payload.get(2..)?).ok()?;
    reason.strip_prefix(CLOSE_READ)?.parse().ok()
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

    #[test]
    fn what_is_written_reads_back() {
        for len in [0, 125, 126, 0xffff, 0x1_0000] {
            let written = frame_header(BINARY, len);
            let head = read(&written).unwrap();
            let expected = Head {
                fin: true,
                opcode: BINARY,
                len: written.len(),
                payload: len as u64,
                mask: None,
            };
            assert_eq!(head, expected);
        }
        let mut close = vec![0x03, 0xe8];
        close.extend_from_slice(close_reason(42).as_bytes());
        assert_eq!(close_reason_read(&close), Some(42));
    }
}
