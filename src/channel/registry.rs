//! The ends open on this thread, so that a worker that ends closes them
//! (`child/runtime.rs`, after `on_close`): what it posted on them goes
//! out, the other ends are told it closed (not that it went), and the
//! account on both sides is exact. Without this, a worker's exit would
//! drop what its ends had queued, and nobody would count it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::handle::close;
use crate::session::sender::Sender;

/// One end, as the registry keeps it.
struct Open {
    sender: Sender,
    task: Arc<Notify>,
    done: Rc<Done>,
}

/// Set when an end's task has ended.
#[derive(Default)]
pub(crate) struct Done {
    ended: Cell<bool>,
    told: Notify,
}

impl Done {
    pub(crate) fn set(&self) {
        self.ended.set(true);
        self.told.notify_waiters();
    }

    async fn wait(&self) {
        let told = self.told.notified();
        tokio::pin!(told);
        told.as_mut().enable();
        if !self.ended.get() {
            told.await;
        }
    }
}

thread_local! {
    static OPEN: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
}

/// Keeps an end opened on this thread; its task sets `done` at its end.
pub(crate) fn register(sender: &Sender, task: &Arc<Notify>) -> Rc<Done> {
    let done = Rc::new(Done::default());
    OPEN.with_borrow_mut(|open| {
        open.retain(|o| !o.done.ended.get());
        let (sender, task) = (sender.clone(), task.clone());
        open.push(Open { sender, task, done: done.clone() });
    });
    done
}

/// Closes every end still open on this thread and waits, at most `limit`,
/// until each has closed (the other end's close read, or its grace over).
pub(crate) async fn close_all(limit: Duration) {
    let open = OPEN.with_borrow_mut(std::mem::take);
    if open.is_empty() {
        return;
    }
    for end in &open {
        close(&end.sender, &end.task);
    }
    let all = futures_util::future::join_all(open.iter().map(|end| end.done.wait()));
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(ends = open.len(), "channel ends still closing as the worker ends");
    }
}
