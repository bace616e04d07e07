//! Runs of small posts: posts without descriptors, queued one after the
//! other, are written into one buffer as the entries of a batch, under the
//! outbox's lock, as they come. The writer sends a run as it is, one
//! WebSocket message: no piece of its own per post to take, hold, copy
//! into a batch and drop.
//!
//! A run is a batch's bytes from its header on, and the number of its
//! posts. It is written where an earlier run was, once that one has been
//! written and dropped (see [`RunBufs`]).

use bytes::{Bytes, BytesMut};

use crate::wire::envelope::{
    self, batch_entry, Kind, BATCH_ENTRY_HEADER, BATCH_HEADER, BATCH_TARGET, MAX_BATCH,
};
use crate::wire::segments::Segments;

/// Posts in a batch's entries, oldest first.
pub(crate) struct Run {
    batch: BytesMut,
    count: usize,
}

impl Run {
    /// An empty run in `buf` (empty).
    fn new(mut buf: BytesMut) -> Run {
        envelope::begin(&mut buf, envelope::Header::bare(Kind::Batch));
        Run { batch: buf, count: 0 }
    }

    /// Whether an entry of `entry` bytes goes in this run, keeping the
    /// whole batch within `limit`: a run takes no more once it is as large
    /// as a batch the writer makes of its own.
    fn has_room(&self, entry: usize, limit: usize) -> bool {
        self.batch.len() < BATCH_HEADER + BATCH_TARGET && self.batch.len() + entry <= limit
    }

    fn push(&mut self, msg: &[u8]) {
        envelope::push_batch_entry(&mut self.batch, msg);
        self.count += 1;
    }

    /// Appends `msg`, a small post, when this run has room for it within
    /// `limit` (true), or says a new run must start (false).
    pub(super) fn append(&mut self, msg: &[u8], limit: usize) -> bool {
        if !self.has_room(BATCH_ENTRY_HEADER + msg.len(), limit) {
            return false;
        }
        self.push(msg);
        true
    }

    /// How many posts it holds.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The bytes of its posts (what they count against the outbox's
    /// bound, as each would alone), the batch's framing left out.
    pub(crate) fn len(&self) -> usize {
        self.batch.len() - BATCH_HEADER - BATCH_ENTRY_HEADER * self.count
    }

    /// The whole batch, as it is written.
    pub(crate) fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// The memory it holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.batch.capacity()
    }

    /// The batch to write.
    pub(crate) fn into_batch(self) -> Bytes {
        self.batch.freeze()
    }

    /// A run that was taken as `batch` (see [`into_batch`](Self::into_batch))
    /// and never written, given back.
    pub(crate) fn given_back(batch: &Segments, count: usize) -> Run {
        Run { batch: BytesMut::from(batch.contiguous()), count }
    }

    /// Its posts, each a message of its own (copied), in order: for a
    /// peer that takes no WebSocket message as large as the run.
    pub(crate) fn posts(&self) -> Vec<Segments> {
        let batch = Bytes::copy_from_slice(&self.batch);
        let mut posts = Vec::new();
        let mut pos = BATCH_HEADER;
        // Written by `push`: every entry is whole.
        while let Ok(Some(range)) = batch_entry(&batch, pos) {
            pos = range.end;
            posts.push(batch.slice(range).into());
        }
        posts
    }
}

/// How many buffers of a batch's size runs are written in, at most.
const RUN_BUFS: usize = 4;

/// The buffers runs are written in: each taken again, whole, once the run
/// written in it has been written and dropped (a fresh 64 KiB buffer per
/// run would have the allocator merge every small block freed since, each
/// time, as `writer.rs`'s batches did). While every one is held (runs
/// queued behind a slow peer), no run starts: posts are queued as
/// messages of their own, as before runs, so that runs of a post or two
/// each (posts between requests) never hold a buffer per post.
#[derive(Default)]
pub(crate) struct RunBufs {
    /// `None`: not allocated yet.
    bufs: [Option<BytesMut>; RUN_BUFS],
}

impl RunBufs {
    /// A new run of `msg` alone, in a buffer of its own; `None` when even
    /// that would be over `limit`, or while every buffer is held (the post
    /// goes as a message of its own).
    pub(super) fn start(&mut self, msg: &[u8], limit: usize) -> Option<Run> {
        if BATCH_HEADER + BATCH_ENTRY_HEADER + msg.len() > limit {
            return None;
        }
        let mut run = self.empty_run()?;
        run.push(msg);
        Some(run)
    }

    /// An empty run, in a buffer of its own; `None` while every one is held.
    fn empty_run(&mut self) -> Option<Run> {
        let mut unused = None;
        for slot in &mut self.bufs {
            match slot {
                Some(buf) => {
                    if buf.try_reclaim(MAX_BATCH) {
                        return Some(Run::new(buf.split_off(0)));
                    }
                }
                None => unused = unused.or(Some(slot)),
            }
        }
        // All of it, sharing the allocation with the handle kept here.
        let slot = unused?;
        Some(Run::new(slot.insert(BytesMut::with_capacity(MAX_BATCH)).split_off(0)))
    }
}

#[cfg(test)]
impl RunBufs {
    /// Whether it holds a buffer (no run written in it is held elsewhere).
    pub(crate) fn holding(&mut self) -> bool {
        self.bufs.iter_mut().flatten().any(|buf| buf.try_reclaim(1))
    }
}
