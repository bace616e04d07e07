//! Hostile workers that try to exhaust the parent: descriptors, memory,
//! its thread. Each runs in a process of its own, which counts its
//! descriptors and its peak memory; each shows that another worker still
//! starts and answers.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    Event, ExitStatus, Limits, PoolEvent, RestartPolicy, WireError, WorkerAddrExt, WorkerBuilder,
    WorkerEvent, WorkerPool,
};
use libtest_mimic::Trial;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::common::*;
use crate::hostile::HELD_BACK;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        floods::a_descriptor_flood_in_a_frame_that_never_ends_is_cut_short,
        floods::descriptors_past_the_limit_are_closed_not_leaked,
        floods::a_worker_that_asks_and_never_reads_is_held_back,
        floods::a_worker_posting_faster_than_the_recipient_handles_is_held_back,
        floods::a_pool_member_posting_faster_than_the_recipient_handles_is_held_back,
        floods::large_posts_are_held_back_by_their_bytes,
        floods::posts_with_descriptors_are_held_back_by_their_count,
        floods::large_requests_to_a_slow_served_actor_are_held_back,
        floods::one_buffer_named_many_times_costs_the_parent_once,
        floods::a_flood_of_cancels_for_requests_never_asked_costs_nothing,
        floods::workers_together_are_held_to_the_total,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![
        floods::fd_flood_role,
        floods::fd_burst_role,
        floods::reply_flood_role,
        floods::event_flood_role,
        floods::pool_event_flood_role,
        floods::big_post_flood_role,
        floods::fd_post_flood_role,
        floods::big_ask_flood_role,
        floods::shared_amplify_role,
        floods::cancel_flood_role,
        floods::total_flood_role,
    ]
}

/// Starts a well-behaved worker and has it answer.
async fn another_worker_answers() {
    let (good, mut events) = start();
    assert_eq!(good.ask(Sum(vec![20, 22])).await.unwrap(), 42);
    good.terminate();
    assert!(events.exit().await.success());
}

/// Run alone by `a_descriptor_flood_in_a_frame_that_never_ends_is_cut_short`.
pub fn fd_flood_role() {
    run(async {
        another_worker_answers().await; // its lazily made things in the baseline
        let baseline = open_fds();
        // Room for 1,000 more: the flood would take 25,300.
        set_nofile(baseline as u64 + 1000);
        let (rec, mut events) = events::<Test>();
        let _flood = builder(rec).by_exec().entry("raw-fd-flood").start().unwrap();
        // Meanwhile, another worker starts and answers.
        another_worker_answers().await;
        let count = loop {
            match events.next().await {
                Event::WireError(WireError::UnclaimedFds { count }) => break count,
                Event::Online => {}
                other => panic!("expected UnclaimedFds, got {other:?}"),
            }
        };
        assert!(count <= 2 * 253 + 253, "{count} unclaimed descriptors held");
        // Told once: those descriptors are not told again as closed with
        // the reader (they were, twice, before).
        loop {
            match events.next().await {
                Event::Exit(_) => break,
                Event::WireError(WireError::UnclaimedFds { count }) => {
                    panic!("the flood was told a second time ({count} descriptors)")
                }
                _ => {}
            }
        }
        let back = within(Duration::from_millis(50), || open_fds() <= baseline).await;
        assert!(back, "{} descriptors after, {baseline} before", open_fds());
        another_worker_answers().await;
        println!("FD_FLOOD refused at {count} unclaimed descriptors; back to {baseline}");
    });
}

pub fn a_descriptor_flood_in_a_frame_that_never_ends_is_cut_short() {
    isolated("floods::fd_flood_role");
}

/// Run alone by `descriptors_past_the_limit_are_closed_not_leaked`.
pub fn fd_burst_role() {
    run(async {
        another_worker_answers().await;
        let baseline = open_fds();
        // Room for 60 more: 253 come in one message.
        set_nofile(baseline as u64 + 60);
        let (rec, mut events) = events::<Test>();
        let _burst = builder(rec).by_exec().entry("raw-fd-burst").start().unwrap();
        loop {
            match events.next().await {
                Event::WireError(WireError::Transport(e)) if e.contains("truncated") => break,
                Event::Online => {}
                other => panic!("expected truncated descriptors, got {other:?}"),
            }
        }
        events.exit().await;
        let back = within(Duration::from_millis(50), || open_fds() <= baseline).await;
        assert!(back, "{} descriptors after, {baseline} before", open_fds());
        set_nofile(baseline as u64 + 1000);
        another_worker_answers().await;
        println!("FD_BURST truncated; descriptors back to {baseline}");
    });
}

pub fn descriptors_past_the_limit_are_closed_not_leaked() {
    isolated("floods::fd_burst_role");
}

/// Starts the flooding worker `entry` (with `tweak` on its builder), has
/// another worker answer meanwhile, and waits for the flood to end: its
/// exit, and the parent's peak growth in KiB.
async fn flood_beside_another(
    entry: &str,
    tweak: impl FnOnce(WorkerBuilder<Test>) -> WorkerBuilder<Test>,
) -> (ExitStatus, u64) {
    another_worker_answers().await;
    let before = status_kib("VmRSS:");
    let (rec, mut events) = events::<Test>();
    let _flood = tweak(builder(rec).by_exec().entry(entry)).start().unwrap();
    another_worker_answers().await;
    let status = events.exit().await;
    (status, status_kib("VmHWM:").saturating_sub(before))
}

/// Run alone by `a_worker_that_asks_and_never_reads_is_held_back`.
pub fn reply_flood_role() {
    run(async {
        let (status, grew) = flood_beside_another("raw-reply-flood", |b| b).await;
        assert_eq!(status.code, Some(HELD_BACK), "the worker was never held back: {status}");
        assert!(grew < 64 << 10, "the parent grew by {grew} KiB");
        another_worker_answers().await;
        println!("REPLY_FLOOD held back; parent peak +{grew} KiB");
    });
}

pub fn a_worker_that_asks_and_never_reads_is_held_back() {
    isolated("floods::reply_flood_role");
}

/// An events recipient that lets everything but messages through, and
/// messages only once the gate is open: a recipient that falls behind.
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    tx: UnboundedSender<WorkerEvent<Test>>,
}

impl Actor for Gate {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent<Test>> for Gate {
    type Result = ();

    fn handle(&mut self, ev: WorkerEvent<Test>, _: &mut Context<Self>) {
        self.pass(ev);
    }
}

impl Gate {
    fn pass(&self, ev: WorkerEvent<Test>) {
        if matches!(ev.kind, Event::Message(_)) {
            let (lock, cond) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cond.wait(open).unwrap();
            }
        }
        let _ = self.tx.send(ev);
    }
}

/// The same gate for a pool's events: its members' events pass as
/// [`Gate`] lets them, the pool's own are dropped.
struct PoolGate(Gate);

impl Actor for PoolGate {
    type Context = Context<Self>;
}

impl Handler<PoolEvent<Test>> for PoolGate {
    type Result = ();

    fn handle(&mut self, ev: PoolEvent<Test>, _: &mut Context<Self>) {
        if let PoolEvent::Member { event, .. } = ev {
            self.0.pass(event);
        }
    }
}

/// A worker that posts as fast as it can, to a recipient that stops
/// handling its messages: it must be held back, the parent's memory stay
/// flat, and everything arrive once the recipient goes on. `start` starts
/// the flood with its events going to the gate (in an arbiter of its own),
/// and returns what keeps it running.
async fn held_back_by_a_gate<K>(what: &str, start: impl FnOnce(Gate, &Arbiter) -> K) {
    held_back_within(what, Bound { kib: 64 << 10, fds: 64 }, start).await
}

/// What the parent may hold of a flood that is held back: memory (its
/// peak's growth) and descriptors.
#[derive(Clone, Copy)]
struct Bound {
    kib: u64,
    fds: usize,
}

/// [`held_back_by_a_gate`], within `bound`.
async fn held_back_within<K>(what: &str, bound: Bound, start: impl FnOnce(Gate, &Arbiter) -> K) {
    another_worker_answers().await;
    let before = status_kib("VmRSS:");
    let fds_before = open_fds();
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, mut rx) = unbounded_channel();
    let arbiter = Arbiter::new();
    let _flood = start(Gate { open: open.clone(), tx }, &arbiter);
    let online = rx.recv().await.unwrap();
    assert!(matches!(online.kind, Event::Online));
    // The worker floods until it finds itself held back, and exits.
    let pid = online.pid;
    let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
    assert!(gone, "the flooding {what} never stopped");
    let grew = status_kib("VmHWM:").saturating_sub(before);
    let held_fds = open_fds().saturating_sub(fds_before);
    // Meanwhile the parent does other work.
    another_worker_answers().await;
    *open.0.lock().unwrap() = true;
    open.1.notify_all();
    let mut messages = 0u64;
    let status = loop {
        let ev = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        match ev.kind {
            Event::Message(_) => messages += 1,
            Event::Exit(status) => break status,
            // Held back in the middle of a message, and gone.
            Event::WireError(WireError::CutOff) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        status.code,
        Some(HELD_BACK),
        "the {what} was never held back ({messages} messages): {status}"
    );
    assert!(grew < bound.kib, "the parent grew by {grew} KiB");
    assert!(held_fds <= bound.fds, "the parent held {held_fds} descriptors");
    arbiter.stop();
    println!(
        "EVENT_FLOOD ({what}) held back; {messages} messages delivered after; parent peak \
         +{grew} KiB, +{held_fds} descriptors"
    );
}

/// Run alone by `a_worker_posting_faster_than_the_recipient_handles_is_held_back`.
pub fn event_flood_role() {
    run(held_back_by_a_gate("worker", |gate, arbiter| {
        let gate = Gate::start_in_arbiter(&arbiter.handle(), move |_| gate);
        builder(gate.recipient()).by_exec().entry("raw-event-flood").start().unwrap()
    }));
}

pub fn a_worker_posting_faster_than_the_recipient_handles_is_held_back() {
    isolated("floods::event_flood_role");
}

/// Run alone by `large_posts_are_held_back_by_their_bytes`: 8 MiB posts,
/// a window of 16 MiB. Before, the window counted events only (1,024 of up
/// to 64 MiB each): the 48 posts, 384 MiB, were all read and held.
pub fn big_post_flood_role() {
    let bound = Bound { kib: 48 << 10, fds: 64 };
    run(held_back_within("worker of large posts", bound, |gate, arbiter| {
        let gate = Gate::start_in_arbiter(&arbiter.handle(), move |_| gate);
        builder(gate.recipient())
            .by_exec().entry("raw-big-post-flood")
            .limits(Limits::default().event_window_bytes(16 << 20))
            .start()
            .unwrap()
    }));
}

pub fn large_posts_are_held_back_by_their_bytes() {
    isolated("floods::big_post_flood_role");
}

/// Run alone by `posts_with_descriptors_are_held_back_by_their_count`: 64
/// descriptors a post, a window of 256 descriptors. Before, the window of
/// 1,024 posts let 65,536 descriptors into the parent.
pub fn fd_post_flood_role() {
    // The window's 256, a post being read, and the kernel's unclaimed
    // bound (506): all that may be in the parent at once.
    let bound = Bound { kib: 64 << 10, fds: 256 + 64 + 506 };
    run(held_back_within("worker of descriptors", bound, |gate, arbiter| {
        let gate = Gate::start_in_arbiter(&arbiter.handle(), move |_| gate);
        builder(gate.recipient()).by_exec().entry("raw-fd-post-flood").start().unwrap()
    }));
}

pub fn posts_with_descriptors_are_held_back_by_their_count() {
    isolated("floods::fd_post_flood_role");
}

/// Serves `GetConfig` and takes an hour over each: every request waits,
/// held, in the parent.
struct Hoard;

impl Actor for Hoard {
    type Context = Context<Self>;
}

impl Handler<GetConfig> for Hoard {
    type Result = ResponseFuture<String>;

    fn handle(&mut self, msg: GetConfig, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            msg.0
        })
    }
}

/// Run alone by `large_requests_to_a_slow_served_actor_are_held_back`.
pub fn big_ask_flood_role() {
    run(async {
        let serve = |b: WorkerBuilder<Test>| b.serve(Hoard.start().recipient::<GetConfig>());
        let (status, grew) = flood_beside_another("raw-big-ask-flood", serve).await;
        assert_eq!(status.code, Some(HELD_BACK), "the worker was never held back: {status}");
        // The bytes bound (16 MiB) and one 8 MiB request past it, as read
        // and as decoded, and the reading buffer.
        assert!(grew < 64 << 10, "the parent grew by {grew} KiB");
        println!("BIG_ASK_FLOOD held back; parent peak +{grew} KiB");
    });
}

/// Requests the parent is answering count their bytes against the queue's
/// bound (16 MiB): before, only their number did (65,536 of up to 64 MiB),
/// and 48 requests of 8 MiB were all read and held.
pub fn large_requests_to_a_slow_served_actor_are_held_back() {
    isolated("floods::big_ask_flood_role");
}

/// Memfd mappings of this process made by the hostile worker.
fn hostile_maps() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.contains("memfd:hostile")).count()
}

/// Run alone by `one_buffer_named_many_times_costs_the_parent_once`.
pub fn shared_amplify_role() {
    run(async {
        another_worker_answers().await;
        let (rss, pte, fds) = (status_kib("VmRSS:"), status_kib("VmPTE:"), open_fds());
        let (rec, mut events) = events::<Test>();
        let _worker = builder(rec).by_exec().entry("raw-shared-amplify").start().unwrap();
        let mut posts = Vec::new();
        while posts.len() < 4 {
            match events.next().await {
                Event::Message(m) => posts.push(m.data),
                Event::Online => {}
                other => panic!("expected the 4 posts, got {other:?}"),
            }
        }
        // Received, not read: nothing mapped, one descriptor kept per post.
        let (rss_grew, pte_grew) =
            (status_kib("VmRSS:").saturating_sub(rss), status_kib("VmPTE:").saturating_sub(pte));
        let held_fds = open_fds().saturating_sub(fds);
        assert_eq!(hostile_maps(), 0, "mapped on arrival");
        assert!(rss_grew < 16 << 10, "the parent grew by {rss_grew} KiB");
        assert!(held_fds <= 4 + 8, "{held_fds} descriptors held for 4 posts of one file");
        // Read, every buffer of one post: one mapping, the bytes right.
        let Reply::Shared(first) = &posts[0] else { panic!("expected Shared") };
        assert_eq!(first.len(), 64);
        assert!(first.iter().all(|b| b.len() == 16 << 20 && b[0] == 9 && b[(16 << 20) - 1] == 9));
        let sum: u64 = first[63].iter().map(|&x| u64::from(x)).sum();
        assert_eq!(sum, 9 * (16 << 20));
        assert_eq!(hostile_maps(), 1, "one file, one mapping");
        println!(
            "SHARED_AMPLIFY 4 posts x 64 names of one 16 MiB file: +{rss_grew} KiB RSS, \
             +{pte_grew} KiB page tables, +{held_fds} descriptors before reading; one mapping \
             after reading 64 names"
        );
    });
}

/// One sealed file named 64 times in each of 4 posts: counted, kept and
/// mapped once per post, and only when read. Before, the parent mapped and
/// populated all 256 names on its own thread as they came (16 GiB of RSS
/// counted for 16 MiB of pages).
pub fn one_buffer_named_many_times_costs_the_parent_once() {
    isolated("floods::shared_amplify_role");
}

/// Run alone by
/// `a_pool_member_posting_faster_than_the_recipient_handles_is_held_back`:
/// the events window holds for a pool's members, whose events reach the
/// recipient through the pool.
pub fn pool_event_flood_role() {
    run(held_back_by_a_gate("pool member", |gate, arbiter| {
        let gate = PoolGate::start_in_arbiter(&arbiter.handle(), move |_| PoolGate(gate));
        // One member, never restarted or replaced: its exit is the end.
        WorkerPool::<Test>::builder()
            .by_exec().entry("raw-event-flood")
            .restart(RestartPolicy::never())
            .replacements(0, WAIT)
            .size(1)
            .events(gate.recipient())
            .start()
            .unwrap()
    }));
}

pub fn a_pool_member_posting_faster_than_the_recipient_handles_is_held_back() {
    isolated("floods::pool_event_flood_role");
}

/// Run alone by `a_flood_of_cancels_for_requests_never_asked_costs_nothing`.
pub fn cancel_flood_role() {
    run(async {
        let (status, grew) = flood_beside_another("raw-cancel-flood", |b| b).await;
        // Nothing to hold it back for: all 9,800,000 read, nothing kept.
        assert_eq!(status.code, Some(crate::hostile::NEVER_HELD_BACK), "{status}");
        assert!(grew < 16 << 10, "the parent grew by {grew} KiB");
        println!("CANCEL_FLOOD 9,800,000 cancels read; parent peak +{grew} KiB");
    });
}

/// Cancels of requests the parent never sent cost a look-up each and keep
/// nothing: a worker cannot grow the parent with them.
pub fn a_flood_of_cancels_for_requests_never_asked_costs_nothing() {
    isolated("floods::cancel_flood_role");
}

/// Run alone by `workers_together_are_held_to_the_total`.
pub fn total_flood_role() {
    run(async {
        another_worker_answers().await;
        let before = status_kib("VmRSS:");
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (tx, mut rx) = unbounded_channel();
        let arbiter = Arbiter::new();
        let gate = Gate { open: open.clone(), tx };
        let gate = Gate::start_in_arbiter(&arbiter.handle(), move |_| gate);
        // Four workers of 8 MiB posts, each within its own window (64 MiB
        // by default), all four over a total of 16 MiB.
        let limits = Limits::default().events_total_bytes(16 << 20);
        let _floods: Vec<_> = (0..4)
            .map(|_| {
                let b = builder(gate.clone().recipient());
                b.by_exec().entry("raw-big-post-flood").limits(limits).start().unwrap()
            })
            .collect();
        let mut pids = Vec::new();
        while pids.len() < 4 {
            let ev = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
            if matches!(ev.kind, Event::Online) {
                pids.push(ev.pid);
            }
        }
        // Each floods until it finds itself held back, and exits.
        for pid in pids {
            let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
            assert!(gone, "a flooding worker never stopped");
        }
        let grew = status_kib("VmHWM:").saturating_sub(before);
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        let (mut exits, mut messages) = (0, 0);
        while exits < 4 {
            let ev = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
            match ev.kind {
                Event::Message(_) => messages += 1,
                Event::Exit(status) => {
                    assert_eq!(status.code, Some(HELD_BACK), "never held back: {status}");
                    exits += 1;
                }
                Event::WireError(WireError::CutOff) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // The total (16 MiB), for each worker its first post and one past
        // the total, and a post being read (3 x 8 MiB), and the
        // allocator's slack: under 160 MiB. Each worker alone would take
        // its 64 MiB window and more (320 MiB in all).
        assert!(grew < 160 << 10, "the parent grew by {grew} KiB");
        arbiter.stop();
        println!(
            "TOTAL_FLOOD 4 workers held to 16 MiB together; {messages} messages after; parent \
             peak +{grew} KiB"
        );
    });
}

/// All workers' messages together are held to `events_total_bytes`, each
/// worker's own window notwithstanding. Before, only each worker's own
/// window held (and, before that, only a count).
pub fn workers_together_are_held_to_the_total() {
    isolated("floods::total_flood_role");
}
