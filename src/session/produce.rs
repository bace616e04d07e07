//! The answering side of a streamed request: the producer of its items,
//! run as a task of the answering side's own, paced by the asker's window
//! (its `Credit`, kept with the answers owed in `answers.rs`).
//!
//! The asker grants a window of bytes with its request (`Stream` frame)
//! and more with each `Credit` frame, as it reads. The producer is polled
//! for its next item only while the credit is positive; each item's whole
//! message (header and payload) is taken from it, so the credit may go
//! below zero by at most one item, and what the asker holds unread is at
//! most its window plus one item. With no credit the producer is not
//! polled: it waits, and so does whatever feeds it.
//!
//! The items also wait for room in this side's outbox, bounded in number
//! and bytes by its limits: the window is the asker's to choose (up to
//! 1 GiB), and an asker that never reads its socket would otherwise have
//! this side hold all of it. What a stream holds here is at most the
//! outbox's bound and one gather of items.
//!
//! When the asker cancels (it dropped its stream), the task is aborted:
//! the producer is dropped where it stands, and nothing more is sent.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::Stream;
use serde::Serialize;

use super::answers::Reply;
use super::credit::Credit;
use super::requests::Failure;
use crate::streamed::Streamed;

/// Items queued together, at most, under one lock of the outbox.
const GATHER: usize = 256;

/// Answers the streamed request whose reply is `reply` with the items of
/// `stream`, then its end (or the error it raised, or the panic that
/// stopped it), paced by the asker's window; dropped at once when the asker
/// cancels.
pub(crate) fn produce<T: Serialize + 'static>(mut reply: Reply, stream: Streamed<T>) {
    if !reply.wanted() {
        return;
    }
    let credit = reply.credit();
    let (abort, registration) = AbortHandle::new_pair();
    reply.on_cancel(move || abort.abort());
    let run = Abortable::new(run(reply, stream, credit), registration);
    crate::session::spawn_boxed(async move {
        // Aborted: the asker cancelled; the reply goes unsent with it.
        let _ = run.await;
    });
}

async fn run<T: Serialize>(reply: Reply, mut stream: Streamed<T>, credit: Rc<Credit>) {
    let mut frames = Vec::new();
    loop {
        if frames.is_empty() {
            reply.room().await;
        }
        // Waits for credit, then for the next item; and gathers what else
        // is ready within the credit, to be queued together.
        let next = poll_fn(|cx| {
            if !credit.has_room() {
                credit.waiting.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            let first = frames.is_empty();
            // A panic in the producer ends the stream after what it made
            // (gathered, not yet queued) and is its last item.
            let polled = || std::pin::Pin::new(&mut stream).poll_next(cx);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(polled)) {
                Ok(Poll::Ready(item)) => Poll::Ready(Some(Ok(item))),
                Ok(Poll::Pending) if first => Poll::Pending,
                Ok(Poll::Pending) => Poll::Ready(None),
                Err(payload) => Poll::Ready(Some(Err(payload))),
            }
        });
        let item = match next.await {
            // Its report is taken before the producer is dropped (its drop
            // may panic too); the producer is not polled again.
            Some(Err(payload)) => {
                let _ = reply.push_items(std::mem::take(&mut frames));
                let report = reply.panic_report(&*payload);
                crate::report::drop_contained(stream);
                return reply.fail(Failure::Panicked(report));
            }
            // Nothing more ready: what was gathered goes.
            None => {
                if !reply.push_items(std::mem::take(&mut frames)) {
                    return;
                }
                continue;
            }
            Some(Ok(item)) => item,
        };
        match item {
            Some(Ok(item)) => match reply.item(&item) {
                Ok((frame, fds)) => {
                    credit.spend(frame.len() + fds.len() * crate::handoff::DESCRIPTOR_WEIGHT);
                    if fds.is_empty() {
                        frames.push(frame);
                    } else if !reply.push_items(std::mem::take(&mut frames))
                        || !reply.push_item((frame, fds))
                    {
                        return;
                    }
                    if (frames.len() >= GATHER || !credit.has_room())
                        && !reply.push_items(std::mem::take(&mut frames))
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = reply.push_items(std::mem::take(&mut frames));
                    return reply.fail(Failure::Wire(e));
                }
            },
            Some(Err(raised)) => {
                let _ = reply.push_items(std::mem::take(&mut frames));
                return reply.fail(Failure::Raised(raised));
            }
            None => {
                let _ = reply.push_items(std::mem::take(&mut frames));
                return reply.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Credit;

    #[test]
    fn credit_runs_below_zero_by_one_item_at_most_and_is_clipped() {
        let credit = Credit::default();
        assert!(!credit.has_room(), "no room before the window is granted");
        credit.grant(100);
        credit.spend(60);
        assert!(credit.has_room());
        // The item that overdraws it is sent; the next waits.
        credit.spend(60);
        assert!(!credit.has_room());
        credit.grant(20);
        assert!(!credit.has_room(), "-20 + 20 is no room yet");
        credit.grant(1);
        assert!(credit.has_room());
        // However much is granted, the count is clipped at 2^40 and does
        // not overflow: 2^40 spent takes all of it.
        credit.grant(u64::MAX);
        credit.grant(u64::MAX);
        credit.spend(1 << 40);
        assert!(!credit.has_room());
        credit.grant(1);
        assert!(credit.has_room());
    }
}
