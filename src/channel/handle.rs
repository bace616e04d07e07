//! An open channel, as its holder uses it: the [`Channel`] handle that
//! posts to (and asks) the other end, the [`ChannelEvent`]s its actor
//! receives, and the account of a channel that has closed
//! ([`ChannelClosed`]).

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use super::end::Line;
use crate::error::{WireError, WorkerError};
use crate::protocol::{Received, Request};
use crate::session::sender::Sender;
use crate::wire::envelope::{self, Kind};
use crate::wire::outbox::Refusal;

/// The open end of a channel: posts `S` to the other end (whose actor
/// receives them as [`ChannelEvent::Message`]) and asks it requests. Cheap
/// to clone; every clone is the same end. The end stays open until
/// [`close`](Self::close) is called, the other end closes, or its actor
/// stops.
pub struct Channel<S, R> {
    pub(crate) sender: Sender,
    pub(crate) counts: Arc<Counts>,
    pub(crate) close: Arc<Notify>,
    pub(crate) _types: PhantomData<fn() -> (S, R)>,
}

impl<S, R> Clone for Channel<S, R> {
    fn clone(&self) -> Self {
        let (sender, counts, close) =
            (self.sender.clone(), self.counts.clone(), self.close.clone());
        Channel { sender, counts, close, _types: PhantomData }
    }
}

/// What one end has counted.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Posts accepted (queued) by this end.
    pub sent: AtomicU64,
    /// Posts taken from the other end.
    pub received: AtomicU64,
}

impl<S, R> Channel<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Posts a message to the other end; refused at once when this end's
    /// queue is full ([`WorkerError::QueueFull`]: see
    /// [`post_waiting`](Self::post_waiting)) or the channel has closed
    /// ([`WorkerError::Disconnected`]).
    pub fn post(&self, data: S) -> Result<(), WorkerError> {
        self.post_with_fds(data, Vec::new())
    }

    /// Posts a message with descriptors; the other end receives them with
    /// exactly this message.
    pub fn post_with_fds(&self, data: S, fds: Vec<OwnedFd>) -> Result<(), WorkerError> {
        self.sender.post(None, &data, fds)?;
        self.counts.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`post`](Self::post), waiting for room while the queue is full: the
    /// producer goes as fast as the other end reads.
    pub async fn post_waiting(&self, data: S) -> Result<(), WorkerError> {
        let (mut bytes, mut fds) = self.sender.encoding.post(None, &data, Vec::new())?;
        loop {
            let epoch = self.sender.outbox.room_epoch();
            match self.sender.outbox.try_push(bytes, fds) {
                Ok(()) => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((Refusal::Full, b, f)) => (bytes, fds) = (b, f),
                Err((refusal, ..)) => return Err(self.sender.outbox.error(refusal)),
            }
            self.sender.outbox.wait_room(epoch).await;
        }
    }

    /// Asks the other end a typed [`Request`]: its actor answers it with
    /// its `Handler<Q>`, registered with
    /// [`Opening::answer`](crate::Opening::answer). Fails with
    /// [`WorkerError::Unhandled`] when the other end answers no such
    /// request, [`WorkerError::Disconnected`] when the channel closes first.
    pub fn ask<Q: Request>(
        &self,
        request: Q,
    ) -> impl Future<Output = Result<Q::Answer, WorkerError>> + use<S, R, Q> {
        self.sender.ask::<Line<S, R>, Q>(&request, None)
    }

    /// [`ask`](Self::ask), giving up after `limit` with
    /// [`WorkerError::Timeout`].
    pub fn ask_timeout<Q: Request>(
        &self,
        request: Q,
        limit: Duration,
    ) -> impl Future<Output = Result<Q::Answer, WorkerError>> + use<S, R, Q> {
        self.sender.ask::<Line<S, R>, Q>(&request, Some(limit))
    }

    /// Closes this end: what was posted before goes out first, then the
    /// other end is told ([`ChannelEvent::Closed`] on both sides). Posts
    /// from now on are refused, so [`sent`](Self::sent) is final.
    pub fn close(&self) {
        close(&self.sender, &self.close);
    }

    /// Posts accepted by this end so far.
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(Ordering::Relaxed)
    }
}

/// What reaches the actor that holds an end of a channel. An actor that
/// holds channels implements `Handler<ChannelEvent<R>>` for what they
/// receive.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ChannelEvent<R: 'static> {
    /// A message the other end posted, with its descriptors.
    Message(Received<R>),
    /// A message of the other end that could not be taken: it did not
    /// decode, and the channel goes on; or the framing broke, and
    /// `Closed` with [`CloseReason::Broken`] follows.
    Error(WireError),
    /// The channel has closed; the last event of this end.
    Closed(ChannelClosed),
}

/// Why a channel closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This end was closed ([`Channel::close`]).
    Closed,
    /// The other end closed its side, saying so.
    PeerClosed,
    /// The other end went away without closing: its process exited or was
    /// killed (or restarted: a restarted worker does not get its ends
    /// back).
    PeerGone,
    /// The other end's hello was refused (another protocol, another
    /// version), or it never came.
    Refused(WireError),
    /// The other end sent what cannot be read (broken framing, a frame
    /// over the limit, a message that should not come): nothing after it
    /// can be trusted.
    Broken(WireError),
}

/// The account of a closed channel, from one end. Of the posts this end
/// accepted (`sent`), `unsent` never left this process and `in_doubt` sat
/// in the socket when it closed, read or not (at most once: never sent
/// again); the rest were read by the other end. `received` counts the
/// posts this end took from the other.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelClosed {
    /// Why it closed.
    pub why: CloseReason,
    /// Posts this end accepted.
    pub sent: u64,
    /// Of them, those that never left this process.
    pub unsent: u64,
    /// Of them, those that may not have been read.
    pub in_doubt: u64,
    /// Posts this end took from the other.
    pub received: u64,
}

impl ChannelClosed {
    /// Posts of this end that the other end read, for certain.
    pub fn delivered(&self) -> u64 {
        self.sent.saturating_sub(self.unsent + self.in_doubt)
    }
}

/// Closes the end whose sending half is `sender`: its Terminate queued
/// after everything it accepted, nothing accepted after it; its task is
/// told, to wait for the other end's close.
pub(crate) fn close(sender: &Sender, task: &Notify) {
    let outbox = &sender.outbox;
    // Refused once the queue has ended: closed before, or the channel is over.
    if outbox.push_unbounded(envelope::bare(Kind::Terminate), Vec::new()).is_ok() {
        outbox.end_pushes();
        task.notify_one();
    }
}
