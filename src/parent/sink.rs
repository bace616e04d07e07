//! Where a worker's events go: an actix recipient, a stream the caller
//! reads ([`WorkerEvents`]), or, when nobody takes them, the log; and the
//! window through which they pace the worker.
//!
//! The link reads from a worker no faster than its events are taken: at
//! most `window` may be unhandled (in the recipient's mailbox, or unread in
//! the stream). For a recipient, every `window / 4`-th event goes with
//! `send`, whose answer says the recipient has handled it and, its mailbox
//! being in order, every event before it; the others go with `do_send`.
//! For a stream, the stream counts what it hands out.

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
use crate::protocol::Protocol;

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
            EventSink::Stream(s) => s.send(event),
        }
    }
}

/// The sending end of a [`WorkerEvents`] stream.
pub(crate) struct StreamSender<P: Protocol> {
    tx: UnboundedSender<WorkerEvent<P>>,
    counts: Arc<Counts>,
}

impl<P: Protocol> Clone for StreamSender<P> {
    fn clone(&self) -> Self {
        StreamSender { tx: self.tx.clone(), counts: self.counts.clone() }
    }
}

/// How many events were sent into a stream and taken out of it.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    taken: AtomicU64,
    /// Something was taken.
    taken_notify: Notify,
}

impl<P: Protocol> StreamSender<P> {
    fn send(&self, event: WorkerEvent<P>) {
        if self.tx.send(event).is_ok() {
            self.counts.sent.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many sent events are not taken yet.
    fn unread(&self) -> u64 {
        let sent = self.counts.sent.load(Ordering::SeqCst);
        sent.saturating_sub(self.counts.taken.load(Ordering::SeqCst))
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
    rx: UnboundedReceiver<WorkerEvent<P>>,
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
        let sent = self.counts.sent.load(Ordering::SeqCst);
        sent.saturating_sub(self.counts.taken.load(Ordering::SeqCst)) as usize
    }

    /// The next event; `None` once the worker has stopped for good and
    /// every event has been read.
    pub async fn next(&mut self) -> Option<WorkerEvent<P>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<WorkerEvent<P>>> {
        let event = std::task::ready!(self.rx.poll_recv(cx));
        if event.is_some() {
            self.counts.taken.fetch_add(1, Ordering::SeqCst);
            self.counts.taken_notify.notify_waiters();
        }
        Poll::Ready(event)
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
    window: u64,
    emitted: u64,
    /// For a recipient: marks not known to be handled, where each was
    /// emitted, and its answer (`None` once it came).
    marks: VecDeque<(u64, Option<Mark>)>,
}

type Mark = Pin<Box<dyn Future<Output = ()>>>;

impl<P: Protocol> Events<P> {
    /// Events for `sink`, at most `window` of them unhandled.
    pub(crate) fn new(sink: EventSink<P>, window: usize) -> Self {
        Events { sink, window: window.max(4) as u64, emitted: 0, marks: VecDeque::new() }
    }

    /// Sends one event.
    pub(crate) fn emit(&mut self, event: WorkerEvent<P>) {
        match &self.sink {
            EventSink::Recipient(recipient) if self.emitted.is_multiple_of(self.window / 4) => {
                // A sender of its own, never held back by actix's mailbox
                // bound: the event is queued now, in order with the others.
                let mark = recipient.clone().send(event).map(drop);
                self.pop_handled();
                self.marks.push_back((self.emitted, Some(Box::pin(mark))));
            }
            sink => sink.send(event),
        }
        self.emitted += 1;
    }

    /// Whether the window of events may be unhandled: no more may be sent
    /// until some are.
    pub(crate) fn behind(&mut self) -> bool {
        match &self.sink {
            EventSink::Log => false,
            EventSink::Stream(s) => s.unread() >= self.window,
            EventSink::Recipient(_) => {
                let over = |marks: &VecDeque<(u64, Option<Mark>)>, emitted: u64, window: u64| {
                    marks.front().is_some_and(|(at, _)| emitted - at >= window)
                };
                if !over(&self.marks, self.emitted, self.window) {
                    return false;
                }
                self.pop_handled();
                over(&self.marks, self.emitted, self.window)
            }
        }
    }

    /// When more than the window is unhandled: a future that resolves once
    /// some has been (the oldest mark handled, something taken from the
    /// stream).
    pub(crate) fn oldest_behind(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        if !self.behind() {
            return None;
        }
        if let EventSink::Stream(s) = &self.sink {
            let counts = s.counts.clone();
            let window = self.window;
            let sent = s.clone();
            return Some(Box::pin(async move {
                loop {
                    let taken = counts.taken_notify.notified();
                    tokio::pin!(taken);
                    taken.as_mut().enable();
                    if sent.unread() < window {
                        return;
                    }
                    taken.await;
                }
            }));
        }
        let (_, slot) = self.marks.front_mut()?;
        Some(Box::pin(std::future::poll_fn(move |cx| {
            if let Some(mark) = slot {
                std::task::ready!(mark.as_mut().poll(cx));
                *slot = None;
            }
            Poll::Ready(())
        })))
    }

    /// Keeps the marks not handled yet waiting, on a task of their own:
    /// actix drops a message whose `send` is dropped before it is handled,
    /// and each mark is an event.
    pub(crate) fn keep_marks(&mut self) {
        self.pop_handled();
        let marks = std::mem::take(&mut self.marks);
        if !marks.is_empty() {
            actix_rt::spawn(async move {
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
