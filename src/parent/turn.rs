//! A turn for the writer while the actor drains a deep mailbox.
//!
//! actix drains an actor's mailbox whole in one poll. A caller that posts
//! 10,000 messages before it awaits has every one of them encoded into the
//! outbox before the connection's writer, a task on the same thread, can
//! write the first: 900 KB of encoded messages pile up, the encoder's
//! buffers cannot be reused (what was cut from them is still queued), and
//! the allocator hands out and merges fresh 64 KiB blocks among 20,000
//! just-freed envelopes. So, every [`TURN_MESSAGES`] messages or
//! [`TURN_BYTES`] bytes queued, the actor stops taking from its mailbox
//! until the tasks ready on its thread (the writer first among them) have
//! had a turn; nothing is reordered, and a mailbox that never holds that
//! much never pauses. A [`Port`](super::port::Port)'s caller on the
//! writer's thread is the same: `post_waiting` yields to the other tasks
//! as often (for `post`s too, which cannot wait themselves). Figures in
//! docs/performance.md ("a turn for the writer").

use std::os::fd::OwnedFd;

use actix::{Actor, AsyncContext, Context};

use crate::wire::outbox::{Outbox, Refusal};
use crate::wire::segments::Segments;

/// Messages queued between two turns for the writer.
pub(crate) const TURN_MESSAGES: usize = 512;
/// Bytes queued between two turns for the writer: a batch's worth.
pub(crate) const TURN_BYTES: usize = crate::wire::envelope::BATCH_TARGET;

/// What was queued since the writer's last turn.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    messages: usize,
    bytes: usize,
}

impl Turn {
    /// Pushes a message into `outbox` for the actor of `ctx`, and counts
    /// it: after enough, the actor waits for a turn of the other tasks
    /// ready on its thread before it takes its next message.
    pub(crate) fn push<A: Actor<Context = Context<A>>>(
        &mut self,
        outbox: &Outbox,
        (bytes, fds): (Segments, Vec<OwnedFd>),
        ctx: &mut Context<A>,
    ) -> Result<(), (Refusal, Segments, Vec<OwnedFd>)> {
        let len = bytes.len();
        outbox.try_push(bytes, fds)?;
        self.counted(len, ctx);
        Ok(())
    }

    /// Counts a message of `len` bytes queued by the actor of `ctx`, and
    /// has it wait for a turn of the others when one is due.
    pub(crate) fn counted<A: Actor<Context = Context<A>>>(
        &mut self,
        len: usize,
        ctx: &mut Context<A>,
    ) {
        self.count(len);
        if self.due() {
            ctx.wait(actix::fut::wrap_future(tokio::task::yield_now()));
        }
    }

    /// Counts a message of `len` bytes queued. One queued where no turn
    /// can be given (a `Port`'s `post`, which cannot wait) stays counted
    /// for the next place that can.
    pub(crate) fn count(&mut self, len: usize) {
        self.messages += 1;
        self.bytes += len;
    }

    /// Whether the writer is due a turn; if so, it is given now: the count
    /// starts again.
    pub(crate) fn due(&mut self) -> bool {
        if self.messages < TURN_MESSAGES && self.bytes < TURN_BYTES {
            return false;
        }
        *self = Turn::default();
        true
    }
}
