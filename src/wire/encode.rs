//! A whole message, made: the envelope's header, then the payload, checked
//! against the size limit before anything is queued. Small messages are
//! cut from an arena, so that one allocation serves many; the large
//! buffers of [`InlineBytes`](super::inline::InlineBytes) in a message are
//! referenced, not copied, and the message is made of pieces
//! (`segments.rs`).

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::codec;
use super::envelope::{Header, BATCH_MESSAGE_MAX};
use super::inline;
use super::segments::Segments;
use super::shared::carry;
use super::trace::{begin_traced, CONTEXT_LEN};
use crate::error::{WireError, WorkerError};
use crate::protocol::Codec;

/// Encodes one complete message: `header`, then `data`; checks the
/// descriptor count and the size limit before anything is queued.
///
/// Small messages are cut from a per-thread arena (see [`encode_in`]).
/// For messages bound for one peer; a sender that feeds several queues
/// (the parent's `Worker` actors) gives each its own arena, so that
/// messages waiting for a slow worker pin only chunks of their own.
pub(crate) fn encode<M: Serialize + ?Sized>(
    codec: Codec,
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Segments, WorkerError> {
    in_thread_arena(|arena| encode_in(arena, codec, header, data, max_message_size))
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
    codec: Codec,
    header: Header,
    data: &M,
    max_message_size: usize,
) -> Result<Segments, WorkerError> {
    let encoded =
        encode_parts::<_, false>(arena, (codec, header, None), data, max_message_size, None, None);
    let encoded = encoded.map(made);
    arena.trim(encoded.as_ref().map(|(bytes, _)| bytes.len()));
    encoded.map(|(bytes, _)| bytes)
}

/// [`encode_in`] with descriptors: for a peer that takes them (`fds` is
/// `Some`), the shared buffers in `data` go as descriptors (see
/// `shared/carry.rs`), ahead of the message's own `fds` (which `header` counts
/// already); the message and all its descriptors, in order. For a peer
/// that takes none (`None`: a TCP peer), shared buffers go inline. A
/// traced request's `context` follows its header.
#[inline]
pub(crate) fn encode_in_sharing<M: Serialize + ?Sized>(
    arena: &mut Arena,
    (codec, header, context): (Codec, Header, Option<&[u8; CONTEXT_LEN]>),
    data: &M,
    fds: Option<Vec<OwnedFd>>,
    max_message_size: usize,
) -> Result<(Segments, Vec<OwnedFd>), WorkerError> {
    let encoded = encode_parts::<_, false>(
        arena,
        (codec, header, context),
        data,
        max_message_size,
        fds,
        None,
    );
    let encoded = encoded.map(made);
    arena.trim(encoded.as_ref().map(|(bytes, _)| bytes.len()));
    encoded
}

/// [`encode_in_sharing`] (or, without an arena, [`encode_sharing`]) for
/// a post that may be appended where it is made: when the message is
/// small (at most `BATCH_MESSAGE_MAX`), in one piece and carries no
/// descriptor, it is handed to `append`, and once that took it (true),
/// nothing is cut from the arena: `None`.
pub(crate) fn encode_or_append<M: Serialize + ?Sized>(
    arena: Option<&mut Arena>,
    head: (Codec, Header, Option<&[u8; CONTEXT_LEN]>),
    data: &M,
    fds: Option<Vec<OwnedFd>>,
    max_message_size: usize,
    append: Append<'_>,
) -> Result<Option<(Segments, Vec<OwnedFd>)>, WorkerError> {
    let Some(arena) = arena else {
        return in_thread_arena(|arena| {
            encode_parts::<_, true>(arena, head, data, max_message_size, fds, Some(append))
        });
    };
    let encoded = encode_parts::<_, true>(arena, head, data, max_message_size, fds, Some(append));
    arena.trim(encoded.as_ref().map(|made| made.as_ref().map_or(0, |(bytes, _)| bytes.len())));
    encoded
}

/// Takes a small post where it was encoded (true), or leaves it to be cut
/// from the arena (see [`encode_or_append`]).
pub(crate) type Append<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// What [`encode_parts`] made, given nothing to append to.
fn made<T>(encoded: Option<T>) -> T {
    encoded.unwrap_or_else(|| unreachable!("only a message handed to `append` is not returned"))
}

/// What to give [`encode_in_sharing`] and [`encode_sharing`] for a peer
/// that takes descriptors (`fds_ok`), or not (a TCP peer: shared buffers
/// go inline, and descriptors of the message's own are refused).
pub(crate) fn descriptors(
    fds_ok: bool,
    fds: Vec<OwnedFd>,
) -> Result<Option<Vec<OwnedFd>>, WorkerError> {
    match (fds_ok, fds.is_empty()) {
        (true, _) => Ok(Some(fds)),
        (false, true) => Ok(None),
        (false, false) => Err(WorkerError::NoDescriptors),
    }
}

/// [`encode`] for a peer that takes descriptors (see [`encode_in_sharing`]).
#[inline]
pub(crate) fn encode_sharing<M: Serialize + ?Sized>(
    (codec, header, context): (Codec, Header, Option<&[u8; CONTEXT_LEN]>),
    data: &M,
    fds: Option<Vec<OwnedFd>>,
    max_message_size: usize,
) -> Result<(Segments, Vec<OwnedFd>), WorkerError> {
    in_thread_arena(|arena| {
        encode_parts::<_, false>(arena, (codec, header, context), data, max_message_size, fds, None)
            .map(made)
    })
}

/// The message and its descriptors: with `fds` (a peer that takes
/// descriptors), those of its shared buffers, then `fds`; else none.
/// `APPEND` says whether `append` may be given: the instance for
/// requests and answers (`false`) has no branch for it at all, so that
/// the posts' path does not change how theirs is compiled.
#[inline]
fn encode_parts<M: Serialize + ?Sized, const APPEND: bool>(
    arena: &mut Arena,
    (codec, header, context): (Codec, Header, Option<&[u8; CONTEXT_LEN]>),
    data: &M,
    max_message_size: usize,
    fds: Option<Vec<OwnedFd>>,
    append: Option<Append<'_>>,
) -> Result<Option<(Segments, Vec<OwnedFd>)>, WorkerError> {
    // A value that skips a field as it is written is refused, in debug
    // builds (the walk costs a pass over the value). Its shared buffers
    // are walked as descriptors (duplicated and closed again), not mapped.
    if cfg!(debug_assertions) {
        carry::collecting(|| codec::check_faithful(codec, data)).0?;
    }
    let Arena { buf, big, .. } = arena.with_room();
    // Left over only by a `Serialize` impl that panicked part-way.
    buf.clear();
    begin_traced(buf, header, context);
    let header = buf.len();
    let mut out = Spill { small: buf, big, spilled: false, referenced: Vec::new() };
    let (encoded, shared) = if fds.is_some() {
        carry::collecting(|| codec::encode_into_as(codec, data, &mut out))
    } else {
        (codec::encode_into_as(codec, data, &mut out), Vec::new())
    };
    let spilled = out.spilled;
    let referenced = std::mem::take(&mut out.referenced);
    let target = out.target();
    let size = target.len() - header + referenced.iter().map(|(_, b)| b.len()).sum::<usize>();
    let checked = match encoded {
        // A value that travels only as a descriptor, for a peer that
        // takes none (a channel's end to a remote worker).
        Err(_) if carry::take_refused() => Err(WorkerError::NoDescriptors),
        Err(e) => Err(e.into()),
        Ok(()) if size > max_message_size => {
            Err(WireError::TooLarge { size, limit: max_message_size }.into())
        }
        Ok(()) => count_shared(target, shared.len()),
    };
    // A small post in one piece with nothing to carry: appended from here,
    // the arena's room used again for the next.
    let alone = !spilled && referenced.is_empty() && shared.is_empty();
    if let (true, Ok(()), Some(append)) = (APPEND, &checked, append) {
        let no_fds = fds.as_ref().is_none_or(Vec::is_empty);
        if alone && no_fds && target.len() <= BATCH_MESSAGE_MAX && append(target) {
            target.clear();
            return Ok(None);
        }
    }
    let checked = checked.map(|()| target.split().freeze());
    if spilled {
        target.clear();
        if target.capacity() + checked.as_ref().map_or(0, Bytes::len) > BIG_KEEP {
            *target = BytesMut::new();
        }
    } else if checked.as_ref().map_or(true, |bytes| bytes.len() > ARENA_KEEP) {
        *target = BytesMut::new();
    }
    let bytes = Segments::assemble(checked?, referenced);
    Ok(Some(match fds {
        Some(fds) if shared.is_empty() => (bytes, fds),
        Some(fds) => (bytes, shared.into_iter().chain(fds).collect()),
        None => (bytes, Vec::new()),
    }))
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
    /// The last large message's buffer (see [`Spill`]), taken again once
    /// that message has been written and dropped.
    big: BytesMut,
    /// Keeps `big` only up to [`LEAN_BIG_KEEP`] (see [`lean`](Self::lean)).
    lean: bool,
    spare: [BytesMut; ARENA_SPARES],
    /// The spare slot given up next.
    next: usize,
}

impl Arena {
    /// An arena that keeps no large message's buffer over
    /// [`LEAN_BIG_KEEP`]: one past that is freed once written. For senders
    /// an application may hold by the hundred (ports), each of which would
    /// otherwise keep up to [`BIG_KEEP`] for its life (200 ports that each
    /// sent one 4 MiB message held 820 MiB: reliability review, finding
    /// 13). Their large messages land in fresh memory instead (slower to
    /// write into, as [`Spill`] says).
    pub(crate) fn lean() -> Self {
        Arena { lean: true, ..Arena::default() }
    }

    /// After a message of `encoded` bytes (or a failure): a lean arena lets
    /// go of a large message's buffer. One over [`LEAN_BIG_KEEP`] that
    /// spilled shares `big`'s allocation, which then goes with the message;
    /// one that did not spill left `big` as it was, within the bound.
    fn trim<E>(&mut self, encoded: Result<usize, E>) {
        if self.lean && encoded.map_or(true, |len| len > LEAN_BIG_KEEP) {
            self.big = BytesMut::new();
        }
    }

    /// The arena, its buffer with at least [`ARENA_MIN_ROOM`] left.
    #[inline]
    fn with_room(&mut self) -> &mut Self {
        if self.buf.capacity() < ARENA_MIN_ROOM {
            self.renew();
        }
        self
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

/// Where a message is encoded: the arena's buffer, until one write would
/// not fit in its room and takes the message past [`ARENA_KEEP`]; then the
/// message so far moves to a buffer of its own (the last large message's,
/// if that one has been dropped since). Large messages so land in memory
/// already touched instead of a fresh allocation, whose pages fault in one
/// by one (and which the allocator hands back to the kernel when freed):
/// that was a tenth of the sender's time with 1 MiB messages.
///
/// The buffer of an `InlineBytes` being written (see `inline.rs`) is not
/// written: it is `referenced`, with the offset in the message it goes at.
struct Spill<'a> {
    small: &'a mut BytesMut,
    big: &'a mut BytesMut,
    spilled: bool,
    referenced: Vec<(usize, Bytes)>,
}

impl Spill<'_> {
    fn target(&mut self) -> &mut BytesMut {
        if self.spilled {
            self.big
        } else {
            self.small
        }
    }

    /// Refers to `bytes` where they go, instead of writing them.
    #[inline(never)]
    fn refer(&mut self, bytes: Bytes) {
        // Offsets count from the message's start, in either buffer.
        let at = self.target().len();
        self.referenced.push((at, bytes));
    }

    #[cold]
    fn spill(&mut self, more: usize) {
        let needed = self.small.len() + more;
        if !self.big.try_reclaim(needed) {
            *self.big = BytesMut::with_capacity(needed);
        }
        self.big.clear();
        self.big.extend_from_slice(self.small);
        self.small.clear();
        self.spilled = true;
    }
}

// SAFETY: every method hands on to the buffer written to, itself a
// `BufMut`; `put_slice` may first move what was written to the other,
// which is only done between writes.
unsafe impl bytes::BufMut for Spill<'_> {
    #[inline]
    fn remaining_mut(&self) -> usize {
        if self.spilled {
            self.big.remaining_mut()
        } else {
            self.small.remaining_mut()
        }
    }

    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: as the caller promised for this buffer's chunk.
        unsafe { self.target().advance_mut(cnt) }
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.target().chunk_mut()
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        if let Some(bytes) = inline::offered(src) {
            return self.refer(bytes);
        }
        if !self.spilled
            && src.len() > self.small.capacity() - self.small.len()
            && self.small.len() + src.len() > ARENA_KEEP
        {
            self.spill(src.len());
        }
        self.target().put_slice(src);
    }
}

/// A large message's buffer is kept for the next one up to this size.
const BIG_KEEP: usize = 4 << 20;
/// The same for a [lean](Arena::lean) arena: no more than an arena chunk.
const LEAN_BIG_KEEP: usize = ARENA_CHUNK;
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
mod tests;
