//! How the runtime reaches the worker's actor: every message, request and
//! hook call is a [`Command`] on one channel, run by [`ControlLoop`], an item
//! of the actor's own context, with the actor and its context in hand.
//!
//! One channel keeps everything from the parent in order (posts, requests,
//! terminate's `on_close`), and calling the actor's handlers directly lets a
//! plain handler's answer go out at once, without a task per request.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::fut::ActorFuture;
use actix::Context;
use tokio::sync::mpsc::UnboundedReceiver;

use super::WorkerActor;

/// A call into the actor.
pub(crate) type Command<W> = Box<dyn FnOnce(&mut W, &mut Context<W>)>;

/// Commands run per poll before other items of the context get a turn.
const BUDGET: usize = 256;

/// Runs [`Command`]s in the actor's context.
pub(crate) struct ControlLoop<W: WorkerActor> {
    pub(crate) rx: UnboundedReceiver<Command<W>>,
}

impl<W: WorkerActor> ActorFuture<W> for ControlLoop<W> {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut W,
        ctx: &mut Context<W>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        for _ in 0..BUDGET {
            match self.rx.poll_recv(task) {
                // Taken off the channel before it runs: a panic inside leaves
                // the loop consistent, and polling goes on with the next.
                Poll::Ready(Some(cmd)) => cmd(act, ctx),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}
