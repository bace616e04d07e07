//! The sending half's own tests.

use std::sync::Arc;

use super::*;
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
