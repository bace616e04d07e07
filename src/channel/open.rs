//! Opening an end: the session that speaks over it, the same as the
//! parent link's (`session/`: hello with the channel's fingerprint,
//! batching, descriptors, limits, requests and their cancels), run by a
//! task of the actix system it is opened in, in a worker or in the parent.
//!
//! What the other end posts goes to the holder's actor as
//! [`ChannelEvent`]s, read no faster than the actor handles them: every
//! [`MARK_EVERY`]th goes with `send`, and reading pauses while
//! [`MARKS`] of those are unanswered (the parent's window in
//! `parent/sink.rs`, in small). When the channel ends, the actor gets
//! [`ChannelEvent::Closed`] with the account of what became of its posts.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use super::end::{fingerprint, ChannelEnd, Line};
use super::handle::{Channel, ChannelClosed, ChannelEvent, CloseReason, Counts};
use super::registry;
use crate::error::{WireError, WorkerError};
use crate::held::Holds;
use crate::protocol::{Codec, Received, Request};
use crate::session::answers::Handlers;
use crate::session::declared::answered_tag;
use crate::session::sender::{Encoding, Sender};
use crate::session::{self, Common, Finish, Finished, Flow, Session, Side, Then, Turn, Why};
use crate::wire::envelope::Kind;
use crate::wire::outbox::{Outbox, Outgoing};

/// Every this many messages to the actor, one goes with `send`, its answer
/// saying that the actor has handled it and all before it.
pub(crate) const MARK_EVERY: u64 = 256;
/// Reading pauses while this many marks are unanswered.
pub(crate) const MARKS: usize = 4;

/// How long an end that closed waits for the other end's close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often an idle end looks whether its actor has stopped.
const ACTOR_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// How an end is opened: its limits. `Default` gives the crate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// The largest message either way, in bytes (64 MiB). A larger one
    /// from the other end breaks the channel ([`CloseReason::Broken`]).
    pub max_message_size: usize,
    /// Posts queued and not yet written before [`Channel::post`] refuses
    /// more (4096).
    pub max_queued: usize,
    /// Bytes queued likewise (64 MiB).
    pub max_queued_bytes: usize,
    /// The most bytes the shared buffers of one message may hold (1 GiB).
    pub max_shared_bytes: usize,
    /// How the channel's payloads are written (bincode): both ends must
    /// say the same, JSON where the other end is a Python worker. The end
    /// that speaks first names it in its hello; an end of another codec
    /// closes as [`CloseReason::Refused`] with
    /// [`WireError::CodecMismatch`].
    pub codec: Codec,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            max_message_size: crate::handoff::DEFAULT_MAX_MESSAGE,
            max_queued: 4096,
            max_queued_bytes: 64 << 20,
            max_shared_bytes: 1 << 30,
            codec: Codec::Bincode,
        }
    }
}

impl ChannelOptions {
    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`codec`](Self::codec).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets [`max_queued`](Self::max_queued).
    pub fn max_queued(mut self, messages: usize) -> Self {
        self.max_queued = messages;
        self
    }
}

/// An end being opened: the requests its actor answers, and its options.
/// Made by [`ChannelEnd::opening`]; [`open`](Self::open) opens it.
pub struct Opening<S, R: 'static, A: Actor> {
    end: ChannelEnd<S, R>,
    actor: Addr<A>,
    handlers: Handlers,
    options: ChannelOptions,
}

impl<S, R> ChannelEnd<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens this end, its messages going to `actor` (see [`Opening`]).
    /// Must be called inside an actix system (in a worker's actor, or the
    /// parent's).
    pub fn open<A>(self, actor: Addr<A>) -> Channel<S, R>
    where
        A: Actor + Handler<ChannelEvent<R>>,
        A::Context: ToEnvelope<A, ChannelEvent<R>>,
    {
        self.opening(actor).open()
    }

    /// Opening this end with requests answered or options set.
    pub fn opening<A: Actor>(self, actor: Addr<A>) -> Opening<S, R, A> {
        let handlers = Handlers::new(|| None);
        Opening { end: self, actor, handlers, options: ChannelOptions::default() }
    }

    /// The socket itself, for a peer that speaks the channel's protocol on
    /// its own (`PROTOCOL.md`, "Channels"), with the fingerprint its hello
    /// must carry and whether it speaks first.
    pub fn into_socket(self) -> Option<(OwnedFd, u64, bool)> {
        let fp = fingerprint::<S, R>(self.first).ok()?;
        Some((self.fd?, fp, self.first))
    }
}

impl<S, R, A> Opening<S, R, A>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
    A: Actor + Handler<ChannelEvent<R>>,
    A::Context: ToEnvelope<A, ChannelEvent<R>>,
{
    /// Answers requests of type `Q` from the other end with the actor's
    /// `Handler<Q>`.
    pub fn answer<Q>(mut self) -> Self
    where
        Q: Request,
        A: Handler<Q>,
        A::Context: ToEnvelope<A, Q>,
    {
        let actor = self.actor.clone();
        self.handlers.insert::<Q>(answered_tag::<Line<S, R>, Q>(), move |request, reply| {
            let answer = actor.send(request);
            crate::session::spawn_boxed(async move {
                // Err: the actor is gone; the reply, dropped, says so.
                if let Ok(answer) = answer.await {
                    reply.answer(&answer);
                }
            });
        });
        self
    }

    /// Sets the end's [`ChannelOptions`].
    pub fn options(mut self, options: ChannelOptions) -> Self {
        self.options = options;
        self
    }

    /// Opens the end: posts may be made at once (they go out after the
    /// hello). A broken end (no socket, another protocol) comes as
    /// [`ChannelEvent::Closed`] to the actor.
    pub fn open(self) -> Channel<S, R> {
        let Opening { end, actor, handlers, options } = self;
        let outbox = Arc::new(Outbox::new(options.max_queued, options.max_queued_bytes));
        let encoding = Encoding {
            codec: options.codec,
            max_message_size: options.max_message_size,
            descriptors: true,
        };
        let sender = Sender::new(outbox, encoding);
        let counts = Arc::new(Counts::default());
        let close = Arc::new(Notify::new());
        let common = Common {
            sender: sender.clone(),
            handlers: Rc::new(handlers),
            max_shared_bytes: options.max_shared_bytes,
            span: crate::session::trace::channel(end.first),
        };
        let side = EndSide {
            to: actor.recipient(),
            posts: Vec::new(),
            marks: VecDeque::new(),
            delivered: 0,
            counts: counts.clone(),
            broken: None,
            actor_gone: false,
        };
        let fp = fingerprint::<S, R>(end.first);
        let done = registry::register(&sender, &close);
        let run =
            serve(end.fd, end.first, fp, options.max_message_size, common, side, close.clone());
        crate::session::spawn_boxed(async move {
            run.await;
            done.set();
        });
        Channel { sender, counts, close, _types: PhantomData }
    }
}

/// What an end does with what the other sends: posts to its actor.
struct EndSide<R: Send + 'static> {
    to: Recipient<ChannelEvent<R>>,
    /// Posts read, not yet handed on.
    posts: Vec<Received<R>>,
    /// Marks sent and not yet answered, oldest first.
    marks: VecDeque<std::pin::Pin<Box<actix::dev::RecipientRequest<ChannelEvent<R>>>>>,
    /// Messages handed to the actor.
    delivered: u64,
    counts: Arc<Counts>,
    /// Why the framing broke, when it did.
    broken: Option<WireError>,
    actor_gone: bool,
}

impl<R: Send + 'static> EndSide<R> {
    fn give(&mut self, event: ChannelEvent<R>) {
        self.delivered += 1;
        if self.delivered.is_multiple_of(MARK_EVERY) {
            // Through a fresh sender, never parked by an earlier mark: the
            // mark is queued now, in its place, whatever the mailbox holds.
            self.marks.push_back(Box::pin(self.to.clone().send(event)));
        } else {
            self.to.do_send(event);
        }
    }
}

impl<R: Serialize + DeserializeOwned + Send + 'static> Side for EndSide<R> {
    type Incoming = R;
    /// Terminate: the other end closes (its last message).
    const ONLY_HERE: &'static [Kind] = &[Kind::Terminate];

    fn post(&mut self, msg: Received<R>, _: Holds) {
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        self.posts.push(msg);
    }

    fn wire_error(&mut self, e: WireError) {
        self.broken = Some(e.clone());
        self.give(ChannelEvent::Error(e));
    }

    fn flush(&mut self) {
        for msg in std::mem::take(&mut self.posts) {
            self.give(ChannelEvent::Message(msg));
        }
    }

    fn terminate(&mut self) -> Flow {
        Flow::End(Why::Terminated)
    }

    fn held_back(&mut self, _asked: bool) -> bool {
        while let Some(Some(_)) = self.marks.front_mut().map(|m| m.as_mut().now_or_never()) {
            self.marks.pop_front();
        }
        self.actor_gone |= !self.to.connected();
        self.marks.len() >= MARKS || self.actor_gone
    }
}

/// Runs one end: hello, then the session until either end closes; then
/// tells the actor how it ended.
async fn serve<R: Serialize + DeserializeOwned + Send + 'static>(
    fd: Option<OwnedFd>,
    first: bool,
    fp: Result<u64, crate::error::ShapeError>,
    max: usize,
    common: Common,
    side: EndSide<R>,
    close: Arc<Notify>,
) {
    let sender = common.sender.clone();
    let opened = match hello(fd, first, fp, (sender.encoding.codec, max)).await {
        Ok(opened) => opened,
        Err(why) => {
            // Nothing went out: every post accepted is unsent.
            let unsent = sender.outbox.discard(WorkerError::Disconnected) as u64;
            sender.pending.fail_all(&WorkerError::Disconnected);
            let sent = side.counts.sent.load(Ordering::Relaxed);
            let closed = ChannelClosed { why, sent, unsent, in_doubt: 0, received: 0 };
            side.to.do_send(ChannelEvent::Closed(closed));
            return;
        }
    };
    let mut session = Session::start(opened.reader, opened.writer, common, side);
    let (why, how) = read_until_closed(&mut session, &close).await;
    session.settle_by_peers_close();
    let Finished { side, writer, .. } = session.finish(how).await;
    let (mut unsent, mut in_doubt) = (0, 0);
    if let Some(end) = writer {
        unsent =
            end.unsent.iter().filter(|o| o.is_post()).map(Outgoing::messages).sum::<usize>() as u64;
        in_doubt = end.in_doubt as u64;
    }
    unsent += sender.outbox.discard(WorkerError::Disconnected) as u64;
    sender.pending.fail_all(&WorkerError::Disconnected);
    let counts = &side.counts;
    let (sent, received) =
        (counts.sent.load(Ordering::Relaxed), counts.received.load(Ordering::Relaxed));
    let closed = ChannelClosed { why, sent, unsent, in_doubt, received };
    tracing::debug!(?closed, "channel closed");
    if !side.actor_gone {
        side.to.do_send(ChannelEvent::Closed(closed));
    }
}

/// The channel's hellos, each end checking the other's fingerprint.
async fn hello(
    fd: Option<OwnedFd>,
    first: bool,
    fp: Result<u64, crate::error::ShapeError>,
    (codec, max): (Codec, usize),
) -> Result<session::Opened, CloseReason> {
    let refused = |e| Err(CloseReason::Refused(e));
    match (fd, fp) {
        (Some(fd), Ok(fp)) => {
            let turn = if first { Turn::First(codec) } else { Turn::AfterPeer };
            let opened = session::open(fd, max, fp, turn, Then::nothing())
                .await
                .map_err(|e| e.map_or(CloseReason::PeerGone, CloseReason::Refused))?;
            // Posts made before the hello are written in ours already.
            if opened.codec != codec {
                return refused(WireError::CodecMismatch { ours: codec, theirs: opened.codec });
            }
            Ok(opened)
        }
        (None, _) => refused(WireError::Transport("a channel end without its socket".into())),
        (_, Err(e)) => refused(WireError::Encode(e.to_string())),
    }
}

/// Reads until the channel closes: why, and how its writer ends.
///
/// Closed here, a Terminate goes out after everything posted before it,
/// and the other end's close is awaited (at most [`CLOSE_GRACE`]): what it
/// says it took makes the account exact. Closed there, what this end
/// posted goes out, then its close.
async fn read_until_closed<R: Serialize + DeserializeOwned + Send + 'static>(
    session: &mut Session<EndSide<R>>,
    close: &Notify,
) -> (CloseReason, Finish) {
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        while session.side().marks.len() >= MARKS {
            if let Some(mark) = session.side().marks.pop_front() {
                if mark.await.is_err() {
                    session.side().actor_gone = true;
                }
            }
        }
        if session.side().actor_gone {
            return (CloseReason::Closed, Finish::Now);
        }
        let grace = closing.unwrap_or_else(|| tokio::time::Instant::now() + CLOSE_GRACE);
        tokio::select! {
            flow = session.step() => match flow {
                Flow::Go => {}
                Flow::End(Why::Broken) => {
                    let e = session.side().broken.clone();
                    let e = e.unwrap_or(WireError::Transport("the channel broke".into()));
                    return (CloseReason::Broken(e), Finish::Now);
                }
                Flow::End(_) if closing.is_some() => return (CloseReason::Closed, Finish::Now),
                Flow::End(Why::Terminated) => return (CloseReason::PeerClosed, Finish::Drain),
                Flow::End(_) => return (CloseReason::PeerGone, Finish::Now),
            },
            // Its Terminate is queued (`handle::close`): the other end's
            // close is awaited.
            () = close.notified(), if closing.is_none() => {
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(grace), if closing.is_some() => {
                return (CloseReason::Closed, Finish::Now)
            }
            // Nothing comes: whether the actor is still there is looked
            // at now and then (it is at every read otherwise).
            () = tokio::time::sleep(ACTOR_CHECK) => {
                session.side().actor_gone |= !session.side().to.connected();
            }
        }
    }
}
