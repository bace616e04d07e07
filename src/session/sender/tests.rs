//! The sending half's own tests.

use std::sync::Arc;

use super::answer::answer_of;
use super::*;
use crate::session::requests::Counted;
use crate::wire::envelope::Kind;
use crate::wire::outbox::Outgoing;

const MAX: usize = 1 << 20;
const ENCODING: Encoding =
    Encoding { codec: Codec::Bincode, max_message_size: MAX, descriptors: true };

#[derive(actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "u64")]
struct Double(u64);

struct Doubling;
impl Protocol for Doubling {
    type ToWorker = ();
    type FromWorker = ();
}

fn named() -> String {
    "Double".into()
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The frames queued in `outbox`, by kind.
fn queued_kinds(outbox: &Outbox) -> Vec<Kind> {
    let mut batch = std::collections::VecDeque::new();
    outbox.try_take_batch(&mut batch);
    let first = |out: &Outgoing| match out {
        Outgoing::Frame { bytes, .. } => {
            crate::wire::envelope::decode(&bytes.contiguous()).unwrap().0.kind
        }
        Outgoing::Posts(run) => {
            assert_eq!(run.count(), 1, "a test that posts more than once looks at each");
            Kind::Post
        }
        Outgoing::End => panic!("the outbox was ended"),
    };
    batch.iter().map(first).collect()
}

#[test]
fn an_ask_is_queued_at_once_and_its_slot_reaches_the_caller() {
    let sender = Sender::new(Arc::new(Outbox::new(usize::MAX, usize::MAX)), ENCODING);
    let asked = sender.ask::<Doubling, _>(&Double(21), None);
    assert_eq!(queued_kinds(&sender.outbox), [Kind::Request], "queued before any poll");
    assert_eq!(sender.pending.len(), 1);
    // (Answers themselves: the session's tests, two sessions talking.)
    sender.pending.fail_all(&WorkerError::Disconnected);
    assert!(matches!(run(asked), Err(WorkerError::Disconnected)));
    assert_eq!(sender.pending.len(), 0);
}

#[test]
fn an_ask_refused_by_a_full_outbox_fails_at_once_and_keeps_no_slot() {
    let sender = Sender::new(Arc::new(Outbox::new(1, usize::MAX)), ENCODING);
    sender.post(None, &"fills the queue", Vec::new()).unwrap();
    let refused = run(sender.ask::<Doubling, _>(&Double(1), None));
    assert!(matches!(refused, Err(WorkerError::QueueFull { .. })), "{refused:?}");
    assert_eq!(sender.pending.len(), 0);
    assert_eq!(queued_kinds(&sender.outbox), [Kind::Post], "nothing else: nothing to cancel");
}

#[test]
fn an_ask_dropped_or_timed_out_is_cancelled_and_the_peer_told() {
    let sender = Sender::new(Arc::new(Outbox::new(usize::MAX, usize::MAX)), ENCODING);
    drop(sender.ask::<Doubling, _>(&Double(1), None));
    let timed_out = run(sender.ask::<Doubling, _>(&Double(2), Some(Duration::from_millis(1))));
    assert!(matches!(timed_out, Err(WorkerError::Timeout(_))), "{timed_out:?}");
    assert_eq!(sender.pending.len(), 0);
    let kinds = queued_kinds(&sender.outbox);
    assert_eq!(kinds, [Kind::Request, Kind::Cancel, Kind::Request, Kind::Cancel]);
}

#[test]
fn an_answer_that_cannot_be_encoded_goes_as_the_failure_saying_why() {
    let small = Encoding { max_message_size: 64, ..ENCODING };
    let (frame, fds) = small.answer(7, &vec![0u8; 1000]);
    let (header, _) = crate::wire::envelope::decode(&frame.contiguous()).unwrap();
    assert_eq!((header.kind, header.id, fds.len()), (Kind::Failed, 7, 0));
}

/// Counts the failures delivered to it.
struct Failures(Arc<std::sync::atomic::AtomicUsize>);

impl Slot for Failures {
    fn deliver(
        self: Box<Self>,
        result: Result<crate::wire::ws::reader::Inbound, WorkerError>,
    ) -> Counted {
        assert!(result.is_err());
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        None
    }
}

/// The interleavings a sender on another thread (a parent's `Port`) can
/// meet at a connection's end, one by one: a request whose slot was taken
/// for the connection that ended is refused (`Moved`) if it comes after
/// the purge, purged and failed if it came before; one taken since is
/// neither failed nor refused, and waits for the next connection.
#[test]
fn a_request_is_made_for_one_connection_and_never_outlives_its_failure() {
    use crate::wire::outbox::Refusal;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let pending = Pending::default();
    pending.tell_through(outbox.clone());
    let failed = Arc::new(AtomicUsize::new(0));
    let request = |id| encode(Codec::Bincode, Header::request(id, 1), &id, MAX).unwrap();

    // Slot taken, pushed, then the connection ends: purged, then failed.
    let c = pending.attach_on(1, named, Box::new(Failures(failed.clone())));
    assert!(outbox.try_push_on(request(1), Vec::new(), c).is_ok());
    // Slot taken, the connection ends before the push: refused.
    let c2 = pending.attach_on(2, named, Box::new(Failures(failed.clone())));
    assert_eq!(c, c2);
    let ended = outbox.end_connection();
    assert_eq!(ended, c);
    assert_eq!(outbox.len(), 0, "the queued request was purged");
    let late = outbox.try_push_on(request(2), Vec::new(), c2);
    assert!(matches!(late, Err((Refusal::Moved, _, _))));
    // Slot taken after the end, before the failures: for the next one.
    let c3 = pending.attach_on(3, named, Box::new(Failures(failed.clone())));
    assert_eq!(c3, c + 1);
    assert!(outbox.try_push_on(request(3), Vec::new(), c3).is_ok());
    pending.fail_through(ended, &WorkerError::Disconnected);
    assert_eq!(failed.load(Ordering::SeqCst), 2, "requests 1 and 2 failed");
    assert!(pending.contains(3) && !pending.contains(1) && !pending.contains(2));
    assert_eq!(outbox.len(), 1, "request 3 waits for the next connection");
    // The sender forgets a slot it could not queue: nothing to cancel.
    pending.forget(2);
    assert_eq!(outbox.len(), 1);
}

/// One slot for every try: queued, it waits for its answer; refused by a
/// full outbox, it comes back whole (with the encoded request, under
/// `wait`) and nothing of it stays behind, nothing is sent to cancel.
#[test]
fn a_slot_not_queued_comes_back_with_why() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sender = Sender::new(Arc::new(Outbox::new(2, usize::MAX)), ENCODING);
    let failed = Arc::new(AtomicUsize::new(0));
    let slot = || Box::new(Failures(failed.clone())) as Box<dyn Slot>;
    let request = |id| (encode(Codec::Bincode, Header::request(id, 1), &id, MAX).unwrap(), vec![]);
    let named = |id| (id, named as Naming);

    assert!(sender.queue_slot(named(1), request(1), true, slot()).is_ok());
    assert!(sender.pending.contains(1), "queued: its slot waits");
    sender.post(None, &"fills the queue", Vec::new()).unwrap();
    match sender.queue_slot(named(2), request(2), true, slot()) {
        Err((NotQueued::Full { bytes, .. }, Some(slot))) => {
            assert_eq!(crate::wire::envelope::decode(&bytes.contiguous()).unwrap().0.id, 2);
            slot.deliver(Err(WorkerError::Disconnected));
        }
        _ => panic!("a full outbox under `wait` gives the request and its slot back"),
    }
    match sender.queue_slot(named(3), request(3), false, slot()) {
        Err((NotQueued::Refused(WorkerError::QueueFull { .. }), Some(slot))) => {
            slot.deliver(Err(WorkerError::Disconnected));
        }
        _ => panic!("a full outbox without `wait` refuses, and gives the slot back"),
    }
    assert_eq!(failed.load(Ordering::SeqCst), 2, "each slot came back once, undelivered");
    assert!(!sender.pending.contains(2) && !sender.pending.contains(3));
    assert_eq!(queued_kinds(&sender.outbox), [Kind::Request, Kind::Post], "no cancel");
}

/// A timed request whose slot its outcome took (on the reader's thread)
/// just as its time ran out is that outcome, not a timeout: it was
/// delivered, and counted so, once. Before, the caller got `Timeout` while
/// the slot counted the answer: one request, counted twice.
#[test]
fn a_request_whose_outcome_took_its_slot_as_its_time_ran_out_is_that_outcome() {
    run(async {
        let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
        let pending = Arc::new(Pending::default());
        pending.tell_through(outbox.clone());
        let (tx, rx) = oneshot::channel();
        pending.attach(1, named, Box::new(ToChannel::<u64>(Some(tx))));
        // Taken by what the reader read, not delivered yet.
        let slot = pending.take(1).unwrap();
        let limit = Duration::from_millis(20);
        let asked = answer_of(Cancel::new(&pending, 1), rx, Some(limit));
        tokio::pin!(asked);
        let early = tokio::time::timeout(Duration::from_millis(300), &mut asked).await;
        assert!(early.is_err(), "past its limit it waits for what is on its way: {early:?}");
        let _ = slot.deliver(Err(WorkerError::Unhandled("on its way".into())));
        match asked.await {
            Err(WorkerError::Unhandled(said)) => assert_eq!(said, "on its way"),
            other => panic!("the outcome that took the slot, not {other:?}"),
        }
        assert!(queued_kinds(&outbox).is_empty(), "no cancel: it was not waiting");
    })
}

/// Records the id of each request delivered to it, when counted.
struct Recording(u64, Arc<std::sync::Mutex<Vec<u64>>>);

impl Slot for Recording {
    fn deliver(
        self: Box<Self>,
        _: Result<crate::wire::ws::reader::Inbound, WorkerError>,
    ) -> Counted {
        self.1.lock().unwrap().push(self.0);
        Some((false, None))
    }
}

/// Requests made while connections end one after another on another
/// thread: each is delivered (counted) exactly once. One refused because
/// its connection ended (`Moved`) after that end's failures reached its
/// slot is that failure; made again, as it was before, it was delivered a
/// second time (with its new slot).
#[test]
fn a_request_failed_with_its_connection_before_its_push_is_not_made_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: u64 = 20_000;
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let sender = Arc::new(Sender::new(outbox.clone(), ENCODING));
    let delivered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let ender = {
        let (sender, stop) = (sender.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ends = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ended = sender.outbox.end_connection();
                sender.pending.fail_through(ended, &WorkerError::Disconnected);
                ends += 1;
            }
            ends
        })
    };
    let request = |id| (encode(Codec::Bincode, Header::request(id, 1), &id, MAX).unwrap(), vec![]);
    let mut failed_at_once = 0;
    for id in 0..N {
        let halves = || (Box::new(Recording(id, delivered.clone())) as Box<dyn Slot>, ());
        match sender.queue_with((id, named as Naming), request(id), false, halves) {
            Ok(()) => {}
            Err(_) => failed_at_once += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ends = ender.join().unwrap();
    sender.pending.fail_all(&WorkerError::Disconnected);
    let mut counts = vec![0u32; N as usize];
    for &id in delivered.lock().unwrap().iter() {
        counts[id as usize] += 1;
    }
    let twice: Vec<u64> = (0..N).filter(|&id| counts[id as usize] > 1).collect();
    let never = (0..N).filter(|&id| counts[id as usize] == 0).count();
    assert!(ends > 100, "the connections ended as the requests were made ({ends} ends)");
    assert!(
        twice.is_empty(),
        "{} requests delivered twice, e.g. {:?}",
        twice.len(),
        &twice[..3.min(twice.len())]
    );
    assert_eq!(never, failed_at_once, "every request queued is delivered once");
}

/// A sender whose pushes are refused as `Moved` for a while: its table's
/// connection (what its slots are taken on) is one ahead of its outbox's,
/// as when a connection ends between a port's `attach_on` and its
/// `try_push_on`, until the thread returned moves the outbox's on too
/// (after 20 ms: many tries, whatever the load).
fn moved_for_a_while() -> (Sender, std::thread::JoinHandle<()>) {
    let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let table_side = Arc::new(Outbox::new(usize::MAX, usize::MAX));
    let _ = table_side.end_connection();
    let pending = Arc::new(Pending::default());
    pending.tell_through(table_side);
    let mover = {
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = outbox.end_connection();
        })
    };
    (Sender { outbox, pending, encoding: ENCODING }, mover)
}

/// A streamed request (a port's `ask_stream`, whose slot's `after` is the
/// worker's count) refused as `Moved`, again and again until the outbox's
/// connection moves on, then queued: its outcome is told once, by the
/// one slot that went with every try. Before, each try made a slot, and
/// each one taken back and dropped told its `after` a failure (16,217
/// times in the review's run) while the request was still in flight.
#[test]
fn a_streamed_request_refused_as_moved_is_told_its_outcome_once() {
    use crate::session::streams::{AfterStream, Asking};
    let (sender, mover) = moved_for_a_while();
    let pending = sender.pending.clone();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let asking = Asking { id: 7, window: 1024, context: None };
    let halves = || {
        let told = told.clone();
        let after: AfterStream = Box::new(move |end| told.lock().unwrap().push(format!("{end:?}")));
        asking.halves::<u64>(&pending, Some(after))
    };
    let request = (encode(Codec::Bincode, Header::request(7, 1), &7u64, MAX).unwrap(), vec![]);
    let Ok(stream) = sender.queue_with((7, named as Naming), request, false, halves) else {
        panic!("queued once the outbox's connection moved on");
    };
    mover.join().unwrap();
    assert!(pending.contains(7), "queued, waiting for its answer");
    let early = told.lock().unwrap().len();
    pending.fail_all(&WorkerError::Disconnected);
    drop(stream);
    let all = told.lock().unwrap().clone();
    assert_eq!((early, all.len()), (0, 1), "told once, when failed (first: {:?})", all.first());
}

/// A subscriber that wants every span and keeps nothing of them.
struct Wanting(std::sync::atomic::AtomicU64);

impl tracing::Subscriber for Wanting {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A traced request refused as `Moved` and made again keeps its asking
/// span until it is done with: before, taking its slot back for the next
/// try closed its span, and the request went out untraced.
#[test]
fn a_traced_request_made_again_after_moved_keeps_its_span() {
    let subscriber = Wanting(std::sync::atomic::AtomicU64::new(0));
    tracing::subscriber::with_default(subscriber, || {
        let (sender, mover) = moved_for_a_while();
        let pending = sender.pending.clone();
        pending.trace(9, tracing::info_span!("ask"));
        assert_eq!(pending.spans_kept(), 1);
        let halves = || (Box::new(Recording(9, Default::default())) as Box<dyn Slot>, ());
        let request = (encode(Codec::Bincode, Header::request(9, 1), &9u64, MAX).unwrap(), vec![]);
        assert!(sender.queue_with((9, named as Naming), request, false, halves).is_ok());
        mover.join().unwrap();
        assert!(pending.contains(9), "queued once the outbox moved on");
        assert_eq!(pending.spans_kept(), 1, "queued, its span kept until it is done with");
        pending.fail_all(&WorkerError::Disconnected);
        assert_eq!(pending.spans_kept(), 0, "done with: its span closed");
    });
}
