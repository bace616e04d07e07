//! Load and back-pressure: slow workers, many workers, restart storms, and
//! deaths in the middle of a large message.

use std::time::Duration;

use actix::Addr;
use actix_webworker::{
    Event, Join, Limits, Post, Restart, RestartPolicy, WhenFull, Worker, WorkerAddrExt, WorkerError,
};
use futures_util::future::join_all;

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        load::a_full_queue_refuses_when_told_to_fail,
        load::a_full_queue_makes_send_wait_and_loses_nothing,
        load::a_deep_mailbox_lets_the_writer_drain_the_queue,
        load::sixty_four_workers_ten_thousand_requests_each,
        load::a_worker_dying_while_sending_16_mib_is_a_typed_error,
        load::a_worker_dying_while_receiving_16_mib_is_a_typed_error,
        load::a_thousand_crash_restarts_leave_nothing_behind,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![load::storm_inner,]
}

const CHUNK: usize = 64 << 10;

/// A worker stuck in a handler, so nothing it is sent is read.
async fn stuck(limits: Limits) -> (Addr<Worker<Test>>, Events<Test>) {
    let (rec, mut events) = events::<Test>();
    let worker = builder(rec).limits(limits).start().unwrap();
    worker.post(Cmd::Echo(0));
    assert_eq!(events.message().await.data, Reply::Echo(0));
    worker.post(Cmd::Block(1500));
    (worker, events)
}

pub fn a_full_queue_refuses_when_told_to_fail() {
    run(async {
        let limits = Limits::default().max_queued_messages(8).when_full(WhenFull::Fail);
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .limits(limits)
            .grace_period(Duration::from_millis(100))
            .kill_delay(Duration::from_millis(100))
            .start()
            .unwrap();
        // From now on the worker reads nothing.
        freeze(&worker, &mut events).await;
        let mut refused = 0;
        for _ in 0..200 {
            match worker.send(Post::new(Cmd::Blob(vec![0; CHUNK]))).await.unwrap() {
                Ok(()) => {}
                Err(WorkerError::QueueFull { limit: 8 }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // Accepted: the queue's 8, the writer's batch being written (at most
        // 8), and what the transport holds: tungstenite's write buffer (one
        // message of 64 KiB), the kernel's socket buffer (~200 KiB: 4 or 5).
        let accepted = 200 - refused;
        println!("FAIL accepted={accepted} refused={refused}");
        assert!(accepted <= 8 + 8 + 1 + 5, "{accepted} accepted, {refused} refused");
        worker.terminate();
        // Every accepted post is counted: never written, or written and
        // never read by the frozen worker.
        let (mut counted, mut exited) = (0, false);
        while !exited || counted < accepted {
            match events.next().await {
                Event::MaybeLost(n) | Event::Undelivered(n) => counted += n,
                Event::Exit(status) => {
                    assert_eq!(status.signal, Some(libc::SIGKILL));
                    exited = true;
                }
                _ => {}
            }
        }
        assert_eq!(counted, accepted);
    });
}

pub fn a_full_queue_makes_send_wait_and_loses_nothing() {
    run(async {
        let limits = Limits::default().max_queued_messages(8);
        let (worker, mut events) = stuck(limits).await;
        // Each send resolves only once its message is queued: the sender is
        // held back, and the queue never holds more than 8.
        for i in 1..=200 {
            worker.send(Post::new(Cmd::Echo(i))).await.unwrap().unwrap();
            worker.send(Post::new(Cmd::Blob(vec![0; CHUNK]))).await.unwrap().unwrap();
        }
        for i in 1..=200 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
            assert!(matches!(events.message().await.data, Reply::Blob(b) if b.len() == CHUNK));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// 5,000 posts sent with `do_send` before anything is awaited reach the
/// actor's mailbox at once, and actix hands them to the actor in one go.
/// The actor stops every 512 for the writer to take what it queued (see
/// `parent/turn.rs`), so a queue bound of 1,000 that fails when full
/// refuses none of them. Before, all 5,000 went at the outbox before the
/// writer ran: 1,000 were queued, 4,000 refused. Their bytes (~75 KB) fit
/// the socket's buffer, so the writer never waits on the worker.
pub fn a_deep_mailbox_lets_the_writer_drain_the_queue() {
    run(async {
        let limits = Limits::default().max_queued_messages(1_000).when_full(WhenFull::Fail);
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).limits(limits).start().unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        for i in 1..=5_000 {
            worker.post(Cmd::Echo(i));
        }
        // A refusal is an event of its own: `message` fails on it.
        for i in 1..=5_000 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn sixty_four_workers_ten_thousand_requests_each() {
    run(async {
        let workers: Vec<_> = (0..64).map(|_| start()).collect();
        let rounds = workers.iter().enumerate().map(|(w, (worker, _))| async move {
            let asks =
                (0..10_000u64).map(|i| worker.ask(SlowEcho { n: i * 64 + w as u64, delay_ms: 0 }));
            for (i, answer) in join_all(asks).await.into_iter().enumerate() {
                assert_eq!(
                    answer.unwrap(),
                    i as u64 * 64 + w as u64,
                    "answer matched to its caller"
                );
            }
        });
        tokio::time::timeout(Duration::from_secs(300), join_all(rounds))
            .await
            .expect("640,000 requests within 5 minutes: no deadlock");
        for (worker, mut events) in workers {
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}

pub fn a_worker_dying_while_sending_16_mib_is_a_typed_error() {
    run(async {
        // The worker side is a raw one: it writes the first megabyte of a
        // 16 MiB message and dies, every time.
        let (rec, mut events) = events::<Test>();
        let _worker =
            builder(rec).limits(Limits::default()).by_exec().entry("raw-half-16mib").start().unwrap();
        let mut cut_off = false;
        loop {
            match events.next().await {
                Event::WireError(actix_webworker::WireError::CutOff) => cut_off = true,
                Event::Exit(s) => {
                    assert_eq!(s.code, Some(1));
                    break;
                }
                Event::Message(m) => panic!("a half-written message arrived: {:?}", m.fds),
                _ => {}
            }
        }
        assert!(cut_off, "the cut-off message was reported");
    });
}

pub fn a_worker_dying_while_receiving_16_mib_is_a_typed_error() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        let pending = worker.ask(Never);
        worker.post(Cmd::Blob(vec![1; 16 << 20]));
        kill(pid, Signal::SIGKILL);
        assert_eq!(events.exit().await.signal, Some(9));
        assert!(matches!(pending.await, Err(WorkerError::Exited(_))));
        let res = worker.send(Post::new(Cmd::Echo(0))).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Exited(_))));
    });
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Run alone by `a_thousand_crash_restarts_leave_nothing_behind`.
pub fn storm_inner() {
    run(async {
        let policy = RestartPolicy::default()
            .restart(Restart::OnFailure)
            .intensity(1000, Duration::from_secs(3600))
            .backoff(Duration::ZERO, Duration::ZERO);
        // A first short storm, so that what grows once (pools, tables) is in
        // the baseline.
        let (rec, mut warm_up) = events::<Test>();
        let short = policy.intensity(20, Duration::from_secs(3600));
        let worker = builder(rec).entry("crash").restart(short).start().unwrap();
        let _ = worker.send(Join).await;
        drop(worker);
        while !matches!(warm_up.next().await, Event::GaveUp(_)) {}
        let (fds, rss) = (open_fds(), rss_kib());

        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("crash").restart(policy).start().unwrap();
        let mut exits = 0;
        let gave_up = loop {
            match events.next().await {
                Event::Exit(_) => exits += 1,
                Event::GaveUp(g) => break g,
                _ => {}
            }
        };
        assert_eq!(exits, 1001);
        assert_eq!(gave_up.exits.len(), 1001);
        assert_eq!(worker.send(Join).await.unwrap().code, Some(7));
        drop(worker);
        let settled =
            within(Duration::from_millis(50), || children().is_empty() && open_fds() <= fds).await;
        assert!(settled, "children {:?}, fds {fds} -> {}", children(), open_fds());
        let after = rss_kib();
        println!("STORM rss_before_kib={rss} rss_after_kib={after} exits={exits}");
        assert!(after <= rss + rss / 10, "memory grew from {rss} KiB to {after} KiB");
    });
}

pub fn a_thousand_crash_restarts_leave_nothing_behind() {
    isolated("load::storm_inner");
}
