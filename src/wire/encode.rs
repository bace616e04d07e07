//! A whole message, made: the envelope's header, then the payload, checked
//! against the size limit before anything is queued. Small messages are
//! cut from an arena, so that one allocation serves many.

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::frame::{self, Header};
use super::{codec, shared};
use crate::error::{WireError, WorkerError};

/// Encodes one complete message: `header`, then `data`; checks the
/// descriptor count and the size limit before anything is queued.
///
/// Small messages are cut from a per-thread arena (see [`encode_in`]).
/// For messages bound for one peer; a sender that feeds several queues
/// (the parent's `Worker` actors) gives each its own arena, so that
/// messages waiting for a slow worker pin only chunks of their own.
pub(crate) fn encode<M: Serialize + ?Sized>(
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Bytes, WorkerError> {
    in_thread_arena(|arena| encode_in(arena, header, data, max_message_size))
}

/// `f` with this thread's arena, or with a buffer of its own when encoding
/// from inside a `Serialize` impl that is itself being encoded, or while
/// the thread is being torn down.
fn in_thread_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    let mut f = Some(f);
    let from_arena = ARENA.try_with(|arena| {
        let mut arena = arena.try_borrow_mut().ok()?;
        f.take().map(|f| f(&mut arena))
    });
    match (from_arena, f) {
        (Ok(Some(done)), _) => done,
        (_, Some(f)) => f(&mut Arena::default()),
        (_, None) => unreachable!("`f` runs once, in the arena or not"),
    }
}

/// [`encode`] into a slice cut from `arena`: one allocation serves many
/// small messages, and is reused whole once they have all been dropped. A
/// message larger than [`ARENA_KEEP`], or one that fails, leaves the arena
/// starting afresh, so it never holds on to the memory of its largest
/// message.
pub(crate) fn encode_in<M: Serialize + ?Sized>(
    arena: &mut Arena,
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Bytes, WorkerError> {
    encode_parts(arena, header, data, max_message_size, None).map(|(bytes, _)| bytes)
}

/// [`encode_in`] for a peer that takes descriptors: the shared buffers in
/// `data` go as descriptors (see `shared.rs`), ahead of the message's own
/// `fds` (which `header` counts already); the message and all its
/// descriptors, in order.
#[inline]
pub(crate) fn encode_in_sharing<M: Serialize + ?Sized>(
    arena: &mut Arena,
    header: Header,
    data: &M,
    fds: Vec<OwnedFd>,
    max_message_size: usize,
) -> Result<(Bytes, Vec<OwnedFd>), WorkerError> {
    encode_parts(arena, header, data, max_message_size, Some(fds))
}

/// [`encode`] for a peer that takes descriptors (see [`encode_in_sharing`]).
#[inline]
pub(crate) fn encode_sharing<M: Serialize + ?Sized>(
    header: Header,
    data: &M,
    fds: Vec<OwnedFd>,
    max_message_size: usize,
) -> Result<(Bytes, Vec<OwnedFd>), WorkerError> {
    in_thread_arena(|arena| encode_parts(arena, header, data, max_message_size, Some(fds)))
}

/// The message and its descriptors: with `fds` (a peer that takes
/// descriptors), those of its shared buffers, then `fds`; else none.
#[inline]
fn encode_parts<M: Serialize + ?Sized>(
    arena: &mut Arena,
    header: Header,
    data: &M,
    max_message_size: usize,
    fds: Option<Vec<OwnedFd>>,
) -> Result<(Bytes, Vec<OwnedFd>), WorkerError> {
    let arena = arena.with_room();
    // Left over only by a `Serialize` impl that panicked part-way.
    arena.clear();
    frame::begin(arena, header);
    let header = arena.len();
    let (encoded, shared) = if fds.is_some() {
        shared::collecting(|| codec::encode_into(data, arena))
    } else {
        (codec::encode_into(data, arena), Vec::new())
    };
    let size = arena.len() - header;
    let checked = match encoded {
        Err(e) => Err(e.into()),
        Ok(()) if size > max_message_size => {
            Err(WireError::TooLarge { size, limit: max_message_size }.into())
        }
        Ok(()) => count_shared(arena, shared.len()).map(|()| arena.split().freeze()),
    };
    if checked.as_ref().map_or(true, |bytes| bytes.len() > ARENA_KEEP) {
        *arena = BytesMut::new();
    }
    let bytes = checked?;
    Ok(match fds {
        Some(fds) if shared.is_empty() => (bytes, fds),
        Some(fds) => (bytes, shared.into_iter().chain(fds).collect()),
        None => (bytes, Vec::new()),
    })
}

/// Adds `shared` descriptors to the count in the header of the message
/// that starts `arena`.
fn count_shared(arena: &mut BytesMut, shared: usize) -> Result<(), WorkerError> {
    if shared == 0 {
        return Ok(());
    }
    let count = usize::from(arena[1]) + shared;
    let limit = super::MAX_FDS_PER_MESSAGE;
    if count > limit {
        return Err(WireError::TooManyFds { count, limit }.into());
    }
    arena[1] = count as u8;
    Ok(())
}

/// Buffers that small messages are cut from: the one being cut, and the
/// last few given up, each kept by the rest of its room so that it can be
/// taken again whole once every message cut from it has been written and
/// dropped. A sender that keeps a queue of many messages goes round them
/// instead of allocating (and the allocator freeing and consolidating) a
/// fresh buffer every [`ARENA_CHUNK`] bytes.
#[derive(Default)]
pub(crate) struct Arena {
    buf: BytesMut,
    spare: [BytesMut; ARENA_SPARES],
    /// The spare slot given up next.
    next: usize,
}

impl Arena {
    /// The buffer to encode into, with at least [`ARENA_MIN_ROOM`] left.
    #[inline]
    fn with_room(&mut self) -> &mut BytesMut {
        if self.buf.capacity() < ARENA_MIN_ROOM {
            self.renew();
        }
        &mut self.buf
    }

    #[cold]
    fn renew(&mut self) {
        // Nothing cut from it is alive any more: it is whole again.
        if self.buf.try_reclaim(ARENA_CHUNK) {
            return;
        }
        let reused = self.spare.iter_mut().position(|spare| spare.try_reclaim(ARENA_CHUNK));
        let slot = reused.unwrap_or(self.next);
        let given_up = std::mem::take(&mut self.buf);
        self.buf = std::mem::replace(&mut self.spare[slot], given_up);
        if reused.is_none() {
            // The oldest spare goes (what is cut from it lives on).
            self.next = (self.next + 1) % ARENA_SPARES;
            self.buf = BytesMut::with_capacity(ARENA_CHUNK);
        }
    }
}

/// How many given-up arena buffers are kept for reuse.
const ARENA_SPARES: usize = 4;
/// The size of a fresh arena buffer.
const ARENA_CHUNK: usize = 64 * 1024;
/// Below this much room a fresh arena buffer is taken before encoding.
const ARENA_MIN_ROOM: usize = 1024;
/// Messages over this size do not leave their buffer to the arena.
const ARENA_KEEP: usize = 16 * 1024;

thread_local! {
    static ARENA: RefCell<Arena> = RefCell::new(Arena::default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::Kind;

    fn post(data: &impl Serialize) -> Bytes {
        encode(Header::post(0).unwrap(), data, 1 << 20).unwrap()
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
        ARENA.with(|arena| assert!(arena.borrow().buf.capacity() < ARENA_KEEP));
        // Over the limit: an error, and the arena is left clean, whatever
        // the failed message grew it to.
        let refused = encode(Header::post(0).unwrap(), &vec![0u8; 64], 8);
        assert!(matches!(refused, Err(WorkerError::Wire(WireError::TooLarge { .. }))));
        let huge = serde_bytes::ByteBuf::from(vec![1u8; 8 << 20]);
        assert!(encode(Header::post(0).unwrap(), &huge, 1 << 20).is_err());
        ARENA.with(|arena| assert!(arena.borrow().buf.capacity() < ARENA_KEEP));
        assert_eq!(&post(&7u8)[..], &[Kind::Post as u8, 0, 7]);
    }

    #[test]
    fn an_arena_goes_round_its_buffers_once_their_messages_are_dropped() {
        let mut arena = Arena::default();
        // Where each buffer starts: the messages that do not follow on
        // from the one before.
        let mut end = std::ptr::null::<u8>();
        let mut starts = |arena: &mut Arena, n: usize, keep: &mut Vec<Bytes>| {
            let mut found = std::collections::HashSet::new();
            for _ in 0..n {
                let header = Header::post(0).unwrap();
                let msg = encode_in(arena, header, &[7u8; 1000][..], 1 << 20).unwrap();
                if msg.as_ptr() != end {
                    found.insert(msg.as_ptr() as usize);
                }
                end = msg.as_ptr().wrapping_add(msg.len());
                keep.push(msg);
            }
            found
        };
        // Held, as a deep queue holds them: each full buffer is given up,
        // and a fresh one taken, one more than the spares kept.
        let mut held = Vec::new();
        let first = starts(&mut arena, (ARENA_SPARES + 1) * 60, &mut held);
        assert_eq!(first.len(), ARENA_SPARES + 1);
        for msg in &held {
            let (_, payload) = frame::decode(msg).unwrap();
            assert_eq!(codec::decode::<Vec<u8>>(payload).unwrap(), vec![7u8; 1000]);
        }
        // Written and dropped (none freed: each buffer still kept): from
        // now on, only those buffers, again and again.
        drop(held);
        for _ in 0..5 {
            let mut dropped_at_once = Vec::new();
            let again = starts(&mut arena, 200, &mut dropped_at_once);
            assert!(again.is_subset(&first), "a fresh buffer: {again:?} not in {first:?}");
        }
    }

    /// Writes a field, then panics.
    struct Halfway;

    impl Serialize for Halfway {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&[9u8; 32])?;
            panic!("halfway");
        }
    }

    #[test]
    fn a_panic_part_way_leaves_nothing_in_the_next_message() {
        assert!(std::panic::catch_unwind(|| post(&Halfway)).is_err());
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
