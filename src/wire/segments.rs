//! A message as it is encoded for the writer: one buffer, or, when it holds
//! large [`InlineBytes`](super::inline::InlineBytes), the pieces the
//! encoder wrote with those bytes between them, referenced where the
//! sender keeps them rather than copied (see `encode.rs`). The pieces are
//! written back to back, one vectored write, in one WebSocket frame: on the
//! wire the message is the same bytes as if it had been one buffer.
//!
//! Everything that counts a message's bytes (the outbox's bound, the
//! message size limit) counts all of its pieces: a referenced piece is
//! memory the message holds.

use bytes::Bytes;

/// An encoded message: the first piece (which starts with the envelope's
/// header), then any further pieces, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Segments {
    head: Bytes,
    /// `None` for a message in one piece.
    rest: Option<Box<[Bytes]>>,
}

impl Segments {
    /// The message whose pieces are what the encoder wrote (`written`,
    /// which starts with the header) with `referenced` buffers inserted,
    /// each at its offset in `written`, offsets in order.
    #[inline]
    pub(crate) fn assemble(written: Bytes, referenced: Vec<(usize, Bytes)>) -> Self {
        if referenced.is_empty() {
            return Segments::from(written);
        }
        Segments::pieced(written, referenced)
    }

    /// [`assemble`](Self::assemble) with pieces.
    #[inline(never)]
    fn pieced(written: Bytes, referenced: Vec<(usize, Bytes)>) -> Self {
        let mut pieces = Vec::with_capacity(2 * referenced.len() + 1);
        let mut from = 0;
        for (at, bytes) in referenced {
            if at > from {
                pieces.push(written.slice(from..at));
            }
            pieces.push(bytes);
            from = at;
        }
        if from < written.len() {
            pieces.push(written.slice(from..));
        }
        let mut pieces = pieces.into_iter();
        let head = pieces.next().unwrap_or_default();
        Segments { head, rest: Some(pieces.collect()) }
    }

    /// The whole message's length, every piece counted.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.rest().iter().map(Bytes::len).sum::<usize>()
    }

    /// The pieces after the first.
    #[inline]
    fn rest(&self) -> &[Bytes] {
        self.rest.as_deref().unwrap_or_default()
    }

    /// The message's first byte (its kind).
    #[inline]
    pub(crate) fn first(&self) -> Option<u8> {
        match self.head.first() {
            Some(&first) => Some(first),
            None => self.rest().iter().find_map(|piece| piece.first().copied()),
        }
    }

    /// The message, if it is one piece.
    #[inline]
    pub(crate) fn as_whole(&self) -> Option<&Bytes> {
        self.rest.is_none().then_some(&self.head)
    }

    /// The pieces, in order.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.head).chain(self.rest().iter())
    }

    /// The message as one buffer: itself if it is one piece, else a copy
    /// (for the few places that need it contiguous, none of them on the
    /// path of a large message).
    pub(crate) fn contiguous(&self) -> Bytes {
        match self.as_whole() {
            Some(whole) => whole.clone(),
            None => {
                let mut out = Vec::with_capacity(self.len());
                self.pieces().for_each(|piece| out.extend_from_slice(piece));
                out.into()
            }
        }
    }
}

impl From<Bytes> for Segments {
    #[inline]
    fn from(head: Bytes) -> Self {
        Segments { head, rest: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_go_where_they_were_referenced() {
        let written = Bytes::from_static(b"headmiddletail");
        let (a, b) = (Bytes::from_static(b"AAAA"), Bytes::from_static(b"BB"));
        let msg = Segments::assemble(written, vec![(4, a.clone()), (10, b.clone())]);
        assert_eq!(msg.contiguous(), Bytes::from_static(b"headAAAAmiddleBBtail"));
        assert_eq!(msg.len(), 20);
        assert_eq!(msg.pieces().count(), 5);
        assert!(msg.as_whole().is_none());
        assert_eq!(msg.first(), Some(b'h'));
        // Referenced, not copied.
        assert_eq!(msg.pieces().nth(1).unwrap().as_ptr(), a.as_ptr());
        // Back to back, and at the very end: no empty pieces.
        let end = Segments::assemble(Bytes::from_static(b"hd"), vec![(2, a), (2, b)]);
        assert_eq!(end.pieces().count(), 3);
        assert_eq!(end.contiguous(), Bytes::from_static(b"hdAAAABB"));
    }

    #[test]
    fn one_piece_is_itself() {
        let written = Bytes::from_static(b"whole");
        let msg = Segments::assemble(written.clone(), Vec::new());
        assert_eq!(msg.as_whole(), Some(&written));
        assert_eq!(msg.contiguous().as_ptr(), written.as_ptr());
    }
}
