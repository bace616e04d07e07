//! The writer task: drains an outbox into the WebSocket, in batches, and
//! keeps the books of what it wrote (see `stream/ledger.rs`), so that when
//! the connection ends what never left is given back.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::envelope::{
    self, Kind, BATCH_ENTRY_HEADER, BATCH_HEADER, BATCH_MESSAGE_MAX, BATCH_TARGET, MAX_BATCH,
};
use super::outbox::{Outbox, Outgoing, Run};
use super::segments::Segments;
use super::stream::ledger::Fate;
use super::stream::queues::{FdQueues, MAX_FDS_PER_SEND};
use super::ws::sink::{SinkHalf, WRITTEN_WHOLE};
use crate::error::WireError;

/// The writing half.
///
/// Every message it takes from the outbox stays on its books until the
/// ledger says what became of it (see `stream/ledger.rs`): when the
/// connection fails or the writer is stopped, [`WriterEnd`] gives back, in
/// order and with their descriptors, the messages that never reached the
/// kernel, and counts the posts that reached it but may not have been read.
pub(crate) struct Writer {
    sink: SinkHalf,
    fds: Arc<FdQueues>,
    /// Taken from the outbox, not yet fed.
    batch: VecDeque<Outgoing>,
    /// Small messages waiting to go out together as one batch.
    small: Vec<Lent>,
    /// Their size in a batch.
    small_bytes: usize,
    /// Lists of messages given back by the books, kept for the next
    /// batch: a batch of a thousand tiny ones grows none from empty.
    spare: Vec<Vec<Lent>>,
    /// What batches are built in: taken again whole once the batch last
    /// cut from it has been written, let go after [`BATCH_BUF_IDLE`] with
    /// no work (see [`feed_small`](Self::feed_small)).
    batch_buf: BytesMut,
    /// Whether it keeps books at all: a side with no next connection to
    /// give messages to (the worker's) does not.
    books: bool,
    /// Whether it has written runs of posts since it was last idle (the
    /// outbox's buffers for them are let go with `batch_buf`).
    runs_used: bool,
    /// WebSocket messages fed to tungstenite whose fate is not known yet;
    /// the first has frame index `fed_base`.
    fed: VecDeque<Fed>,
    fed_base: u64,
    /// Posts among them: only their fate is worth asking the kernel about
    /// (requests in doubt fail with the exit, whatever became of them).
    fed_posts: usize,
    /// How many of them (from the first) have started, their bytes dropped.
    fed_cleared: usize,
    /// The largest WebSocket message the peer takes: no batch is larger.
    max_ws_message: usize,
}

/// One message on the writer's books: its bytes, and how many descriptors
/// it carries (queued in the fd stream since it was fed); or a run of
/// posts (`run` of them, in one batch: see `outbox/run.rs`).
struct Lent {
    bytes: Segments,
    nfds: u32,
    run: u32,
}

impl Lent {
    /// How many posts it is.
    fn posts(&self) -> usize {
        match self.run {
            0 => usize::from(self.bytes.first() == Some(Kind::Post as u8)),
            run => run as usize,
        }
    }

    /// Back in the outbox's terms, with its descriptors.
    fn into_outgoing(self, fds: Vec<OwnedFd>) -> Outgoing {
        match self.run {
            0 => Outgoing::Frame { bytes: self.bytes, fds },
            run => Outgoing::Posts(Run::given_back(&self.bytes, run as usize)),
        }
    }
}

/// One WebSocket message fed: the messages it carries (dropped once it has
/// started to reach the kernel), and how many of them are posts.
struct Fed {
    msgs: Vec<Lent>,
    posts: usize,
}

/// What a writer leaves when it ends.
pub(crate) struct WriterEnd {
    /// Why it ended: `Ok` when stopped, or after the outbox's end went out.
    pub result: Result<(), WireError>,
    /// Messages that never reached the kernel, oldest first, with their
    /// descriptors: they can go to another connection.
    pub unsent: Vec<Outgoing>,
    /// Posts that reached the kernel (or whose descriptors did) and that
    /// the peer may not have read.
    pub in_doubt: usize,
}

/// How many emptied lists of messages a writer keeps for its next
/// batches, and the most room each keeps (in messages): at most 2 × 1,024
/// × 56 bytes, 112 KiB, per connection.
const SPARE_LISTS: usize = 2;
const SPARE_ROOM: usize = 1024;
const _: () = assert!(std::mem::size_of::<Lent>() <= 56, "the bound above counts 56 bytes");
/// How many times the writer lets others run before it flushes.
const YIELD_ROUNDS: usize = 2;
/// While idle with messages whose fate is unknown, the writer asks the
/// kernel after this long, then four times longer each time, up to
/// [`CONFIRM_MAX`].
const CONFIRM_FIRST: Duration = Duration::from_millis(1);
const CONFIRM_MAX: Duration = Duration::from_secs(1);
/// Beyond this many messages of unknown fate, the writer asks after a flush.
const CONFIRM_TRACKED: usize = 256;
/// A writer waiting this long for work lets its batch buffer go.
const BATCH_BUF_IDLE: Duration = Duration::from_millis(100);

impl Writer {
    /// A writer for the writing half of a connection.
    pub(crate) fn new(sink: SinkHalf) -> Self {
        // What went before the writer (the hello) has its frame indices.
        let fed_base = sink.fds.ledger().started();
        Writer {
            fds: sink.fds.clone(),
            max_ws_message: sink.max_ws_message,
            sink,
            batch: VecDeque::new(),
            small: Vec::new(),
            small_bytes: 0,
            spare: Vec::new(),
            batch_buf: BytesMut::new(),
            books: true,
            runs_used: false,
            fed: VecDeque::new(),
            fed_base,
            fed_posts: 0,
            fed_cleared: 0,
        }
    }

    /// A writer that keeps no books: its [`WriterEnd`] gives nothing back.
    pub(crate) fn without_books(mut self) -> Self {
        self.books = false;
        self
    }

    /// Whether asking the kernel what the peer has read may tell something
    /// worth knowing.
    fn worth_confirming(&self) -> bool {
        self.fed_posts > 0 && self.fds.ledger().unconfirmed()
    }

    /// Drains `outbox` until it is ended, the connection fails, or `stop`
    /// fires (or is dropped); then says what became of what it took.
    pub(crate) async fn run(
        mut self,
        outbox: Arc<Outbox>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> WriterEnd {
        let result = tokio::select! {
            result = self.drive(&outbox) => result,
            _ = stop => Ok(()),
        };
        self.end(result)
    }

    /// What the books say, once the writer no longer runs.
    fn end(mut self, result: Result<(), WireError>) -> WriterEnd {
        let ledger = self.fds.ledger();
        let mut in_doubt = 0;
        // Lent messages that never left, oldest first.
        let mut lent = Vec::new();
        for (i, fed) in self.fed.drain(..).enumerate() {
            match ledger.fate(self.fed_base + i as u64) {
                Fate::Read => {}
                Fate::InDoubt => in_doubt += fed.posts,
                Fate::Unsent => lent.extend(fed.msgs),
            }
        }
        drop(ledger);
        lent.append(&mut self.small);
        // Their descriptors are the newest not yet sent. One that rode
        // ahead on an earlier message's bytes went with it: that message
        // cannot be sent again whole, and counts as in doubt.
        let wanted = lent.iter().map(|m| m.nfds as usize).sum();
        let mut back = self.fds.take_back_outgoing(wanted);
        let mut unsent = VecDeque::with_capacity(lent.len() + self.batch.len());
        for msg in lent.into_iter().rev() {
            let nfds = msg.nfds as usize;
            if back.len() < nfds {
                back.clear();
                in_doubt += msg.posts();
                continue;
            }
            let fds = back.split_off(back.len() - nfds);
            unsent.push_front(msg.into_outgoing(fds));
        }
        unsent.extend(self.batch.drain(..));
        WriterEnd { result, unsent: unsent.into(), in_doubt }
    }

    /// The writing loop: what the outbox holds is taken at once, small
    /// messages are put together in batches, everything is fed to the
    /// WebSocket and flushed once. Every await leaves the books whole: a
    /// message is either still in `batch`, or in `small` or `fed`.
    async fn drive(&mut self, outbox: &Outbox) -> Result<(), WireError> {
        loop {
            self.wait_for_work(outbox).await;
            let mut rounds = 0;
            loop {
                let taken = self.batch.len();
                while !self.batch.is_empty() {
                    if self.feed_next().await? {
                        return Ok(());
                    }
                }
                // Before the flush, while messages come several at a time,
                // a turn for whoever else is ready to run: what they queue
                // goes in the same write. A lone message (a round trip)
                // goes at once.
                rounds += 1;
                if taken < 2 || rounds > YIELD_ROUNDS {
                    break;
                }
                tokio::task::yield_now().await;
                if !outbox.try_take_batch(&mut self.batch) {
                    break;
                }
            }
            self.feed_small().await?;
            self.sink.flush().await?;
            if self.fed_posts > 0 && self.fds.ledger().tracked() > CONFIRM_TRACKED {
                self.fds.confirm();
            }
            self.settle();
        }
    }

    /// Waits for the outbox to hold something; meanwhile, and when work
    /// comes after a wait, asks the kernel what the peer has read of what
    /// was written (a peer answering a message has read it: before the next
    /// is written, the books say so).
    async fn wait_for_work(&mut self, outbox: &Outbox) {
        if outbox.try_take_batch(&mut self.batch) {
            return;
        }
        let mut after = CONFIRM_FIRST;
        loop {
            let unconfirmed = self.worth_confirming();
            tokio::select! {
                biased;
                _ = outbox.take_batch(&mut self.batch) => break,
                _ = tokio::time::sleep(after), if unconfirmed => {
                    self.fds.confirm();
                    self.settle();
                    after = (after * 4).min(CONFIRM_MAX);
                }
                _ = tokio::time::sleep(BATCH_BUF_IDLE), if self.batch_buf.capacity() > 0 || self.runs_used => {
                    self.batch_buf = BytesMut::new();
                    outbox.release_runs();
                    self.runs_used = false;
                }
            }
        }
        if self.worth_confirming() {
            self.fds.confirm();
            self.settle();
        }
    }

    /// Drops from the books what has started to reach the kernel (its
    /// bytes are no longer needed) and what the peer has read.
    fn settle(&mut self) {
        let ledger = self.fds.ledger();
        while let Some(fed) = self.fed.front() {
            if ledger.fate(self.fed_base) != Fate::Read {
                break;
            }
            self.fed_posts -= fed.posts;
            self.fed.pop_front();
            self.fed_base += 1;
            self.fed_cleared = self.fed_cleared.saturating_sub(1);
        }
        // Those that started since the last look.
        while let Some(fed) = self.fed.get_mut(self.fed_cleared) {
            if ledger.fate(self.fed_base + self.fed_cleared as u64) == Fate::Unsent {
                break;
            }
            spare(&mut self.spare, std::mem::take(&mut fed.msgs));
            self.fed_cleared += 1;
        }
    }

    /// Feeds the next item of `batch`, or holds it back to go with others
    /// in a batch; true once the outbox's end has gone out.
    async fn feed_next(&mut self) -> Result<bool, WireError> {
        // What it adds to a batch (a run, its entries), and whether it goes
        // alone.
        let (entry, nfds, alone) = match self.batch.front() {
            Some(Outgoing::Frame { bytes, fds }) => {
                let len = bytes.len();
                let alone = bytes.as_whole().is_none() || len > BATCH_MESSAGE_MAX;
                (BATCH_ENTRY_HEADER + len, fds.len(), alone)
            }
            // A run goes as it is, a batch alone, or, small, with others in
            // one; one larger than the peer takes goes as its posts, back at
            // the front one by one.
            Some(Outgoing::Posts(run)) if run.batch_len() > self.max_ws_message => {
                let Some(Outgoing::Posts(run)) = self.batch.pop_front() else { unreachable!() };
                for bytes in run.posts().into_iter().rev() {
                    self.batch.push_front(Outgoing::Frame { bytes, fds: Vec::new() });
                }
                return Ok(false);
            }
            Some(Outgoing::Posts(run)) => {
                let entries = run.batch_len() - BATCH_HEADER;
                (entries, 0, entries > BATCH_MESSAGE_MAX)
            }
            Some(Outgoing::End) => {
                self.feed_small().await?;
                self.sink.flush().await?;
                self.batch.pop_front();
                self.sink.close().await;
                return Ok(true);
            }
            None => return Ok(false),
        };
        // Keep every sendmsg within the kernel's limit: flush what rides
        // ahead before queueing more.
        if nfds > 0 && self.fds.outgoing_len() + nfds > MAX_FDS_PER_SEND {
            self.feed_small().await?;
            self.sink.flush().await?;
        }
        let alone = alone || BATCH_HEADER + entry > self.max_ws_message;
        if alone || BATCH_HEADER + self.small_bytes + entry > self.max_ws_message {
            self.feed_small().await?;
        }
        let msg = match self.batch.pop_front() {
            Some(Outgoing::Frame { bytes, fds }) => {
                self.fds.push_outgoing(fds);
                Lent { bytes, nfds: nfds as u32, run: 0 }
            }
            Some(Outgoing::Posts(run)) => {
                self.runs_used = true;
                let count = run.count() as u32;
                Lent { bytes: run.into_batch().into(), nfds: 0, run: count }
            }
            _ => unreachable!("the front was a frame or a run"),
        };
        if alone {
            let bytes = msg.bytes.clone();
            self.lend(vec![msg]);
            // Written from its own buffer, no copy into tungstenite's.
            // (Until the encoder kept the last large buffer for the next
            // message, a deep queue of these was copied instead: each
            // buffer let go at once was the allocator's next one, warm.
            // Now the copy costs more than it saved: `bulk_1mib`, runs
            // alternated, 2.2-2.8 -> 2.4-3.2 GB/s.) A message in pieces is
            // always written so, its pieces where they are.
            match bytes.as_whole() {
                Some(whole) if bytes.len() < WRITTEN_WHOLE => self.sink.feed(whole.clone()).await?,
                _ => self.sink.feed_whole(&bytes).await?,
            }
            return Ok(false);
        }
        self.small_bytes += entry;
        self.small.push(msg);
        if self.small_bytes >= BATCH_TARGET {
            self.feed_small().await?;
        }
        Ok(false)
    }

    /// Puts one WebSocket message's worth on the books, as fed.
    fn lend(&mut self, msgs: Vec<Lent>) {
        if !self.books {
            spare(&mut self.spare, msgs);
            return;
        }
        let posts = msgs.iter().map(Lent::posts).sum();
        self.fed_posts += posts;
        self.fed.push_back(Fed { msgs, posts });
    }

    /// Feeds the small messages held back: one alone as itself, several as
    /// a batch.
    async fn feed_small(&mut self) -> Result<(), WireError> {
        let msg = match self.small.len() {
            0 => return Ok(()),
            // Small messages are in one piece: `contiguous` copies nothing
            // (a run alone is a batch already).
            1 => self.small[0].bytes.contiguous(),
            // Built in the buffer the last batch was, once that one has
            // been written: a fresh 64 KiB block per batch had the
            // allocator merge every small block freed since (the caller's
            // envelopes) each time, a tenth of a stream's sending.
            _ => {
                let buf = batch_room(&mut self.batch_buf, BATCH_HEADER + self.small_bytes);
                envelope::begin(buf, envelope::Header::bare(Kind::Batch));
                for msg in &self.small {
                    match msg.bytes.as_whole() {
                        // A run's entries, as they are.
                        Some(run) if msg.run > 0 => buf.extend_from_slice(&run[BATCH_HEADER..]),
                        Some(whole) => envelope::push_batch_entry(buf, whole),
                        None => envelope::push_batch_entry(buf, &msg.bytes.contiguous()),
                    }
                }
                buf.split().freeze()
            }
        };
        self.small_bytes = 0;
        let next = self.spare.pop().unwrap_or_default();
        let small = std::mem::replace(&mut self.small, next);
        self.lend(small);
        self.sink.feed(msg).await
    }
}

/// Keeps `msgs`' room, emptied, in `spare` for a later batch (a few lists
/// at most, none that only one message used, none larger than
/// [`SPARE_ROOM`]).
fn spare(spare: &mut Vec<Vec<Lent>>, mut msgs: Vec<Lent>) {
    if spare.len() < SPARE_LISTS && (2..=SPARE_ROOM).contains(&msgs.capacity()) {
        msgs.clear();
        spare.push(msgs);
    }
}

/// `buf` with room for `need` more bytes: its own, or all of it again once
/// nothing cut from it is held any more, or else a fresh one (the old one's
/// memory goes with the last batch cut from it).
fn batch_room(buf: &mut BytesMut, need: usize) -> &mut BytesMut {
    if !buf.try_reclaim(need) {
        *buf = BytesMut::with_capacity(need.max(MAX_BATCH));
    }
    buf
}

#[cfg(test)]
mod tests;
