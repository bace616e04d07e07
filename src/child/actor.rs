//! What a worker is: an actix actor that also implements [`WorkerActor`],
//! and the [`Requests`] it answers.

use std::rc::Rc;

use actix::{Actor, Context, Handler};
use tokio::sync::mpsc::UnboundedSender;

use super::inbox::{self, Command, Inboxed};
use super::panic;
use crate::error::ErrorReport;
use crate::protocol::{Protocol, Received, Request};
use crate::session::answers::Handlers;
use crate::session::declared::answered_tag;
use crate::session::produce::produce;
use crate::streamed::{StreamRequest, Streamed};

/// An actor that can run as a worker.
///
/// ```
/// use actix::{Actor, Context, Handler};
/// use actix_webworker::{Parent, Protocol, Received, WorkerActor};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] pub struct Ping(u32);
/// # struct Pings;
/// # impl Protocol for Pings { type ToWorker = Ping; type FromWorker = Ping; }
///
/// struct Echo {
///     parent: Parent<Pings>,
/// }
///
/// impl Actor for Echo {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<Received<Ping>> for Echo {
///     type Result = ();
///     fn handle(&mut self, msg: Received<Ping>, _: &mut Context<Self>) {
///         let _ = self.parent.post(Ping(msg.data.0 + 1));
///     }
/// }
///
/// impl WorkerActor for Echo {
///     type Protocol = Pings;
/// }
/// ```
pub trait WorkerActor:
    Actor<Context = Context<Self>> + Handler<Received<<Self::Protocol as Protocol>::ToWorker>>
{
    /// The protocol this worker speaks.
    type Protocol: Protocol;

    /// Registers the [`Request`] types this worker answers,
    /// each with the actor's own `Handler` for it:
    ///
    /// ```ignore
    /// fn requests(requests: &mut Requests<Self>) {
    ///     requests.answer::<Sum>().answer::<Hash>();
    /// }
    /// ```
    ///
    /// A request of a type not registered here fails in the parent with
    /// [`WorkerError::Unhandled`](crate::WorkerError::Unhandled), naming
    /// the type. Every request the protocol declares
    /// ([`Protocol::requests`]) must be registered: a worker that misses
    /// one refuses to start, and its parent gets
    /// [`WireError::Unanswered`](crate::WireError::Unanswered) naming it.
    /// A worker that takes no posts sets `type ToWorker =`
    /// [`NoPosts`](crate::NoPosts) in its protocol.
    fn requests(requests: &mut Requests<Self>) {
        let _ = requests;
    }

    /// Runs when the worker is terminated by its parent, closes itself, or
    /// its parent goes away (the `onclose` of the original). Messages posted
    /// here still reach the parent when it is alive.
    fn on_close(&mut self, ctx: &mut Context<Self>) {
        let _ = ctx;
    }

    /// Sees first every uncaught panic the actor survives (the worker's own
    /// `onerror`): in a message handler, an interval, the future that
    /// answers a request, `started`. Return `true` if it is handled: the
    /// parent is then not told. A panic the actor cannot survive (a
    /// `run_later` timer, a future spawned on its context) goes to the
    /// parent without it, and the worker exits with 101. The default
    /// handles nothing.
    fn on_error(&mut self, error: &ErrorReport, ctx: &mut Context<Self>) -> bool {
        let _ = (error, ctx);
        false
    }
}

/// The request types a worker answers; see [`WorkerActor::requests`].
pub struct Requests<W: WorkerActor> {
    pub(crate) handlers: Handlers,
    /// Shared by the handlers (and cloned per request without an atomic).
    ctl: Rc<UnboundedSender<Command<W>>>,
}

impl<W: WorkerActor> Requests<W> {
    pub(crate) fn new(ctl: UnboundedSender<Command<W>>) -> Self {
        Requests { handlers: Handlers::new(panic::last_report), ctl: Rc::new(ctl) }
    }

    /// Answers requests of type `R` with the actor's `Handler<R>`.
    ///
    /// A handler whose answer is a `ResponseFuture` or a
    /// `ResponseActFuture` can be cancelled: when the parent stops waiting
    /// (the request's timeout, or its caller going away), the future is
    /// dropped and nothing is sent.
    pub fn answer<R>(&mut self) -> &mut Self
    where
        R: Request,
        W: Handler<R>,
        <W as Handler<R>>::Result: 'static,
    {
        let ctl = self.ctl.clone();
        let tag = answered_tag::<W::Protocol, R>();
        self.handlers.insert::<R>(tag, move |req, reply| {
            let again = ctl.clone();
            // Sent back (and dropped, failing the request) if the actor is gone.
            let _ = ctl.send(Command::call(move |act: &mut W, ctx: &mut Context<W>| {
                inbox::handle_request(act, req, ctx, reply, &again)
            }));
        });
        self
    }

    /// Answers streamed requests of type `R` with the actor's
    /// `Handler<R>`, whose result is the [`Streamed`] items: the parent
    /// reads them as they are produced, and the producer waits while the
    /// parent's window is full. When the parent stops reading (it dropped
    /// its stream, or went away), the producer is dropped.
    ///
    /// ```ignore
    /// impl Handler<Rows> for Parser {
    ///     type Result = Streamed<Row>;
    ///     fn handle(&mut self, rows: Rows, _: &mut Context<Self>) -> Streamed<Row> {
    ///         Streamed::iter(parse(rows.path))
    ///     }
    /// }
    /// fn requests(requests: &mut Requests<Self>) {
    ///     requests.stream::<Rows>();
    /// }
    /// ```
    pub fn stream<R>(&mut self) -> &mut Self
    where
        R: StreamRequest,
        W: Handler<R, Result = Streamed<R::Item>>,
    {
        let ctl = self.ctl.clone();
        let tag = answered_tag::<W::Protocol, R>();
        self.handlers.insert_stream::<R>(tag, move |req, reply| {
            // Sent back (and dropped, failing the request) if the actor is gone.
            let _ = ctl.send(Command::call(move |act: &mut W, ctx: &mut Context<W>| {
                if reply.wanted() {
                    produce(reply, <W as Handler<R>>::handle(act, req, ctx));
                }
            }));
        });
        self
    }
}

/// Every worker's actor takes its inbox's commands.
impl<W: WorkerActor> Inboxed for W {
    type Post = <W::Protocol as Protocol>::ToWorker;
}
