//! Waiting for a request's answer: its slot, its future, its limit and
//! its cancellation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::error::WorkerError;
use crate::session::requests::{Counted, Naming, Pending, Slot};

/// Where the answer to a queued request comes.
pub(crate) type AnswerRx<A> = oneshot::Receiver<Result<A, WorkerError>>;

/// A slot that sends the decoded answer down a channel.
pub(crate) struct ToChannel<A>(pub Option<oneshot::Sender<Result<A, WorkerError>>>);

impl<A: DeserializeOwned + Send + 'static> Slot for ToChannel<A> {
    fn deliver(
        self: Box<Self>,
        result: Result<crate::wire::ws::reader::Inbound, WorkerError>,
    ) -> Counted {
        if let Some(tx) = self.0 {
            let _ = tx.send(crate::session::requests::decoded(result));
        }
        None
    }
}

/// The answer to request `id` of `pending`, asked already (or about to be:
/// its slot is taken now, so the answer may come before the future is
/// first polled); see [`answer_of`].
pub(crate) fn awaited<A: DeserializeOwned + Send + 'static>(
    pending: &Arc<Pending>,
    (id, name): (u64, Naming),
    timeout: Option<Duration>,
) -> impl Future<Output = Result<A, WorkerError>> + use<A> {
    let (tx, rx) = oneshot::channel();
    pending.attach(id, name, Box::new(ToChannel(Some(tx))));
    let cancel = Cancel::new(pending, id);
    // Its limit runs from now (`answer_of` reads the clock when called).
    answer_of(cancel, rx, timeout)
}

/// The answer to a request, from `rx` (where its slot sends it), waited
/// for at most `timeout`. Dropped before the answer came, or timed out,
/// `cancel` cancels the request: its slot goes and the other side is told.
/// The one answer future: every asker waits through it.
pub(crate) fn answer_of<A>(
    cancel: Cancel,
    rx: AnswerRx<A>,
    timeout: Option<Duration>,
) -> impl Future<Output = Result<A, WorkerError>> + use<A> {
    answer_by(cancel, rx, timeout.map(deadline))
}

/// When a limit of `limit` from now runs out, with the limit (what its
/// [`WorkerError::Timeout`] says); a limit past what the clock can count
/// (`Duration::MAX`) runs out in thirty years, as tokio's timers do.
pub(crate) fn deadline(limit: Duration) -> (Duration, tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    let far = || now + Duration::from_secs(86_400 * 365 * 30);
    (limit, now.checked_add(limit).unwrap_or_else(far))
}

/// [`answer_of`] with its limit as a deadline: `(limit, when)`, the
/// limit being what a [`WorkerError::Timeout`] says.
pub(crate) async fn answer_by<A>(
    cancel: Cancel,
    rx: AnswerRx<A>,
    deadline: Option<(Duration, tokio::time::Instant)>,
) -> Result<A, WorkerError> {
    let answer = match deadline {
        // Outside tokio's cooperative budget: each poll is one look at a
        // oneshot (see `WorkerAddrExt::ask`).
        None => tokio::task::unconstrained(rx).await,
        // Boxed: a timer's state is large, and the future of every
        // request, timed or not, would otherwise have room for it.
        Some(deadline) => return Box::pin(answer_timed(cancel, rx, deadline)).await,
    };
    // Its slot went with the answer: nothing to look up.
    cancel.disarm();
    answer.map_err(|_| WorkerError::Disconnected)?
}

/// [`answer_by`] with a deadline. A request times out only if its slot
/// was still waiting when its time ran out: one whose answer (or failure)
/// took its slot meanwhile, on another thread, is that outcome (counted
/// as such, once).
async fn answer_timed<A>(
    mut cancel: Cancel,
    mut rx: AnswerRx<A>,
    (limit, at): (Duration, tokio::time::Instant),
) -> Result<A, WorkerError> {
    let answer = match tokio::time::timeout_at(at, &mut rx).await {
        Ok(answer) => answer,
        Err(_) if cancel.fire() => return Err(WorkerError::Timeout(limit)),
        // Taken as the clock ran out: it is on its way.
        Err(_) => rx.await,
    };
    cancel.disarm();
    answer.map_err(|_| WorkerError::Disconnected)?
}

/// Cancels request `id` when dropped: whoever awaited its answer stopped.
/// Made when the request is, so that a future dropped before it was ever
/// polled cancels too.
pub(crate) struct Cancel {
    pending: Arc<Pending>,
    id: u64,
    armed: bool,
}

impl Cancel {
    pub(crate) fn new(pending: &Arc<Pending>, id: u64) -> Self {
        Cancel { pending: pending.clone(), id, armed: true }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Cancels now: whether the request was still waiting (see
    /// [`Pending::cancel`]).
    pub(crate) fn fire(&mut self) -> bool {
        self.armed = false;
        self.pending.cancel(self.id)
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.pending.cancel(self.id);
        }
    }
}
