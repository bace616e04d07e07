//! The actor's inbox: how the runtime reaches the worker's actor. Every
//! message, request and hook call is a [`Command`] on one channel, run by
//! [`InboxLoop`], an item of the actor's own context, with the actor and its
//! context in hand.
//!
//! One channel keeps everything from the parent in order (posts, requests,
//! terminate's `on_close`), and calling the actor's handlers directly lets a
//! plain handler's answer go out at once, without a task per request.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::MessageResponse;
use actix::fut::ActorFuture;
use std::any::Any;
use std::cell::Cell;
use std::rc::Rc;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, ResponseFuture,
    SpawnHandle,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::protocol::{Received, Request};
use crate::session::answers::Reply;
use crate::session::trace::Scope;

/// An actor the runtime reaches through its inbox: it takes posts of
/// `Post` (every `WorkerActor` is one, in `actor.rs`).
pub(crate) trait Inboxed:
    Actor<Context = Context<Self>> + Handler<Received<Self::Post>>
{
    /// What its parent posts it.
    type Post: 'static;
}

/// A call into the actor.
pub(crate) type Call<W> = Box<dyn FnOnce(&mut W, &mut Context<W>)>;

/// A message posted to the worker.
pub(crate) type Posted<W> = Received<<W as Inboxed>::Post>;

/// What the runtime hands the actor.
pub(crate) enum Command<W: Inboxed> {
    Call(Call<W>),
    /// Posted messages, in order: one command for all those read together.
    Posts(Vec<Posted<W>>),
}

impl<W: Inboxed> Command<W> {
    pub(crate) fn call(f: impl FnOnce(&mut W, &mut Context<W>) + 'static) -> Self {
        Command::Call(Box::new(f))
    }
}

/// Handler calls per poll before other items of the context get a turn.
const BUDGET: usize = 256;

/// Runs [`Command`]s in the actor's context.
pub(crate) struct InboxLoop<W: Inboxed> {
    rx: UnboundedReceiver<Command<W>>,
    /// What is left of the batch of posts being handled.
    posts: std::vec::IntoIter<Posted<W>>,
}

impl<W: Inboxed> InboxLoop<W> {
    pub(crate) fn new(rx: UnboundedReceiver<Command<W>>) -> Self {
        InboxLoop { rx, posts: Vec::new().into_iter() }
    }
}

// Nothing in it is ever pinned in place.
impl<W: Inboxed> Unpin for InboxLoop<W> {}

impl<W: Inboxed> ActorFuture<W> for InboxLoop<W> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut W,
        ctx: &mut Context<W>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let mut budget = BUDGET;
        loop {
            if budget == 0 {
                task.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            // Each message and command is taken out before it runs: a panic
            // inside leaves the loop consistent, and polling goes on with
            // the next.
            if let Some(msg) = this.posts.next() {
                <W as Handler<Posted<W>>>::handle(act, msg, ctx).handle(ctx, None);
                continue;
            }
            match this.rx.poll_recv(task) {
                Poll::Ready(Some(Command::Call(f))) => f(act, ctx),
                Poll::Ready(Some(Command::Posts(posts))) => this.posts = posts.into_iter(),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Has the actor's `Handler<R>` answer `req`: a plain handler's answer goes
/// out at once, an async one's when it resolves; if the handler drops it
/// (or panics), `reply` says so as it is dropped.
///
/// An async answer of the two kinds actix names, `ResponseFuture` and
/// `ResponseActFuture`, is run here rather than by actix, so that the
/// parent can cancel it: the first as a task that is aborted, the second
/// as a future of the actor's context that is cancelled. Either way the
/// handler's future is dropped and nothing is sent. (Any other async
/// response runs to its end; its answer is then dropped.)
pub(crate) fn handle_request<W, R>(
    act: &mut W,
    req: R,
    ctx: &mut Context<W>,
    mut reply: Reply,
    ctl: &Rc<UnboundedSender<Command<W>>>,
) where
    W: Inboxed + Handler<R>,
    R: Request,
    <W as Handler<R>>::Result: 'static,
{
    if !reply.wanted() {
        // Cancelled before its turn came: not started at all.
        return;
    }
    // The handler runs inside the request's span, when it is traced: what
    // it asks the parent meanwhile joins the trace.
    let mut response = {
        let _entered = reply.scope().map(Scope::enter);
        Some(<W as Handler<R>>::handle(act, req, ctx))
    };
    let any: &mut dyn Any = &mut response;
    if let Some(fut) =
        any.downcast_mut::<Option<ResponseFuture<R::Answer>>>().and_then(Option::take)
    {
        // Polled inside the span too.
        let fut: ResponseFuture<R::Answer> = match reply.take_scope() {
            Some(scope) => Box::pin(scope.wrap(fut)),
            None => fut,
        };
        let (fut, abort) = futures_util::future::abortable(fut);
        reply.on_cancel(move || abort.abort());
        crate::session::spawn_boxed(async move {
            // Err: cancelled; the reply goes unsent with the future.
            if let Ok(answer) = fut.await {
                reply.answer(&answer);
            }
        });
        return;
    }
    if let Some(fut) =
        any.downcast_mut::<Option<ResponseActFuture<W, R::Answer>>>().and_then(Option::take)
    {
        return in_actor(fut, reply, ctx, ctl);
    }
    let Some(response) = response else { return };
    let (tx, mut rx) = oneshot::channel();
    response.handle(ctx, Some(tx));
    match rx.try_recv() {
        Ok(answer) => reply.answer(&answer),
        Err(oneshot::error::TryRecvError::Empty) => {
            crate::session::spawn_boxed(async move {
                if let Ok(answer) = rx.await {
                    reply.answer(&answer);
                }
            });
        }
        Err(oneshot::error::TryRecvError::Closed) => drop(reply),
    }
}

/// An actor's future (a `ResponseActFuture`) polled inside the scope of
/// the request it answers, as `Scope::wrap` does for a plain future.
struct InScope<F> {
    scope: Scope,
    fut: F,
}

impl<W: Actor, F: ActorFuture<W> + Unpin> ActorFuture<W> for InScope<F> {
    type Output = F::Output;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut W,
        ctx: &mut W::Context,
        task: &mut TaskContext<'_>,
    ) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.scope.enter();
        Pin::new(&mut this.fut).poll(act, ctx, task)
    }
}

/// Runs `fut`, a `ResponseActFuture` answering a request, as a future of
/// the actor's context that the asker's cancel cancels; a panic in it
/// fails its request only: the reply, dropped unsent, says `Panicked` with
/// the hook's report.
fn in_actor<W: Inboxed, A: serde::Serialize + 'static>(
    fut: ResponseActFuture<W, A>,
    mut reply: Reply,
    ctx: &mut Context<W>,
    ctl: &Rc<UnboundedSender<Command<W>>>,
) {
    // Polled inside the span too.
    let fut: ResponseActFuture<W, A> = match reply.take_scope() {
        Some(scope) => Box::pin(InScope { scope, fut }),
        None => fut,
    };
    let spawned = Rc::new(Cell::new(None::<SpawnHandle>));
    {
        let (spawned, ctl) = (spawned.clone(), ctl.clone());
        reply.on_cancel(move || {
            if let Some(handle) = spawned.get() {
                let _ = ctl.send(Command::call(move |_: &mut W, ctx: &mut Context<W>| {
                    ctx.cancel_future(handle);
                }));
            }
        });
    }
    let answered = Survived(Some(fut)).map(move |answer, _, _| match answer {
        Some(answer) => reply.answer(&answer),
        None => drop(reply),
    });
    spawned.set(Some(ctx.spawn(answered)));
}

/// A request's actor future whose panic fails only that request (its
/// output `None`) instead of unwinding out of the actor's context, which
/// could not poll it again ("resumed after panicking"): the worker would
/// exit with 101 and every other request with it.
struct Survived<F>(Option<F>);

impl<W: Actor, F: ActorFuture<W> + Unpin> ActorFuture<W> for Survived<F> {
    type Output = Option<F::Output>;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut W,
        ctx: &mut W::Context,
        task: &mut TaskContext<'_>,
    ) -> Poll<Option<F::Output>> {
        let this = self.get_mut();
        let Some(fut) = this.0.as_mut() else { return Poll::Ready(None) };
        let polled = || Pin::new(fut).poll(act, ctx, task);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(polled)) {
            Ok(Poll::Ready(answer)) => Poll::Ready(Some(answer)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                // Reported by the hook.
                crate::report::drop_contained(this.0.take());
                Poll::Ready(None)
            }
        }
    }
}
