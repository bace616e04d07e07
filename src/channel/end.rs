//! A channel's two ends, before they are open: [`MessageChannel::new`]
//! makes a socketpair, and each [`ChannelEnd`] is one side of it, typed
//! with what it sends and what it receives. An end is a value of an
//! ordinary message: written, it travels as a descriptor beside the
//! message (as a shared buffer does, `wire/shared/carry.rs`), so it goes
//! to a worker inside a post, and a worker may pass it on.
//!
//! What an end writes in a payload is an enum named `ChannelEnd` of one
//! variant, `Descriptor`, holding (u32 index, bool first, u64 fingerprint):
//! the descriptor's index among the message's, whether this end speaks
//! first in the channel's hello, and the fingerprint of the channel's
//! protocol, read from the first end's side (see [`fingerprint`]). The
//! receiver refuses an end whose fingerprint is not that of the type it
//! decodes it as; the channel's own hello checks it again between the two
//! ends.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::ShapeError;
use crate::protocol::Protocol;
use crate::session::shape;
use crate::wire::shared::carry::{self, EndOnWire};

/// A channel between two workers (or a worker and the parent), like the
/// Web's `new MessageChannel()`: two ends of one socketpair. The end that
/// sends `A` and receives `B`, and the end that sends `B` and receives
/// `A`. Post each end to the worker that is to hold it, inside an ordinary
/// message; there it is [opened](ChannelEnd::open) into a
/// [`Channel`](crate::Channel), and the two workers talk with the parent
/// out of the way.
///
/// ```
/// use actix_webworker::{ChannelEnd, MessageChannel};
///
/// let (rows, sink): (ChannelEnd<String, u64>, ChannelEnd<u64, String>) =
///     MessageChannel::<String, u64>::new().unwrap();
/// # drop((rows, sink));
/// ```
pub struct MessageChannel<A, B>(PhantomData<fn() -> (A, B)>);

impl<A, B> MessageChannel<A, B>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    B: Serialize + DeserializeOwned + Send + 'static,
{
    /// A new channel's two ends: the first sends `A` (and speaks first in
    /// the channel's hello), the second sends `B`. Fails only when the
    /// system gives no socketpair.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> std::io::Result<(ChannelEnd<A, B>, ChannelEnd<B, A>)> {
        let (one, two) = UnixStream::pair()?;
        // Ends are written as descriptors from now on.
        carry::descriptors_in_values();
        Ok((ChannelEnd::new(one.into(), true), ChannelEnd::new(two.into(), false)))
    }
}

/// One end of a [`MessageChannel`]: it sends `S` and receives `R`. Put it
/// in a message to hand it to a worker (it travels as a descriptor), or
/// [open](ChannelEnd::open) it where it is.
///
/// Written into a message for a remote worker (over TCP, which carries no
/// descriptors), the message is refused with
/// [`WorkerError::NoDescriptors`](crate::WorkerError::NoDescriptors).
/// Written twice (posted to two workers), both get the same end: don't.
pub struct ChannelEnd<S, R> {
    /// `None` only for the value a type's shape is traced with.
    pub(crate) fd: Option<OwnedFd>,
    /// Whether this end speaks first in the channel's hello.
    pub(crate) first: bool,
    _types: PhantomData<fn() -> (S, R)>,
}

impl<S, R> ChannelEnd<S, R> {
    fn new(fd: OwnedFd, first: bool) -> Self {
        ChannelEnd { fd: Some(fd), first, _types: PhantomData }
    }
}

impl<S, R> fmt::Debug for ChannelEnd<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelEnd").field("fd", &self.fd).field("first", &self.first).finish()
    }
}

/// A channel's protocol, seen from one end: what it sends and receives.
pub(crate) struct Line<S, R>(PhantomData<fn() -> (S, R)>);

impl<S, R> Protocol for Line<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type ToWorker = S;
    type FromWorker = R;
}

/// The fingerprint of the channel an end of `(S, R)` belongs to, as the
/// first end reads it (what it sends, then what it receives), so that both
/// ends compute the same one.
pub(crate) fn fingerprint<S, R>(first: bool) -> Result<u64, ShapeError>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    match first {
        true => shape::fingerprint::<Line<S, R>>(),
        false => shape::fingerprint::<Line<R, S>>(),
    }
}

/// The index of an end that names no socket.
const NO_SOCKET: u32 = u32::MAX;

impl<S, R> Serialize for ChannelEnd<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        let fp = fingerprint::<S, R>(self.first).map_err(ser::Error::custom)?;
        let index = match &self.fd {
            Some(fd) => carry::send_descriptor(fd.as_fd()).map_err(ser::Error::custom)?,
            // The value a shape was traced with, written back by the
            // tracing's checks: it names no descriptor.
            None => NO_SOCKET,
        };
        EndOnWire::Descriptor((index, self.first, fp)).serialize(s)
    }
}

impl<'de, S, R> Deserialize<'de> for ChannelEnd<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let EndOnWire::Descriptor((index, first, theirs)) = EndOnWire::deserialize(d)?;
        let fd = match index {
            NO_SOCKET => None,
            index => carry::take_descriptor(index as usize).map_err(de::Error::custom)?,
        };
        let Some(fd) = fd else {
            // A shape being traced, or an end that names no socket (which
            // opens as closed, `CloseReason::Refused`): nothing to check.
            return Ok(ChannelEnd { fd: None, first, _types: PhantomData });
        };
        let ours = fingerprint::<S, R>(first).map_err(de::Error::custom)?;
        if ours != theirs {
            return Err(de::Error::custom(format!(
                "a channel end of another protocol (fingerprint {theirs:#x}, this side's \
                 {ours:#x})"
            )));
        }
        carry::descriptors_in_values();
        Ok(ChannelEnd::new(fd, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Codec;
    use crate::wire::encode::encode_sharing;
    use crate::wire::envelope::Header;
    use crate::wire::shared::carry::decode_with;

    const MAX: usize = 1 << 20;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Hand {
        pub name: String,
        pub end: ChannelEnd<String, u64>,
    }

    #[derive(Serialize, Deserialize)]
    struct OtherHand {
        name: String,
        end: ChannelEnd<String, u32>,
    }

    fn encoded(
        hand: &Hand,
        fds_ok: bool,
    ) -> Result<(bytes::Bytes, Vec<OwnedFd>), crate::error::WorkerError> {
        let fds = fds_ok.then(Vec::new);
        encode_sharing((Codec::Bincode, Header::post(0).unwrap(), None), hand, fds, MAX)
            .map(|(msg, fds)| (msg.contiguous(), fds))
    }

    #[test]
    fn an_end_travels_as_a_descriptor_and_is_checked_against_its_type() {
        let (one, _two) = MessageChannel::<String, u64>::new().unwrap();
        let hand = Hand { name: "a".into(), end: one };
        let (bytes, fds) = encoded(&hand, true).unwrap();
        assert_eq!((fds.len(), usize::from(bytes[1])), (1, 1), "one descriptor, counted");
        let (header, payload) = crate::wire::envelope::decode(&bytes).unwrap();
        assert_eq!(header.kind, crate::wire::envelope::Kind::Post);
        let dup = || vec![fds[0].try_clone().unwrap()];
        let (back, rest, held) = decode_with::<Hand>(Codec::Bincode, payload, dup(), MAX);
        let back = back.unwrap();
        assert!(back.end.fd.is_some() && back.end.first && rest.is_empty());
        assert_eq!(held.fds, 1);
        // Decoded as an end of another protocol, whose shape is traced
        // only now, in the middle of the message: refused, named.
        let (other, ..) = decode_with::<OtherHand>(Codec::Bincode, payload, dup(), MAX);
        let err = other.err().expect("refused").to_string();
        assert!(err.contains("another protocol"), "{err}");
        // With no descriptor: refused.
        let (none, ..) = decode_with::<Hand>(Codec::Bincode, payload, Vec::new(), MAX);
        assert!(none.is_err());
    }

    #[test]
    fn an_end_for_a_peer_without_descriptors_is_refused_as_such() {
        let (one, _two) = MessageChannel::<String, u64>::new().unwrap();
        let refused = encoded(&Hand { name: "a".into(), end: one }, false);
        assert!(matches!(refused, Err(crate::error::WorkerError::NoDescriptors)), "{refused:?}");
        assert!(!carry::take_refused(), "the flag was taken");
    }

    #[test]
    fn both_ends_name_the_same_channel() {
        let first = fingerprint::<String, u64>(true).unwrap();
        assert_eq!(first, fingerprint::<u64, String>(false).unwrap());
        assert_ne!(first, fingerprint::<u64, String>(true).unwrap(), "the other direction");
        // Its shape is traceable: a message holding one is a protocol.
        assert!(shape::shape_of::<Hand>().is_ok());
    }
}
