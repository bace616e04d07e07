//! The answering side of requests: the handlers of the request types one
//! side answers, the [`Reply`] each request is owed, and the answers in
//! progress that the asker may cancel.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::caught;
use super::credit::Credit;
use super::requests::{ById, Failure};
use super::sender::{Encoding, Sender};
use super::trace::{self, Scope};
use crate::error::{ErrorReport, WireError};
use crate::protocol::Codec;
use crate::protocol::Request;
use crate::report::panic_message;
use crate::streamed::StreamRequest;
use crate::wire::envelope::Kind;
use crate::wire::outbox::Outbox;
use crate::wire::segments::Segments;
use crate::wire::shared::carry::decode_with;
use crate::wire::ws::reader::Inbound;

/// The answer to one request, owed to the other side. Whatever happens to
/// the request, exactly one reply goes out: the answer, a failure, or (when
/// this is dropped unanswered, e.g. by a panicking handler) `Panicked` with
/// the panic's report, or `Gone`; unless the asker cancelled the request,
/// and then nothing is sent.
pub(crate) struct Reply {
    id: u64,
    outbox: Arc<Outbox>,
    /// The connection the request came on (see `Outbox::owe_reply`).
    connection: u64,
    /// The bytes its request holds until it is answered.
    held: usize,
    /// How its connection is written.
    encoding: Encoding,
    last_panic: fn() -> Option<ErrorReport>,
    sent: bool,
    /// Where the answers of its connection stand, for the asker's cancel.
    answering: Rc<Stages>,
    /// The span of its handling, while a subscriber wants it: closed when
    /// the reply goes.
    scope: Option<Scope>,
}

/// Where the answers owed on one connection stand, by request id: each has
/// an entry from its arrival to its reply. One per session: ids are the
/// asker's, unique on one connection only. Dropped with its session: the
/// streamed answers still owed are cancelled then, as if their askers had,
/// for no asker is left to read them (a producer would otherwise run on for
/// ever, waiting for credit that never comes). A request read whole is
/// still handled, as it was asked (a worker may ask in its `on_close` and
/// not wait): its answer is refused with its connection.
#[derive(Default)]
pub(crate) struct Answering(Rc<Stages>);

impl Drop for Answering {
    fn drop(&mut self) {
        let streams: Vec<u64> = self.0.credits.borrow().keys().copied().collect();
        for id in streams {
            self.cancel(id);
        }
    }
}

#[derive(Default)]
struct Stages {
    by_id: RefCell<ById<Stage>>,
    /// How many of them are cancelled: while none is, no answer needs
    /// looking up before it starts.
    cancelled: Cell<usize>,
    /// The window of each streamed answer owed, from its request on.
    credits: RefCell<ById<Rc<Credit>>>,
}

impl Stages {
    /// Whether request `id` is still wanted (not cancelled).
    fn wanted(&self, id: u64) -> bool {
        self.cancelled.get() == 0 || !matches!(self.by_id.borrow().get(&id), Some(Stage::Cancelled))
    }

    /// Request `id` is done with; whether it had been cancelled.
    fn finish(&self, id: u64) -> bool {
        if !self.credits.borrow().is_empty() {
            self.credits.borrow_mut().remove(&id);
        }
        let stage = self.by_id.borrow_mut().remove(&id);
        let cancelled = matches!(stage, Some(Stage::Cancelled));
        if cancelled {
            self.cancelled.set(self.cancelled.get() - 1);
        }
        cancelled
    }
}

impl Answering {
    /// The asker no longer waits for request `id`: one not started yet will
    /// not be, one in progress is stopped where it can be (see
    /// [`Reply::on_cancel`]), and nothing is sent for either. (One answered
    /// already is not affected.)
    pub(crate) fn cancel(&self, id: u64) {
        let stage = {
            let mut by_id = self.0.by_id.borrow_mut();
            match by_id.get_mut(&id) {
                Some(Stage::Cancelled) | None => return,
                Some(stage) => std::mem::replace(stage, Stage::Cancelled),
            }
        };
        self.0.cancelled.set(self.0.cancelled.get() + 1);
        if let Stage::Running(stop) = stage {
            stop();
        }
    }
}

impl Answering {
    /// The asker of stream `id` has room for `bytes` more: its producer
    /// may go on. A credit for a request not owed (answered, cancelled,
    /// never asked, or answered once) is ignored, as a late cancel is.
    pub(crate) fn credit(&self, id: u64, bytes: u64) {
        let credit = self.0.credits.borrow().get(&id).cloned();
        if let Some(credit) = credit {
            credit.grant(bytes);
        }
    }
}

/// Where one answer stands.
enum Stage {
    /// Not started yet (waiting for its actor), or started with nothing
    /// that can be stopped.
    Owed,
    /// In progress, and this stops it.
    Running(Box<dyn FnOnce()>),
    /// The asker cancelled it: nothing is sent for it.
    Cancelled,
}

impl Reply {
    /// Whether the request is still wanted: `false` once the asker has
    /// cancelled it (then it is not started at all, and dropping the reply
    /// sends nothing).
    pub(crate) fn wanted(&self) -> bool {
        self.answering.wanted(self.id)
    }

    /// Where its handling is traced, if it is: the handler runs inside.
    pub(crate) fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// Its scope, taken for a future that answers it later.
    pub(crate) fn take_scope(&mut self) -> Option<Scope> {
        self.scope.take()
    }

    /// Sends the answer.
    pub(crate) fn answer<A: Serialize>(mut self, answer: &A) {
        let (frame, fds) = self.encoding.answer(self.id, answer);
        self.send(frame, fds);
    }

    /// The report of the panic whose payload is `payload`, just caught
    /// while answering: the side's hook's, where it has one (file, line,
    /// backtrace), else its message alone.
    pub(crate) fn panic_report(&self, payload: &(dyn std::any::Any + Send)) -> ErrorReport {
        (self.last_panic)().unwrap_or_else(|| ErrorReport::new(panic_message(payload)))
    }

    /// A reply in this one's place, which is left as sent.
    fn take_over(&mut self) -> Reply {
        self.sent = true;
        Reply {
            id: self.id,
            outbox: self.outbox.clone(),
            connection: self.connection,
            held: self.held,
            encoding: self.encoding,
            last_panic: self.last_panic,
            sent: false,
            answering: self.answering.clone(),
            scope: self.scope.take(),
        }
    }

    /// Sends a failure.
    pub(crate) fn fail(mut self, failure: Failure) {
        let frame = self.encoding.failure(self.id, failure);
        self.send(frame, Vec::new());
    }

    /// The window of its streamed answer (see `produce.rs`).
    pub(crate) fn credit(&self) -> Rc<Credit> {
        let credits = self.answering.credits.borrow();
        credits.get(&self.id).cloned().unwrap_or_default()
    }

    /// Encodes one item of its streamed answer.
    pub(crate) fn item<T: Serialize>(&self, item: &T) -> Result<(Segments, Vec<OwnedFd>), String> {
        self.encoding.item(self.id, item).map_err(|e| e.to_string())
    }

    /// Queues one item of its streamed answer (the window's bound is the
    /// producer's); `false` once the connection takes nothing more.
    pub(crate) fn push_item(&self, item: (Segments, Vec<OwnedFd>)) -> bool {
        self.outbox.push_all_unbounded([item], Some(self.connection)).is_ok()
    }

    /// Waits while the outbox is at its bound (a stream's producer: the
    /// asker's window alone does not bound what its side holds, as a peer
    /// that grants a large one and never reads would make it hold all).
    pub(crate) async fn room(&self) {
        loop {
            let epoch = self.outbox.room_epoch();
            if !self.outbox.is_full() {
                return;
            }
            self.outbox.wait_room(epoch).await;
        }
    }

    /// Queues several items at once (one lock); `false` as
    /// [`push_item`](Self::push_item).
    pub(crate) fn push_items(&self, items: Vec<Segments>) -> bool {
        if items.is_empty() {
            return true;
        }
        let items = items.into_iter().map(|b| (b, Vec::new()));
        self.outbox.push_all_unbounded(items, Some(self.connection)).is_ok()
    }

    /// Ends its streamed answer: no more items.
    pub(crate) fn end(mut self) {
        let frame = crate::wire::envelope::end(self.id);
        self.send(frame.into(), Vec::new());
    }

    /// Its request holds `more` bytes than it came with (its shared
    /// buffers), until it is answered.
    fn holds_more(&mut self, more: usize) {
        if more > 0 {
            self.held += more;
            self.outbox.owe_more(self.connection, more);
        }
    }

    /// The answer is in progress: if the asker cancels the request
    /// meanwhile, `stop` runs and nothing is sent.
    pub(crate) fn on_cancel(&mut self, stop: impl FnOnce() + 'static) {
        let mut by_id = self.answering.by_id.borrow_mut();
        match by_id.get_mut(&self.id) {
            Some(stage @ Stage::Owed) => *stage = Stage::Running(Box::new(stop)),
            // Cancelled already: stopped at once.
            Some(Stage::Cancelled) => {
                drop(by_id);
                stop();
            }
            _ => {}
        }
    }

    fn send(&mut self, frame: Segments, fds: Vec<OwnedFd>) {
        self.sent = true;
        if self.answering.finish(self.id) {
            // The asker waits for nothing.
            self.outbox.forgive_reply(self.connection, self.held);
            return;
        }
        self.outbox.push_reply(frame, fds, self.connection, self.held);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent && caught::catching() {
            // Dropped by a panic about to be caught: it fails there, with
            // the panic's report.
            let reply = self.take_over();
            caught::on_catch(Box::new(move |payload| {
                let report = reply.panic_report(payload);
                reply.fail(Failure::Panicked(report));
            }));
            return;
        }
        if !self.sent {
            if !self.wanted() {
                self.answering.finish(self.id);
                self.sent = true;
                self.outbox.forgive_reply(self.connection, self.held);
                return;
            }
            let failure = match (self.last_panic)() {
                Some(report) => Failure::Panicked(report),
                None => Failure::Gone,
            };
            let frame = self.encoding.failure(self.id, failure);
            self.send(frame, Vec::new());
        }
    }
}

/// Decodes a request (its codec, payload, descriptors and the bound on its
/// shared buffers) and starts answering it.
type Handler = Box<dyn Fn(Codec, &[u8], Vec<OwnedFd>, usize, Reply)>;

/// The request types one side answers, by tag: whether each is answered
/// by a stream, and its handler.
pub(crate) struct Handlers {
    /// Each with whether it answers with a stream, and the name of its
    /// request type (for its span). Looked up for every request: hashed
    /// as the tables by id are.
    by_tag: ById<(bool, Handler, &'static str)>,
    last_panic: fn() -> Option<ErrorReport>,
}

impl Handlers {
    /// No handlers yet; `last_panic` names the panic that dropped an answer,
    /// where the side knows it.
    pub(crate) fn new(last_panic: fn() -> Option<ErrorReport>) -> Self {
        Handlers { by_tag: ById::default(), last_panic }
    }

    /// Answers requests of type `R`, tagged `tag` (see `declared.rs`),
    /// with `start`, which hands the decoded request to an actor and the
    /// [`Reply`] to whatever answers.
    pub(crate) fn insert<R: Request>(&mut self, tag: u64, start: impl Fn(R, Reply) + 'static) {
        self.insert_as(tag, false, start);
    }

    /// Answers streamed requests of type `R` (asked with a `Stream` frame),
    /// tagged `tag`, with `start`; see `produce.rs` for the reply's items.
    pub(crate) fn insert_stream<R: StreamRequest>(
        &mut self,
        tag: u64,
        start: impl Fn(R, Reply) + 'static,
    ) {
        self.insert_as(tag, true, start);
    }

    fn insert_as<R: DeserializeOwned + 'static>(
        &mut self,
        tag: u64,
        streams: bool,
        start: impl Fn(R, Reply) + 'static,
    ) {
        let handler: Handler = Box::new(move |codec, payload, fds, max_shared, mut reply| {
            // A request's descriptors are its shared buffers'; any others
            // are closed.
            match decode_with::<R>(codec, payload, fds, max_shared) {
                (Ok(req), _, taken) => {
                    // Its descriptors weigh in the bound of bytes too: a
                    // few bytes each would hold one each, without end.
                    let fds = taken.fds * crate::handoff::DESCRIPTOR_WEIGHT;
                    reply.holds_more(taken.bytes + fds);
                    caught::caught(|| start(req, reply))
                }
                (Err(e), ..) => reply.fail(Failure::Wire(e.to_string())),
            }
        });
        self.by_tag.insert(tag, (streams, handler, std::any::type_name::<R>()));
    }

    /// Whether requests tagged `tag` are answered.
    pub(crate) fn answers(&self, tag: u64) -> bool {
        self.by_tag.contains_key(&tag)
    }

    /// Starts answering request frame `inbound`; the reply goes out
    /// through `sender`, its stage is kept in `answering` (its
    /// connection's), and its handling is traced under `span` (its
    /// session's) when a subscriber wants it. A traced request whose
    /// context is malformed is answered with a failure, and the error
    /// returned for the side to tell.
    pub(crate) fn dispatch(
        &self,
        mut inbound: Inbound,
        (sender, answering, span): (&Sender, &Answering, &tracing::Span),
    ) -> Result<(), WireError> {
        let outbox = &sender.outbox;
        let (id, tag) = (inbound.header.id, inbound.header.tag);
        let (context, bad) = match inbound.trace_context() {
            None => (None, None),
            Some(Ok(context)) => (Some(context), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let streamed = matches!(inbound.header.kind, Kind::Stream | Kind::TracedStream);
        // Ids are unique on a connection: one still being answered keeps
        // its stage and its credit (the only hold a cancel, or the end of
        // the session, has on it); another request under it is refused,
        // and nothing is sent for it (its asker would take it for the
        // first's).
        if answering.0.by_id.borrow().contains_key(&id) {
            return Err(WireError::DuplicateId(id));
        }
        answering.0.by_id.borrow_mut().insert(id, Stage::Owed);
        if streamed {
            let window = Rc::new(Credit::default());
            window.grant(inbound.header.credit);
            answering.0.credits.borrow_mut().insert(id, window);
        }
        let mut reply = Reply {
            id,
            outbox: outbox.clone(),
            connection: outbox.owe_reply(inbound.payload().len()),
            held: inbound.payload().len(),
            encoding: sender.encoding,
            last_panic: self.last_panic,
            sent: false,
            answering: answering.0.clone(),
            scope: None,
        };
        let handler = self.by_tag.get(&tag);
        let name = handler.map_or("", |&(_, _, name)| name);
        reply.scope = trace::answering(span, (id, name), context);
        if let Some(e) = bad {
            reply.fail(Failure::Wire(e.to_string()));
            return Err(e);
        }
        match handler {
            Some((streams, ..)) if *streams != streamed => {
                reply.fail(Failure::Wire(crate::error::WireError::WrongForm(tag).to_string()))
            }
            Some((_, handler, _)) => {
                let fds = std::mem::take(&mut inbound.fds);
                let (codec, max_shared) = (inbound.codec, inbound.max_shared);
                inbound.decoding(|payload| handler(codec, payload, fds, max_shared, reply))
            }
            None => reply.fail(Failure::Unhandled(format!("request type with tag {tag:016x}"))),
        }
        Ok(())
    }
}
