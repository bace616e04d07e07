//! A session once open: the writer task that drains its side's outbox,
//! the read loop, and the dispatch of what arrives by its kind. Posts,
//! requests and answers mean the same on both sides and are handled here;
//! what only one side takes, and what each does with a post, goes to its
//! [`Side`].

use std::rc::Rc;

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::answers::{Answering, Handlers};
use super::requests::resolve_frame;
use super::sender::Sender;
use crate::error::{ErrorReport, WireError};
use crate::held::Holds;
use crate::protocol::Received;
use crate::wire::envelope::{self, Kind};
use crate::wire::writer::{Writer, WriterEnd};
use crate::wire::ws::reader::{Inbound, Reader};

/// Messages handled per wake-up before the session lets other tasks run:
/// small, so that each side keeps the other busy rather than taking turns
/// (the measurements are in docs/performance.md).
const BUDGET: usize = 128;

/// What one side does with what only it takes. A kind the side does not
/// [`expect`](Side::expects) never reaches these methods: it is a
/// protocol error that ends the session (see [`Session::step`]).
pub(crate) trait Side {
    /// What the peer posts.
    type Incoming: DeserializeOwned;

    /// The kinds only this side takes, beside those both take (posts,
    /// requests, their answers and cancels, streamed requests, their items,
    /// ends and credits; see [`expected`]).
    const ONLY_HERE: &'static [Kind];

    /// Whether the messages this side receives count towards what all
    /// workers' messages hold of the process (the parent's, bounded: see
    /// `held.rs`). The worker's do not: nothing bounds its parent, and
    /// the count costs atomic operations on every message.
    const COUNTS_HELD: bool = false;

    /// A post from the peer, decoded, and what it holds of this side.
    fn post(&mut self, msg: Received<Self::Incoming>, holds: Holds);

    /// A frame that could not be taken (it did not decode, or should not
    /// have come): the connection goes on. Or the framing broke: the
    /// session then ends with [`Why::Broken`].
    fn wire_error(&mut self, e: WireError);

    /// Called before anything but a post is handled, and when what was
    /// ready has been: a side that gathers posts hands them on here, so
    /// they keep their place among the rest.
    fn flush(&mut self) {}

    /// Whether reading must pause after this message; `asked` says whether
    /// a request came since the last look (only requests add to the replies
    /// owed).
    fn held_back(&mut self, asked: bool) -> bool {
        let _ = asked;
        false
    }

    /// An error report from the peer (a worker's unhandled panic); only
    /// called where [`ONLY_HERE`](Side::ONLY_HERE) names [`Kind::Error`].
    fn report(&mut self, report: ErrorReport) {
        let _ = report;
    }

    /// The peer says it closes itself ([`Kind::Closing`]).
    fn closing(&mut self) {}

    /// The peer asks this side to end ([`Kind::Terminate`]);
    /// [`Flow::End`] ends the session.
    fn terminate(&mut self) -> Flow {
        Flow::Go
    }
}

/// Whether side `S` takes a message of `kind` once the hellos are done.
///
/// A message that should never come this way (a Ping to the parent, a
/// terminate to the parent, a second hello, a token after the hello) is
/// not the peer's to send: a peer that sends it is broken or hostile, and
/// what it is owed for it (a Pong queued for every Ping) is a way to grow
/// this side without bound. The session ends on it.
pub(crate) fn expected<S: Side>(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Post
            | Kind::Request
            | Kind::TracedRequest
            | Kind::Answer
            | Kind::Failed
            | Kind::Cancel
            | Kind::Stream
            | Kind::TracedStream
            | Kind::Item
            | Kind::End
            | Kind::Credit
    ) || S::ONLY_HERE.contains(&kind)
}

/// Whether a session reads on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    End(Why),
}

/// Why a session stopped reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The peer closed its end.
    PeerClosed,
    /// The framing broke (told to [`Side::wire_error`] first): nothing
    /// after it can be trusted to be in step.
    Broken,
    /// The peer asked this side to end.
    Terminated,
}

/// What a session has in common with the handles of its side: the
/// sending half (the outbox its writer drains, the requests it asked, how
/// it writes) and the requests it answers.
pub(crate) struct Common {
    pub sender: Sender,
    pub handlers: Rc<Handlers>,
    /// The most bytes the shared buffers of one message from the peer may
    /// hold together.
    pub max_shared_bytes: usize,
    /// The session's span (its peer's, or its own runtime's): the parent
    /// in this process of the spans of the requests it answers.
    pub span: tracing::Span,
}

/// One connected endpoint (see the module's head).
pub(crate) struct Session<S: Side> {
    side: S,
    reader: Reader,
    common: Common,
    writer: actix_rt::task::JoinHandle<WriterEnd>,
    /// Stops the writer (see [`finish`](Self::finish)).
    stop: Option<oneshot::Sender<()>>,
    /// A request was dispatched since the side was last asked whether to
    /// hold back.
    asked: bool,
    /// Where the answers owed on this connection stand.
    answering: Answering,
    /// Items of one stream read in a row, not yet handed to its slot.
    run: Vec<Inbound>,
    /// The streams whose slots hold items of this read, staged.
    staged: Vec<u64>,
}

impl<S: Side> Session<S> {
    /// Starts the writer task on the writing half of an opened connection.
    pub(crate) fn start(mut reader: Reader, writer: Writer, common: Common, side: S) -> Self {
        reader.set_max_shared(common.max_shared_bytes);
        let (stop, stopped) = oneshot::channel();
        let writer = actix_rt::spawn(writer.run(common.sender.outbox.clone(), stopped));
        let answering = Answering::default();
        let (stop, asked, run, staged) = (Some(stop), false, Vec::new(), Vec::new());
        Session { side, reader, common, writer, stop, asked, answering, run, staged }
    }

    pub(crate) fn side(&mut self) -> &mut S {
        &mut self.side
    }

    /// Its side's sending half.
    pub(crate) fn sender(&self) -> &Sender {
        &self.common.sender
    }

    /// Whether the peer ended the connection with its close (see
    /// `Reader::closed_by_peer`).
    pub(crate) fn closed_by_peer(&self) -> bool {
        self.reader.closed_by_peer()
    }

    /// The peer closed saying how much of ours it took: from then on the
    /// books know exactly which of our messages it read, and which it
    /// never will (no longer only the kernel's word, which a peer that has
    /// exited cannot give).
    pub(crate) fn settle_by_peers_close(&self) {
        if let Some(took) = self.reader.peer_took() {
            self.reader.queues().peer_took(took);
        }
    }

    /// Reads what comes next and handles it with everything already read
    /// behind it, within the budget and as long as the side does not hold
    /// back. Safe to cancel: a message read is handled before the next await.
    pub(crate) async fn step(&mut self) -> Flow {
        let mut next = Some(self.reader.next().await);
        let mut handled = 0;
        while let Some(item) = next {
            if let Flow::End(why) = self.handle(item) {
                self.flush();
                return Flow::End(why);
            }
            handled += 1;
            if handled == BUDGET {
                self.flush();
                tokio::task::yield_now().await;
                return Flow::Go;
            }
            if self.side.held_back(std::mem::take(&mut self.asked)) {
                break;
            }
            next = self.reader.next_ready();
        }
        self.flush();
        Flow::Go
    }

    /// Hands on what the reads so far brought: the side's posts, and the
    /// items to the readers of their streams.
    fn flush(&mut self) {
        self.side.flush();
        self.hand_on_items();
        self.common.sender.pending.hand_on_staged(&mut self.staged);
    }

    /// Gives the run of items gathered to their stream's slot, looked up
    /// once for the run: checked against its stream's window; a run for a
    /// request never asked is reported, and the connection goes on.
    fn hand_on_items(&mut self) {
        let Some(id) = self.run.first().map(|item| item.header.id) else { return };
        if let Err(e) = self.common.sender.pending.items(&mut self.run) {
            self.side.wire_error(e);
        } else if !self.staged.contains(&id) {
            self.staged.push(id);
        }
    }

    /// Reads until the session ends.
    #[cfg(test)]
    pub(crate) async fn run(&mut self) -> Why {
        loop {
            if let Flow::End(why) = self.step().await {
                return why;
            }
        }
    }

    fn handle(&mut self, item: Option<Result<Inbound, WireError>>) -> Flow {
        match item {
            None => Flow::End(Why::PeerClosed),
            Some(Ok(inbound)) => self.dispatch(inbound),
            Some(Err(e)) => {
                self.flush();
                self.side.wire_error(e);
                Flow::End(Why::Broken)
            }
        }
    }

    fn dispatch(&mut self, mut inbound: Inbound) -> Flow {
        let kind = inbound.header.kind;
        if kind != Kind::Item && !self.run.is_empty() {
            self.hand_on_items();
        }
        if kind == Kind::Post {
            let Inbound { fds, .. } = &mut inbound;
            let fds = std::mem::take(fds);
            let (codec, max_shared) = (inbound.codec, inbound.max_shared);
            let decode = |payload: &[u8]| {
                let decoded = crate::wire::shared::carry::decode_with::<S::Incoming>(
                    codec, payload, fds, max_shared,
                );
                (decoded, payload.len())
            };
            match inbound.decoding(decode) {
                ((Ok(data), fds, taken), len) => {
                    let holds = Holds { bytes: len + taken.bytes, fds: fds.len() + taken.fds };
                    let held = if S::COUNTS_HELD { holds } else { Holds::default() };
                    self.side.post(Received::new(data, fds, held), holds)
                }
                ((Err(e), ..), _) => self.side.wire_error(e),
            }
            return Flow::Go;
        }
        self.side.flush();
        if !expected::<S>(kind) {
            self.side.wire_error(WireError::Unexpected(kind.name()));
            return Flow::End(Why::Broken);
        }
        match kind {
            Kind::Post => unreachable!("handled above"),
            Kind::Request | Kind::TracedRequest | Kind::Stream | Kind::TracedStream => {
                self.asked = true;
                let common = &self.common;
                let on = (&common.sender, &self.answering, &common.span);
                if let Err(e) = common.handlers.dispatch(inbound, on) {
                    self.side.wire_error(e);
                }
            }
            Kind::Answer | Kind::Failed | Kind::End => {
                resolve_frame(&self.common.sender.pending, inbound)
            }
            // Gathered into a run of its stream's items, handed on at the
            // next message of another kind or stream, or at the end of the
            // read (see `hand_on_items`).
            Kind::Item => {
                if self.run.last().is_some_and(|last| last.header.id != inbound.header.id) {
                    self.hand_on_items();
                }
                self.run.push(inbound);
            }
            Kind::Credit => self.answering.credit(inbound.header.id, inbound.header.credit),
            Kind::Error => match inbound.decode::<ErrorReport>() {
                Ok(report) => self.side.report(report),
                Err(e) => self.side.wire_error(e),
            },
            Kind::Closing => self.side.closing(),
            Kind::Terminate => return self.side.terminate(),
            // Never expected after the hellos (see `expected`).
            Kind::Hello | Kind::Batch | Kind::Refused | Kind::Auth | Kind::Data => {}
            // Answered at once, ahead of nothing: the asker only wants to
            // hear from this side. Only the worker takes pings, from the
            // parent it trusts.
            Kind::Ping => {
                let _ = self
                    .common
                    .sender
                    .outbox
                    .push_unbounded(envelope::bare(Kind::Pong), Vec::new());
            }
            // Whoever pinged heard from us by reading it.
            Kind::Pong => {}
            Kind::Cancel => self.answering.cancel(inbound.header.id),
        }
        Flow::Go
    }

    /// Ends the session: stops the writer as [`Finish`] says, and returns
    /// the side, the descriptors that came with no message (closed now,
    /// with the reader), and what the writer says became of what it took.
    pub(crate) async fn finish(mut self, how: Finish) -> Finished<S> {
        let stop = self.stop.take();
        // Dropping the sender stops the writer too: kept while it drains.
        let _draining = match how {
            Finish::Now => {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                None
            }
            Finish::Drain => {
                self.common.sender.outbox.end();
                stop
            }
        };
        let unclaimed_fds = self.reader.unclaimed_fds();
        let writer = (&mut self.writer).await.ok();
        Finished { side: self.side, unclaimed_fds, writer }
    }
}

/// How a session's writer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// At once; what it did not write is given back (the parent: it goes
    /// to the next process).
    Now,
    /// Once it has written everything up to the outbox's end (the worker:
    /// what `on_close` posted goes out).
    Drain,
}

/// What is left of a session once it has ended.
pub(crate) struct Finished<S> {
    pub side: S,
    /// Descriptors that came with no message, closed with the reader.
    pub unclaimed_fds: usize,
    /// `None` if the writer task panicked.
    pub writer: Option<WriterEnd>,
}
