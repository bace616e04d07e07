//! A request answered by a stream of items, as its asker reads it: the
//! slot its items come into (in the table of requests, as an answer's
//! does), and the [`AnswerStream`] its caller reads them from.
//!
//! The asker grants the other side a window of bytes with the request and
//! more as its caller reads (a `Credit` frame each time the caller has
//! read half the window), so the items held unread on this side are at
//! most the window plus one item, however slow the caller. An item that
//! comes when the window has no room left is the other side breaking the
//! protocol: the stream fails with [`WireError::PastWindow`] and is
//! cancelled. Dropping the stream cancels the request (a `Cancel` frame):
//! the other side drops its producer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::declared::stream_tag;
use super::requests::{decoded, Counted, Naming, Pending, Slot};
use super::sender::{Cancel, Encoded, Encoding, NotQueued, Sender};
use super::trace;
use crate::error::{WireError, WorkerError};
use crate::protocol::Protocol;
use crate::streamed::StreamRequest;
use crate::wire::encode::Arena;
use crate::wire::envelope::Header;
use crate::wire::trace::TraceContext;
use crate::wire::ws::reader::Inbound;

/// The window a streamed request grants unless its asker says otherwise:
/// the bytes of items (whole messages, header and payload) held unread at
/// most, 256 KiB.
pub const DEFAULT_STREAM_WINDOW: usize = 256 * 1024;

/// The largest window a request may grant: 1 GiB.
pub(crate) const MAX_WINDOW: usize = 1 << 30;

/// Bytes in front of an item's payload: kind, descriptors, id.
const ITEM_HEADER: usize = 2 + 8;

mod feed;
use feed::Feed;

/// What comes down to an [`AnswerStream`].
enum Piece<T> {
    /// An item, and the bytes of its message.
    Item(T, usize),
    /// The end: complete, or why not.
    End(Result<(), WorkerError>),
    /// The slot went without an end: its table was dropped.
    Gone,
}

/// The window as both halves see it: what the asker has granted so far.
struct Window {
    granted: AtomicU64,
}

/// The slot of a streamed answer: items go into the feed of the caller's
/// stream, checked against the window first.
pub(crate) struct StreamSlot<T> {
    feed: Arc<Feed<Piece<T>>>,
    /// Items of the read being handled, into the feed once it is.
    staged: Vec<Piece<T>>,
    /// Its end was delivered.
    ended: bool,
    window: Arc<Window>,
    /// The bytes of items received so far.
    received: u64,
    /// Told once when the stream ends, however it ends (a pool's count of
    /// what is in flight, a recorder's).
    after: Option<AfterStream>,
}

/// Told once how a streamed answer ended: complete, or why not.
pub(crate) type AfterStream = Box<dyn FnOnce(Result<(), &WorkerError>) + Send>;

impl<T> StreamSlot<T> {
    /// Hands the staged items on, then `last`, and wakes the reader if it
    /// waits for them.
    fn hand_on(&mut self, last: Option<Piece<T>>) {
        if let Some(waker) = self.feed.push(&mut self.staged, last) {
            waker.wake();
        }
    }

    fn finish(&mut self, end: Result<(), &WorkerError>) {
        if let Some(after) = self.after.take() {
            after(end);
        }
    }
}

impl<T> Drop for StreamSlot<T> {
    fn drop(&mut self) {
        // Dropped unended: cancelled (its reader went), or its table went
        // with its session.
        self.finish(Err(&WorkerError::Disconnected));
        if !self.ended {
            self.hand_on(Some(Piece::Gone));
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Slot for StreamSlot<T> {
    fn deliver(mut self: Box<Self>, result: Result<Inbound, WorkerError>) -> Counted {
        // The end frame was checked by the table (`Pending::resolve`).
        let end = result.map(drop);
        self.finish(end.as_ref().map(|_| ()));
        self.ended = true;
        self.hand_on(Some(Piece::End(end)));
        None
    }

    fn gone(&self) -> bool {
        self.feed.is_closed()
    }

    fn streams(&self) -> bool {
        true
    }

    fn item(&mut self, item: Inbound) -> Result<(), WorkerError> {
        let granted = self.window.granted.load(Ordering::Acquire);
        if self.received >= granted {
            let received = self.received;
            return Err(WireError::PastWindow { granted, received }.into());
        }
        // Its descriptors weigh in the window as its bytes do (the
        // producer counts them the same).
        let fds = usize::from(item.header.nfds) * crate::handoff::DESCRIPTOR_WEIGHT;
        let len = ITEM_HEADER + item.payload().len() + fds;
        self.received += len as u64;
        let item = decoded::<T>(Ok(item))?;
        self.staged.push(Piece::Item(item, len));
        Ok(())
    }

    fn hand_on_staged(&mut self) {
        self.hand_on(None);
    }
}

/// The items of a streamed answer, as its caller reads them: a
/// [`Stream`] of `Result<T, WorkerError>`, read with
/// `futures::StreamExt::next()`.
///
/// It yields the items in the order they were produced; then `None` once
/// the answer is complete. When the answer cannot complete (the producer
/// raised an error, [`WorkerError::StreamFailed`]; its handler panicked,
/// [`WorkerError::Panicked`]; the worker exited or was lost mid-stream,
/// [`WorkerError::Exited`]; the other side broke the window,
/// [`WireError::PastWindow`]; the request was refused), that error is the
/// last item, and `None` follows it. [`is_complete`](Self::is_complete)
/// says which it was.
///
/// Dropping it before the end cancels the request: the other side drops
/// its producer, and sends nothing more.
pub struct AnswerStream<T> {
    feed: Arc<Feed<Piece<T>>>,
    /// The pieces taken from the feed, not yet read.
    taken: VecDeque<Piece<T>>,
    /// Cancels the request when dropped unended (`None` once ended).
    cancel: Option<Cancel>,
    id: u64,
    pending: Option<Arc<Pending>>,
    window: Arc<Window>,
    /// Read since the last credit, and when to grant it.
    read: u64,
    threshold: u64,
    complete: bool,
    ended: bool,
}

impl<T> AnswerStream<T> {
    /// A stream that fails at once with `e` (the request was refused).
    pub(crate) fn refused(e: WorkerError) -> Self {
        let window = Arc::new(Window { granted: AtomicU64::new(0) });
        AnswerStream {
            feed: Feed::new(),
            taken: VecDeque::from([Piece::End(Err(e))]),
            cancel: None,
            id: 0,
            pending: None,
            window,
            read: 0,
            threshold: 1,
            complete: false,
            ended: false,
        }
    }

    /// Whether the answer came complete: its producer ended, and every
    /// item has been read.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    fn end(&mut self, complete: bool) {
        self.ended = true;
        self.complete = complete;
        if let Some(cancel) = self.cancel.take() {
            cancel.disarm();
        }
    }
}

impl<T> std::fmt::Debug for AnswerStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream")
            .field("id", &self.id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<T> Unpin for AnswerStream<T> {}

impl<T> Drop for AnswerStream<T> {
    fn drop(&mut self) {
        self.feed.close();
    }
}

impl<T> AnswerStream<T> {
    /// The next piece, if one has come; else the reader waits for it.
    fn next_piece(&mut self, cx: &mut Context<'_>) -> Option<Piece<T>> {
        if self.taken.is_empty() {
            self.taken = self.feed.take(cx.waker());
        }
        self.taken.pop_front()
    }
}

impl<T> Stream for AnswerStream<T> {
    type Item = Result<T, WorkerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(piece) = self.next_piece(cx) else { return Poll::Pending };
        match piece {
            Piece::Item(item, len) => {
                self.read += len as u64;
                if self.read >= self.threshold {
                    let read = std::mem::take(&mut self.read);
                    // Granted here first: the slot must never see an item
                    // the credit allowed before it sees the credit.
                    self.window.granted.fetch_add(read, Ordering::AcqRel);
                    if let Some(pending) = &self.pending {
                        pending.credit(self.id, read);
                    }
                }
                Poll::Ready(Some(Ok(item)))
            }
            Piece::End(Ok(())) => {
                self.end(true);
                Poll::Ready(None)
            }
            Piece::End(Err(e)) => {
                self.end(false);
                Poll::Ready(Some(Err(e)))
            }
            Piece::Gone => {
                self.end(false);
                Poll::Ready(Some(Err(WorkerError::Disconnected)))
            }
        }
    }
}

/// A streamed request about to be queued: its id, window and the two
/// halves (the slot for the table, the stream for the caller) made fresh
/// for each try (see [`Sender::queue_with`]).
pub(crate) struct Asking {
    pub id: u64,
    pub window: u64,
    /// Its asker's trace context, when one travels.
    pub context: Option<TraceContext>,
}

impl Asking {
    /// A fresh id from `pending`, with `window` clamped to what a request
    /// may grant (at least one byte, at most 1 GiB); asked of `peer` for
    /// `caller`, and traced as such while a subscriber wants it (the
    /// asking span is kept in `pending` until the stream is done with).
    pub(crate) fn new<R>(
        pending: &Pending,
        window: usize,
        (caller, peer): (trace::Caller, trace::Peer<'_>),
    ) -> Self {
        let id = pending.next_id();
        let (span, context) = trace::ask(caller, std::any::type_name::<R>(), id, peer);
        pending.trace(id, span);
        Asking { id, window: window.clamp(1, MAX_WINDOW) as u64, context }
    }

    /// A slot and the stream it feeds, for the caller of `pending`;
    /// `after` is told once how the stream ended.
    pub(crate) fn halves<T: DeserializeOwned + Send + 'static>(
        &self,
        pending: &Arc<Pending>,
        after: Option<AfterStream>,
    ) -> (Box<dyn Slot>, AnswerStream<T>) {
        let feed = Feed::new();
        let window = Arc::new(Window { granted: AtomicU64::new(self.window) });
        let slot = StreamSlot {
            feed: feed.clone(),
            staged: Vec::new(),
            ended: false,
            window: window.clone(),
            received: 0,
            after,
        };
        let stream = AnswerStream {
            feed,
            taken: VecDeque::new(),
            cancel: Some(Cancel::new(pending, self.id)),
            id: self.id,
            pending: Some(pending.clone()),
            window,
            read: 0,
            threshold: (self.window / 2).max(1),
            complete: false,
            ended: false,
        };
        (Box::new(slot), stream)
    }
}

impl Encoding {
    /// Request `id` of type `R`, answered by a stream of items of which
    /// the asker takes `window` bytes before its first credit; with its
    /// asker's trace context, when one travels.
    pub(crate) fn stream_request<P: Protocol, R: StreamRequest>(
        &self,
        arena: Option<&mut Arena>,
        asking: &Asking,
        request: &R,
    ) -> Result<Encoded, WorkerError> {
        let tag = stream_tag::<P, R>().map_err(|e| WireError::Encode(e.to_string()))?;
        let (id, window) = (asking.id, asking.window);
        let header = match asking.context {
            None => Header::stream(id, tag, window),
            Some(_) => crate::wire::trace::traced_stream(id, tag, window),
        };
        let fds = self.descriptors.then(Vec::new);
        self.encode(arena, (header, asking.context), request, fds)
    }

    /// One item of the stream that answers request `id`.
    pub(crate) fn item<T: Serialize + ?Sized>(
        &self,
        id: u64,
        item: &T,
    ) -> Result<Encoded, WorkerError> {
        self.encode(None, (Header::item(id), None), item, self.descriptors.then(Vec::new))
    }
}

impl Sender {
    /// Asks streamed `request` with a window of `window` bytes; refused at
    /// once when the outbox is full (the stream's first item says so).
    /// Queued now.
    pub(crate) fn ask_stream<P: Protocol, R: StreamRequest>(
        &self,
        request: &R,
        window: usize,
    ) -> AnswerStream<R::Item> {
        let asker = (trace::Caller::here(), trace::Peer::default());
        let asking = Asking::new::<R>(&self.pending, window, asker);
        let encoded = self.encoding.stream_request::<P, R>(None, &asking, request);
        let named = (asking.id, super::declared::describe::<P, R> as Naming);
        let queued = encoded.map_err(NotQueued::Refused).and_then(|encoded: Encoded| {
            let halves = || asking.halves::<R::Item>(&self.pending, None);
            self.queue_with(named, encoded, false, halves)
        });
        let refusal = match queued {
            Ok(stream) => return stream,
            Err(NotQueued::Refused(e)) => e,
            Err(NotQueued::Full { .. }) => self.outbox.error(crate::wire::outbox::Refusal::Full),
        };
        // Never queued: its asking span closes.
        self.pending.forget(asking.id);
        AnswerStream::refused(refusal)
    }
}
