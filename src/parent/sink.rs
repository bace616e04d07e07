//! Where a worker's events go: an actix recipient, a stream the caller
//! reads ([`WorkerEvents`]), or, when nobody takes them, the log; and the
//! window through which they pace the worker.
//!
//! The link reads from a worker no faster than its events are taken: what
//! is unhandled (in the recipient's mailbox, or unread in the stream) stays
//! within a [`Window`] of events, of bytes and of descriptors. One event is
//! always taken, however large: the window holds back the reading once it
//! is reached, and a message over it is taken alone. For a recipient, an
//! event goes with `send` (a mark) once a quarter of any of the three has
//! gone since the last mark; its answer says the recipient has handled it
//! and, its mailbox being in order, every event before it; the others go
//! with `do_send`. For a stream, the stream counts what it hands out.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Recipient;
use futures_util::FutureExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::events::{log_event, WorkerEvent};
use crate::held::{self, Holds};
use crate::protocol::Protocol;

/// How much of a worker's events may be unhandled before it is read no
/// further, and how much all workers' messages may hold together (see
/// [`Limits`](crate::Limits)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub events: u64,
    pub bytes: u64,
    pub fds: u64,
    pub total: Holds,
}

impl Window {
    /// Whether the messages of all workers hold this process's limit.
    fn total_reached(&self) -> bool {
        let now = held::total();
        now.bytes >= self.total.bytes || now.fds >= self.total.fds
    }
}

/// Events, bytes and descriptors, counted together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    events: u64,
    bytes: u64,
    fds: u64,
}

impl Tally {
    fn of(holds: Holds) -> Tally {
        Tally { events: 1, bytes: holds.bytes as u64, fds: holds.fds as u64 }
    }

    fn add(&mut self, other: Tally) {
        self.events += other.events;
        self.bytes += other.bytes;
        self.fds += other.fds;
    }

    fn since(self, earlier: Tally) -> Tally {
        Tally {
            events: self.events.saturating_sub(earlier.events),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            fds: self.fds.saturating_sub(earlier.fds),
        }
    }

    /// Whether this much unhandled fills `window`, or, with all workers'
    /// messages at their limit, is anything at all: no more may come until
    /// some is handled. (Nothing unhandled never does: one event is
    /// always taken.)
    fn fills(self, window: Window) -> bool {
        self.events >= window.events
            || (self.events > 0
                && (self.bytes >= window.bytes || self.fds >= window.fds || window.total_reached()))
    }

    /// Whether this much since the last mark calls for a new one: a
    /// quarter of the window, in any of the three.
    fn quarter_of(self, window: Window) -> bool {
        self.events >= window.events / 4
            || self.bytes >= window.bytes / 4
            || self.fds >= window.fds / 4
    }
}

/// Where the events of one worker go; cheap to clone.
pub(crate) enum EventSink<P: Protocol> {
    /// Nobody takes them: errors, losses and exits are logged.
    Log,
    Recipient(Recipient<WorkerEvent<P>>),
    Stream(StreamSender<P>),
}

impl<P: Protocol> Clone for EventSink<P> {
    fn clone(&self) -> Self {
        match self {
            EventSink::Log => EventSink::Log,
            EventSink::Recipient(r) => EventSink::Recipient(r.clone()),
            EventSink::Stream(s) => EventSink::Stream(s.clone()),
        }
    }
}

impl<P: Protocol> EventSink<P> {
    /// Sends one event, without pacing (the actor's own few events).
    pub(crate) fn send(&self, event: WorkerEvent<P>) {
        match self {
            EventSink::Log => log_event(&event.name, event.pid, &event.kind),
            EventSink::Recipient(r) => r.do_send(event),
            EventSink::Stream(s) => s.send(event, Holds::default()),
        }
    }
}

/// The sending end of a [`WorkerEvents`] stream.
pub(crate) struct StreamSender<P: Protocol> {
    tx: UnboundedSender<(WorkerEvent<P>, Holds)>,
    counts: Arc<Counts>,
}

impl<P: Protocol> Clone for StreamSender<P> {
    fn clone(&self) -> Self {
        StreamSender { tx: self.tx.clone(), counts: self.counts.clone() }
    }
}

/// How many events (and their bytes and descriptors) were sent into a
/// stream and taken out of it.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    taken: AtomicU64,
    sent_bytes: AtomicU64,
    taken_bytes: AtomicU64,
    sent_fds: AtomicU64,
    taken_fds: AtomicU64,
    /// Something was taken.
    taken_notify: Notify,
}

impl Counts {
    fn sent(&self, holds: Holds) {
        self.sent_bytes.fetch_add(holds.bytes as u64, Ordering::SeqCst);
        self.sent_fds.fetch_add(holds.fds as u64, Ordering::SeqCst);
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    fn taken(&self, holds: Holds) {
        self.taken_bytes.fetch_add(holds.bytes as u64, Ordering::SeqCst);
        self.taken_fds.fetch_add(holds.fds as u64, Ordering::SeqCst);
        self.taken.fetch_add(1, Ordering::SeqCst);
        self.taken_notify.notify_waiters();
    }

    /// What was sent and is not taken yet.
    fn unread(&self) -> Tally {
        let sent = Tally {
            events: self.sent.load(Ordering::SeqCst),
            bytes: self.sent_bytes.load(Ordering::SeqCst),
            fds: self.sent_fds.load(Ordering::SeqCst),
        };
        let taken = Tally {
            events: self.taken.load(Ordering::SeqCst),
            bytes: self.taken_bytes.load(Ordering::SeqCst),
            fds: self.taken_fds.load(Ordering::SeqCst),
        };
        sent.since(taken)
    }
}

impl<P: Protocol> StreamSender<P> {
    fn send(&self, event: WorkerEvent<P>, holds: Holds) {
        // Counted first: the reader may take it the moment it is in.
        self.counts.sent(holds);
        if self.tx.send((event, holds)).is_err() {
            self.counts.taken(holds);
        }
    }
}

/// A worker's events as a [`Stream`](futures_util::Stream), from
/// [`WorkerBuilder::start_with_events`](crate::WorkerBuilder::start_with_events):
/// no actor to write.
///
/// ```no_run
/// # use actix_webworker::{Event, Protocol, Worker, WorkerAddrExt};
/// # struct P; impl Protocol for P { type ToWorker = (); type FromWorker = (); }
/// # async fn f() {
/// let (worker, mut events) = Worker::<P>::builder().entry("e").start_with_events().unwrap();
/// while let Some(event) = events.next().await {
///     if let Event::Exit(status) = event.kind {
///         println!("exited: {status}");
///         break;
///     }
/// }
/// # }
/// ```
///
/// Events not read yet count against the worker's event window
/// ([`Limits::event_window`](crate::Limits::event_window)): a stream nobody
/// reads holds its worker back. It ends once the worker has stopped for
/// good and every event has been read.
pub struct WorkerEvents<P: Protocol> {
    rx: UnboundedReceiver<(WorkerEvent<P>, Holds)>,
    counts: Arc<Counts>,
}

impl<P: Protocol> std::fmt::Debug for WorkerEvents<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerEvents")
            .field("sent", &self.counts.sent.load(Ordering::Relaxed))
            .field("taken", &self.counts.taken.load(Ordering::Relaxed))
            .finish()
    }
}

/// A new stream and the sink that feeds it.
pub(crate) fn stream<P: Protocol>() -> (EventSink<P>, WorkerEvents<P>) {
    let (tx, rx) = unbounded_channel();
    let counts = Arc::new(Counts::default());
    (EventSink::Stream(StreamSender { tx, counts: counts.clone() }), WorkerEvents { rx, counts })
}

impl<P: Protocol> WorkerEvents<P> {
    /// How many events wait to be read.
    pub fn waiting(&self) -> usize {
        self.counts.unread().events as usize
    }

    /// How many bytes the events waiting to be read hold (their payloads
    /// and shared buffers).
    pub fn waiting_bytes(&self) -> usize {
        self.counts.unread().bytes as usize
    }

    /// The next event; `None` once the worker has stopped for good and
    /// every event has been read.
    pub async fn next(&mut self) -> Option<WorkerEvent<P>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<WorkerEvent<P>>> {
        let event = std::task::ready!(self.rx.poll_recv(cx));
        Poll::Ready(event.map(|(event, holds)| {
            self.counts.taken(holds);
            event
        }))
    }
}

impl<P: Protocol> futures_util::Stream for WorkerEvents<P> {
    type Item = WorkerEvent<P>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

/// A worker's events as the link sends them: paced by the window.
pub(crate) struct Events<P: Protocol> {
    sink: EventSink<P>,
    window: Window,
    /// All sent so far.
    emitted: Tally,
    /// Where the last mark was sent (what had been emitted before it).
    last_mark: Option<Tally>,
    /// For a recipient: marks not known to be handled, what had been
    /// emitted before each, and its answer (`None` once it came).
    marks: VecDeque<(Tally, Option<Mark>)>,
}

type Mark = Pin<Box<dyn Future<Output = ()>>>;

impl<P: Protocol> Events<P> {
    /// Events for `sink`, at most `window` of them unhandled.
    pub(crate) fn new(sink: EventSink<P>, window: Window) -> Self {
        let window = Window { events: window.events.max(4), ..window };
        Events { sink, window, emitted: Tally::default(), last_mark: None, marks: VecDeque::new() }
    }

    /// Sends one event that holds nothing of note.
    pub(crate) fn emit(&mut self, event: WorkerEvent<P>) {
        self.emit_holding(event, Holds::default());
    }

    /// Sends one event that holds `holds`.
    pub(crate) fn emit_holding(&mut self, event: WorkerEvent<P>, holds: Holds) {
        let tally = Tally::of(holds);
        let mut after = self.emitted;
        after.add(tally);
        match &self.sink {
            EventSink::Recipient(recipient)
                if self.last_mark.is_none_or(|at| after.since(at).quarter_of(self.window)) =>
            {
                // A sender of its own, never held back by actix's mailbox
                // bound: the event is queued now, in order with the others.
                let mark = recipient.clone().send(event).map(drop);
                self.pop_handled();
                self.marks.push_back((self.emitted, Some(Box::pin(mark))));
                self.last_mark = Some(self.emitted);
            }
            EventSink::Stream(s) => s.send(event, holds),
            sink => sink.send(event),
        }
        self.emitted = after;
    }

    /// Whether the window is full: nothing more may be read until some of
    /// it has been handled.
    pub(crate) fn behind(&mut self) -> bool {
        match &self.sink {
            EventSink::Log => false,
            EventSink::Stream(s) => s.counts.unread().fills(self.window),
            EventSink::Recipient(_) => {
                // Everything from the oldest mark not known to be handled
                // on is counted unhandled.
                let over = |marks: &VecDeque<(Tally, Option<Mark>)>, emitted: Tally, w: Window| {
                    marks.front().is_some_and(|(at, _)| emitted.since(*at).fills(w))
                };
                if !over(&self.marks, self.emitted, self.window) {
                    return false;
                }
                self.pop_handled();
                over(&self.marks, self.emitted, self.window)
            }
        }
    }

    /// When the window is full: a future that resolves once some of it has
    /// been handled (the oldest mark handled, something taken from the
    /// stream).
    pub(crate) fn oldest_behind(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        if !self.behind() {
            return None;
        }
        if let EventSink::Stream(s) = &self.sink {
            let counts = s.counts.clone();
            let window = self.window;
            return Some(Box::pin(async move {
                loop {
                    let taken = counts.taken_notify.notified();
                    tokio::pin!(taken);
                    taken.as_mut().enable();
                    if !counts.unread().fills(window) {
                        return;
                    }
                    // Something read from this stream, or something given
                    // back by any worker's message when the total is what
                    // holds the reading.
                    let total = held::given_back_while(|| window.total_reached());
                    tokio::select! {
                        () = taken => {}
                        () = total, if window.total_reached() => {}
                    }
                }
            }));
        }
        let window = self.window;
        let (_, slot) = self.marks.front_mut()?;
        let mark = std::future::poll_fn(move |cx| {
            if let Some(mark) = slot {
                std::task::ready!(mark.as_mut().poll(cx));
                *slot = None;
            }
            Poll::Ready(())
        });
        Some(Box::pin(async move {
            // The oldest mark handled, or, when the total is what holds
            // the reading, something given back by any worker's message.
            tokio::select! {
                () = mark => {}
                () = held::given_back_while(|| window.total_reached()), if window.total_reached() => {}
            }
        }))
    }

    /// Keeps the marks not handled yet waiting, on a task of their own:
    /// actix drops a message whose `send` is dropped before it is handled,
    /// and each mark is an event.
    pub(crate) fn keep_marks(&mut self) {
        self.pop_handled();
        let marks = std::mem::take(&mut self.marks);
        if !marks.is_empty() {
            crate::session::spawn_boxed(async move {
                for (_, mark) in marks {
                    if let Some(mark) = mark {
                        mark.await;
                    }
                }
            });
        }
    }

    /// Forgets the marks the recipient has handled.
    fn pop_handled(&mut self) {
        while let Some((_, slot)) = self.marks.front_mut() {
            if let Some(mark) = slot {
                if mark.as_mut().now_or_never().is_none() {
                    break;
                }
            }
            self.marks.pop_front();
        }
    }
}
