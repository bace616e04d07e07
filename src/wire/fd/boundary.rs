//! Where WebSocket frames begin and end in the byte stream, followed
//! cheaply as bytes are read, so that a connection that ends in the middle
//! of a frame is told apart from one that ends between frames. (tungstenite
//! reports both as a reset without a closing handshake.)

/// Follows frame headers and skips payloads.
#[derive(Debug, Default)]
pub(crate) struct Boundary {
    header: [u8; 14],
    have: usize,
    remaining: u64,
}

impl Boundary {
    /// Takes the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len() as u64);
                self.remaining -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some((len, payload)) = header(&self.header[..self.have]) {
                if self.have == len {
                    self.have = 0;
                    self.remaining = payload;
                }
            }
        }
    }

    /// Whether the bytes so far end inside a frame.
    pub(crate) fn mid_frame(&self) -> bool {
        self.have > 0 || self.remaining > 0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_frames_of_every_length_form() {
        let mut b = Boundary::default();
        b.feed(&[0x82, 3, 1, 2, 3]);
        assert!(!b.mid_frame());
        let mut long = vec![0x82, 126, 1, 0];
        long.extend(vec![0; 256]);
        b.feed(&long[..100]);
        assert!(b.mid_frame());
        b.feed(&long[100..]);
        assert!(!b.mid_frame());
        b.feed(&[0x82, 127]);
        assert!(b.mid_frame());
        b.feed(&[0, 0, 0, 0, 0, 0, 0, 1, 9]);
        assert!(!b.mid_frame());
        // Masked: four key bytes after the length.
        b.feed(&[0x82, 0x81, 1, 2, 3, 4]);
        assert!(b.mid_frame());
        b.feed(&[5]);
        assert!(!b.mid_frame());
    }
}
