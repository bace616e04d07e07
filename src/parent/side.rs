//! The parent's side of a worker's session: what it does with what the
//! worker sends. Each message, error and report becomes an event of the
//! worker's, in order, through the events window (`sink.rs`); the reading
//! is held back while that window or the replies owed are full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::events::{Event, WorkerEvent};
use super::sink::Events;
use crate::error::{ErrorReport, WireError};
use crate::held::Holds;
use crate::protocol::{Protocol, Received};
use crate::session::Side;
use crate::wire::envelope::Kind;
use crate::wire::outbox::Outbox;

/// What the parent does with what its worker sends: events, in order.
pub(crate) struct ParentSide<P: Protocol> {
    pub(super) name: Arc<str>,
    pid: u32,
    pub(super) events: Events<P>,
    /// Called when the worker says it closes itself (`close()`).
    on_closing: Box<dyn Fn()>,
    pub(super) outbox: Arc<Outbox>,
    /// Until the process has exited: replies owed hold the reading back
    /// only while they can be written.
    pub(super) alive: bool,
}

impl<P: Protocol> ParentSide<P> {
    pub(crate) fn new(
        name: Arc<str>,
        pid: u32,
        events: Events<P>,
        on_closing: Box<dyn Fn()>,
        outbox: Arc<Outbox>,
    ) -> Self {
        ParentSide { name, pid, events, on_closing, outbox, alive: true }
    }

    pub(super) fn emit(&mut self, kind: Event<P>) {
        self.emit_holding(kind, Holds::default());
    }

    fn emit_holding(&mut self, kind: Event<P>, holds: Holds) {
        let event = WorkerEvent::new(self.name.clone(), self.pid, kind);
        self.events.emit_holding(event, holds);
    }

    /// A future that resolves once the reading may go on, when it may not.
    /// Replies hold the reading back only while the process lives: once it
    /// has exited, none can be written, and the socket is read to its end.
    pub(super) fn behind(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        if let Some(oldest) = self.events.oldest_behind() {
            return Some(oldest);
        }
        if self.alive && self.outbox.replies_over() {
            let epoch = self.outbox.room_epoch();
            // Checked again after the epoch was read: room made in between
            // would not be waited for.
            if self.outbox.replies_over() {
                let outbox = self.outbox.clone();
                return Some(Box::pin(async move { outbox.wait_room(epoch).await }));
            }
        }
        None
    }
}

impl<P: Protocol> Side for ParentSide<P> {
    type Incoming = P::FromWorker;
    const ONLY_HERE: &'static [Kind] = &[Kind::Error, Kind::Closing, Kind::Pong];
    const COUNTS_HELD: bool = true;

    fn post(&mut self, msg: Received<P::FromWorker>, holds: Holds) {
        self.emit_holding(Event::Message(msg), holds);
    }

    fn wire_error(&mut self, e: WireError) {
        self.emit(Event::WireError(e));
    }

    fn held_back(&mut self, asked: bool) -> bool {
        self.events.behind() || (asked && self.alive && self.outbox.replies_over())
    }

    fn report(&mut self, report: ErrorReport) {
        // Its text is the worker's to choose: cut, and counted in the
        // worker's window of bytes and in the all-workers total, as a
        // post's payload is (the event holds that share: a report has no
        // message of its own to hold it).
        let (report, bytes) = report.bounded();
        let holds = Holds { bytes, fds: 0 };
        let (name, kind) = (self.name.clone(), Event::Error(report));
        self.events.emit_holding(WorkerEvent::holding(name, self.pid, kind, holds), holds);
    }

    fn closing(&mut self) {
        (self.on_closing)();
    }
}
