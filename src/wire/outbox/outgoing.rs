//! One item of the outbox: a message for the writer, or the end.

use std::os::fd::OwnedFd;

use super::run::Run;
use crate::wire::envelope::Kind;
use crate::wire::segments::Segments;

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue is at its bound.
    Full,
    /// The queue takes no more messages.
    Ended,
    /// The connection the message was made for has ended (see
    /// `Outbox::try_push_on`).
    Moved,
}

/// One item for the writer.
pub(crate) enum Outgoing {
    /// A complete message (header and payload, in one piece or several)
    /// and its descriptors.
    Frame { bytes: Segments, fds: Vec<OwnedFd> },
    /// Small posts without descriptors, one after the other, as one batch
    /// (see `run.rs`).
    Posts(Run),
    /// Close the connection after everything queued before this.
    End,
}

impl Outgoing {
    /// The kind of message this is (`None` for the end).
    fn kind(&self) -> Option<u8> {
        match self {
            Outgoing::Frame { bytes, .. } => bytes.first(),
            Outgoing::Posts(_) => Some(Kind::Post as u8),
            Outgoing::End => None,
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        match self {
            Outgoing::Frame { bytes, .. } => bytes.len(),
            Outgoing::Posts(run) => run.len(),
            Outgoing::End => 0,
        }
    }

    /// How many messages it is.
    #[inline]
    pub(crate) fn messages(&self) -> usize {
        match self {
            Outgoing::Frame { .. } => 1,
            Outgoing::Posts(run) => run.count(),
            Outgoing::End => 0,
        }
    }

    pub(crate) fn is_post(&self) -> bool {
        self.kind() == Some(Kind::Post as u8)
    }

    pub(super) fn is_reply(&self) -> bool {
        matches!(self.kind(), Some(k) if k == Kind::Answer as u8 || k == Kind::Failed as u8)
    }
}
