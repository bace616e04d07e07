//! What a worker can make the parent hold, and what the parent's own
//! back-pressure must not be taken for: bounds in bytes beside counts,
//! heartbeats that know when the parent itself held its worker back.

use std::time::Duration;

use actix_webworker::{Event, Limits, Worker, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![bounds::a_worker_held_back_by_a_slow_recipient_is_not_taken_for_lost,]
}

/// A heartbeat counts the time the parent held its worker back as time
/// the worker was heard: a stream left unread for longer than `lost_after`
/// (eight times) is no silence of the worker's. Before, once the reader
/// caught up, the overdue ping and the overdue loss raced the bytes
/// waiting in the socket, and the worker was killed (3 in 20 rounds).
pub fn a_worker_held_back_by_a_slow_recipient_is_not_taken_for_lost() {
    run(async {
        let lost_after = Duration::from_millis(300);
        let (worker, mut events) = Worker::<Test>::builder()
            .entry("test")
            .restart(actix_webworker::RestartPolicy::never())
            .limits(Limits::default().event_window(64))
            .heartbeat(Duration::from_millis(50), lost_after)
            .start_with_events()
            .unwrap();
        const N: u64 = 20_000;
        worker.post(Cmd::Flood(N));
        let mut next = 0;
        let mut pauses = 0;
        while next < N {
            // A recipient that stalls now and then for longer than
            // `lost_after`: the stalls are the scenario, not a wait for
            // something to happen.
            if next % 1_000 == 0 && pauses < 8 {
                pauses += 1;
                tokio::time::sleep(lost_after * 2).await;
            }
            let event = tokio::time::timeout(WAIT, events.next()).await.expect("an event in time");
            match event.expect("the stream goes on").kind {
                Event::Online => {}
                Event::Message(m) => {
                    assert_eq!(m.data, Reply::Seq(next));
                    next += 1;
                }
                other => panic!("after {next} messages and {pauses} pauses: {other:?}"),
            }
        }
        assert_eq!(pauses, 8);
        worker.terminate();
        loop {
            let event = tokio::time::timeout(WAIT, events.next()).await.expect("an event in time");
            match event.expect("the exit comes").kind {
                Event::Exit(status) => {
                    assert!(status.success(), "{status}");
                    break;
                }
                Event::Message(m) => assert_eq!(m.data, Reply::Closing),
                other => panic!("after the flood: {other:?}"),
            }
        }
    });
}
