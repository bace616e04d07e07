//! actix's own share of the address path: an actor that takes the same
//! [`Post`]s and [`Ask`]s a `Worker` does, through the same kind of
//! address, and does nothing with them. What a post or an ask costs it is
//! what actix (its envelope, its queue node, the wake-up and the
//! dispatch) and the caller (its payload) cost, in the process measured,
//! threads and all: the fastest any actor behind an `Addr` can take them,
//! so the ceiling of the `stream_small` and `pipelined` rows through the
//! address (see docs/performance.md).

use actix::{Actor, Context, Handler};
use actix_webworker::{Ask, Post, Request, WorkerError};

/// Takes posts and answers asks, doing nothing else.
#[derive(Default)]
pub struct Floor {
    /// Posts taken so far.
    pub posts: u64,
}

impl Actor for Floor {
    type Context = Context<Self>;
}

impl<M: 'static> Handler<Post<M>> for Floor {
    type Result = Result<(), WorkerError>;

    fn handle(&mut self, post: Post<M>, _: &mut Context<Self>) -> Self::Result {
        drop(std::hint::black_box(post));
        self.posts += 1;
        Ok(())
    }
}

impl<R: Request> Handler<Ask<R>> for Floor
where
    R::Answer: Default,
{
    type Result = Result<R::Answer, WorkerError>;

    fn handle(&mut self, ask: Ask<R>, _: &mut Context<Self>) -> Self::Result {
        drop(std::hint::black_box(ask));
        Ok(R::Answer::default())
    }
}
