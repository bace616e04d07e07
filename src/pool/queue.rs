//! The pool's queue: requests waiting for a member with room, oldest
//! first, and the deadlines of those asked with a timeout.
//!
//! A timed request that waits must fail with its timeout where it waits if
//! no member takes it first. A timer per request would be one more item in
//! the pool's actix context, which actix polls on every wake-up of the
//! actor, and which stays until it fires, long after its request left: a
//! pool with 20,000 timed requests waiting did 20,000 checks per answer
//! (reliability review, finding 6). So the queue keeps the deadlines in
//! order beside the requests, each removed when its request leaves, and
//! the pool arms one timer, for the earliest (`arm`).
//!
//! Beside the queue: the places in it given to callers held back at its
//! bound ([`Place`]), and the messages that wake the pool about what
//! waits. Written for any actor `A` that keeps a queue (the pool), so that
//! the queue names nothing above it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use actix::{Actor, AsyncContext, Context, Message, SpawnHandle, WeakRecipient};

use crate::error::WorkerError;

/// A request waiting in the queue of pool `A`.
pub(crate) trait Queued<A> {
    /// Its caller no longer waits (gone, or timed out).
    fn cancelled(&self) -> bool;
    /// Hands it to the member at position `at`.
    fn dispatch(self: Box<Self>, pool: &mut A, at: usize);
    /// Fails it.
    fn refuse(self: Box<Self>, e: WorkerError);
    /// Fails it with its timeout: its deadline passed while it waited.
    fn expire(self: Box<Self>);
}

/// Requests waiting, by arrival, and the deadlines of the timed ones.
pub(crate) struct Queue<A> {
    /// By key, which grows with each request: the first is the oldest. A
    /// map rather than a ring so that a request can leave from anywhere
    /// (timed out, its caller gone) at the cost of a lookup.
    items: BTreeMap<u64, Entry<A>>,
    /// `(deadline, key)` of each timed request in `items`.
    deadlines: BTreeSet<(Instant, u64)>,
    next_key: u64,
    /// The pool's one timer for the deadlines: when it fires, and its
    /// handle in the pool's context (to cancel it).
    timer: Option<(Instant, SpawnHandle)>,
}

struct Entry<A> {
    item: Box<dyn Queued<A>>,
    deadline: Option<Instant>,
}

impl<A> Default for Queue<A> {
    fn default() -> Self {
        Queue { items: BTreeMap::new(), deadlines: BTreeSet::new(), next_key: 0, timer: None }
    }
}

impl<A> Queue<A> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Timed requests waiting: entries of the deadline index.
    pub(crate) fn deadlines(&self) -> usize {
        self.deadlines.len()
    }

    /// Timers armed for the deadlines: 0 or 1.
    pub(crate) fn timers(&self) -> usize {
        usize::from(self.timer.is_some())
    }

    /// Adds a request behind the others; with a deadline, it is failed
    /// then if it still waits.
    pub(crate) fn push(&mut self, item: Box<dyn Queued<A>>, deadline: Option<Instant>) {
        let key = self.next_key;
        self.next_key += 1;
        if let Some(at) = deadline {
            self.deadlines.insert((at, key));
        }
        self.items.insert(key, Entry { item, deadline });
    }

    /// Whether the oldest request's caller has gone (`None`: empty).
    pub(crate) fn front_cancelled(&self) -> Option<bool> {
        self.items.first_key_value().map(|(_, e)| e.item.cancelled())
    }

    /// Takes the oldest request out, with its deadline.
    pub(crate) fn pop_front(&mut self) -> Option<Box<dyn Queued<A>>> {
        let (key, entry) = self.items.pop_first()?;
        Some(self.unindex(key, entry))
    }

    /// Takes out every request whose deadline is `now` or past.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Box<dyn Queued<A>>> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(entry) = self.items.remove(&key) {
                due.push(entry.item);
            }
        }
        due
    }

    /// Drops every request whose caller has gone; how many.
    pub(crate) fn sweep(&mut self) -> usize {
        let gone: Vec<u64> =
            self.items.iter().filter(|(_, e)| e.item.cancelled()).map(|(&k, _)| k).collect();
        for key in &gone {
            if let Some(entry) = self.items.remove(key) {
                drop(self.unindex(*key, entry));
            }
        }
        gone.len()
    }

    /// Takes out everything, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<Box<dyn Queued<A>>> {
        self.deadlines.clear();
        std::mem::take(&mut self.items).into_values().map(|e| e.item).collect()
    }

    fn unindex(&mut self, key: u64, entry: Entry<A>) -> Box<dyn Queued<A>> {
        if let Some(at) = entry.deadline {
            self.deadlines.remove(&(at, key));
        }
        entry.item
    }
}

/// The actor whose queue it is: the queue's timer calls its `expire`.
pub(crate) trait Expires: Actor<Context = Context<Self>> {
    /// The queue's timer fired: the requests past their deadline fail
    /// with their timeout, and it is armed for the next deadline.
    fn expire(&mut self, ctx: &mut Context<Self>);
}

/// Arms the queue's one timer for its earliest deadline, or cancels it when
/// no request is timed: called whenever requests have come or left. A timer
/// armed for a deadline whose request has left since fires early, finds
/// nothing due and is armed again ([`Expires::expire`]).
pub(crate) fn arm<A: Expires>(queue: &Rc<RefCell<Queue<A>>>, ctx: &mut Context<A>) {
    let mut q = queue.borrow_mut();
    let earliest = q.deadlines.first().map(|&(at, _)| at);
    match (earliest, q.timer) {
        (None, None) => {}
        (None, Some((_, handle))) => {
            ctx.cancel_future(handle);
            q.timer = None;
        }
        // Fires no later than needed.
        (Some(at), Some((armed, _))) if armed <= at => {}
        (Some(at), armed) => {
            if let Some((_, handle)) = armed {
                ctx.cancel_future(handle);
            }
            let delay = at.saturating_duration_since(Instant::now());
            let handle = ctx.run_later(delay, |pool, ctx| pool.expire(ctx));
            q.timer = Some((at, handle));
        }
    }
}

/// The timer has fired: it is armed no more.
pub(crate) fn fired<A>(queue: &RefCell<Queue<A>>) {
    queue.borrow_mut().timer = None;
}

/// A place in a pool's queue, given to a caller held back at its bound
/// (see `waiting.rs`): kept for it until its request comes back. Given
/// back to the pool if its caller goes first, so that no place is lost.
pub(crate) struct Place {
    pool: Option<WeakRecipient<Release>>,
}

impl Place {
    /// A place in the queue of the pool `pool` reaches.
    pub(crate) fn new(pool: WeakRecipient<Release>) -> Self {
        Place { pool: Some(pool) }
    }

    /// Its request has come back: the place is taken.
    pub(crate) fn taken(mut self) {
        self.pool = None;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().and_then(|pool| pool.upgrade()) {
            pool.do_send(Release);
        }
    }
}

/// A place given to a caller who went before taking it.
pub(crate) struct Release;

impl Message for Release {
    type Result = ();
}

/// Wakes the pool: an answer freed a place while requests wait.
pub(crate) struct Pump;

impl Message for Pump {
    type Result = ();
}

/// Drops from the queue the requests whose callers have gone, and the
/// tickets of callers held back who have gone: sent every `SWEEP`
/// (`worker_pool.rs`) while anything waits.
pub(crate) struct Sweep;

impl Message for Sweep {
    type Result = ();
}
