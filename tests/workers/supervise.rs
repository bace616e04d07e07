//! Supervised restarts driven by the worker's exit.

use std::time::{Duration, Instant};

use actix_webworker::{Event, Join, Restart, RestartPolicy, Terminate, WorkerAddrExt, WorkerError};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        supervise::a_crash_is_restarted_and_the_same_address_works,
        supervise::a_clean_exit_is_not_restarted_on_failure,
        supervise::a_crash_loop_stops_at_the_intensity,
        supervise::backoff_delays_are_at_least_the_configured_ones,
        supervise::messages_sent_while_down_arrive_once_in_order,
        supervise::requests_in_flight_fail_and_are_not_resent,
        supervise::terminate_stops_a_supervised_worker_for_good,
        supervise::fifty_crash_restart_cycles_leak_nothing,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![supervise::cycles_inner,]
}

/// Skips to the next event that `pick` takes; fails on `GaveUp` first.
async fn until<T>(events: &mut Events<Test>, mut pick: impl FnMut(&Event<Test>) -> Option<T>) -> T {
    loop {
        let ev = events.next().await;
        if let Some(t) = pick(&ev) {
            return t;
        }
        if let Event::GaveUp(g) = ev {
            panic!("gave up: {g:?}");
        }
    }
}

pub fn a_crash_is_restarted_and_the_same_address_works() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::OnFailure)).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(first) = events.message().await.data else { panic!() };
        worker.post(Cmd::Exit(3));
        let status =
            until(&mut events, |e| if let Event::Exit(s) = e { Some(*s) } else { None }).await;
        assert_eq!(status.code, Some(3));
        let attempt = until(&mut events, |e| match e {
            Event::Restarting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .await;
        assert_eq!(attempt, 1);
        until(&mut events, |e| matches!(e, Event::Online).then_some(())).await;
        assert_eq!(worker.ask(Sum(vec![40, 2])).await.unwrap(), 42);
        worker.post(Cmd::Pid);
        let Reply::Pid(second) = events.message().await.data else { panic!() };
        assert_ne!(first, second, "a new process answers");
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
    });
}

pub fn a_clean_exit_is_not_restarted_on_failure() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::OnFailure)).start().unwrap();
        worker.post(Cmd::Exit(0));
        // Join resolves only when the worker has stopped for good.
        assert!(worker.send(Join).await.unwrap().success());
        loop {
            match events.next().await {
                Event::Exit(s) => {
                    assert!(s.success());
                    break;
                }
                Event::Restarting { .. } => panic!("a clean exit was restarted"),
                _ => continue,
            }
        }
        let res = worker.send(actix_webworker::Post::new(Cmd::Echo(0))).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Exited(_))), "{res:?}");
    });
}

pub fn a_crash_loop_stops_at_the_intensity() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy = RestartPolicy::default()
            .intensity(3, Duration::from_secs(10))
            .backoff(Duration::from_millis(5), Duration::from_millis(20));
        let worker = builder(rec).entry("crash").restart(policy).start().unwrap();
        let (mut exits, mut restarts) = (0, 0);
        let gave_up = loop {
            match events.next().await {
                Event::Exit(s) => {
                    assert_eq!(s.code, Some(7));
                    exits += 1;
                }
                Event::Restarting { attempt, .. } => {
                    restarts += 1;
                    assert_eq!(attempt, restarts);
                }
                Event::GaveUp(g) => break g,
                _ => continue,
            }
        };
        assert_eq!((exits, restarts), (4, 3));
        assert_eq!(gave_up.exits.len(), 4);
        assert!(gave_up.exits.iter().all(|s| s.code == Some(7)));
        assert!(gave_up.reason.contains("3 restarts"), "{}", gave_up.reason);
        assert_eq!(worker.send(Join).await.unwrap().code, Some(7));
    });
}

pub fn backoff_delays_are_at_least_the_configured_ones() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy = RestartPolicy::default()
            .intensity(2, Duration::from_secs(60))
            .backoff(Duration::from_millis(200), Duration::from_secs(1));
        let worker = builder(rec).entry("crash").restart(policy).start().unwrap();
        let mut exited_at = None;
        let mut delay = None;
        let mut delays = Vec::new();
        loop {
            match events.next().await {
                Event::Exit(_) => exited_at = Some(Instant::now()),
                Event::Restarting { delay: d, .. } => delay = Some(d),
                Event::Online => {
                    if let (Some(d), Some(at)) = (delay.take(), exited_at) {
                        // The new process came no sooner than the backoff.
                        assert!(
                            at.elapsed() >= d,
                            "restarted after {:?}, backoff {d:?}",
                            at.elapsed()
                        );
                        delays.push(d);
                    }
                }
                Event::GaveUp(_) => break,
                _ => {}
            }
        }
        assert_eq!(delays, [Duration::from_millis(200), Duration::from_millis(400)]);
        drop(worker);
    });
}

pub fn messages_sent_while_down_arrive_once_in_order() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let policy =
            fast(Restart::OnFailure).backoff(Duration::from_millis(300), Duration::from_secs(1));
        let worker = builder(rec).restart(policy).start().unwrap();
        worker.post(Cmd::Exit(1));
        until(&mut events, |e| matches!(e, Event::Exit(_)).then_some(())).await;
        // The child is dead and the next one not started: all of these wait.
        for i in 0..1000 {
            worker.post(Cmd::Echo(i));
        }
        let mut next = 0;
        while next < 1000 {
            match events.next().await {
                Event::Message(m) => {
                    assert_eq!(m.data, Reply::Echo(next), "in order, exactly once");
                    next += 1;
                }
                Event::Restarting { .. } | Event::Online => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        worker.send(Terminate::default()).await.unwrap();
        assert!(worker.send(Join).await.unwrap().success());
    });
}

pub fn requests_in_flight_fail_and_are_not_resent() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::OnFailure)).start().unwrap();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!() };
        let asked = worker.ask(Never);
        assert_eq!(worker.ask(Seen).await.unwrap(), 0); // Never is in the worker
        kill(pid, Signal::SIGKILL);
        let res = asked.await;
        assert!(matches!(res, Err(WorkerError::Exited(s)) if s.signal == Some(9)), "{res:?}");
        until(&mut events, |e| matches!(e, Event::Online).then_some(())).await;
        assert_eq!(worker.ask(Seen).await.unwrap(), 0, "a fresh worker, nothing re-sent");
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
    });
}

pub fn terminate_stops_a_supervised_worker_for_good() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::Always)).start().unwrap();
        events.online().await;
        worker.terminate();
        let status = worker.send(Join).await.unwrap();
        assert!(status.success());
        loop {
            match events.next().await {
                Event::Exit(_) => break,
                Event::Restarting { .. } => panic!("restarted after terminate"),
                _ => continue,
            }
        }
    });
}

/// Run alone by `fifty_crash_restart_cycles_leak_nothing`.
pub fn cycles_inner() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).restart(fast(Restart::OnFailure)).start().unwrap();
        events.online().await;
        let fds = open_fds();
        for _ in 0..50 {
            worker.post(Cmd::Exit(1));
            until(&mut events, |e| matches!(e, Event::Online).then_some(())).await;
        }
        let alive = children().into_iter().filter(|(_, state)| *state != 'Z').count();
        assert_eq!(alive, 1, "one live worker: {:?}", children());
        worker.terminate();
        assert!(worker.send(Join).await.unwrap().success());
        let settled =
            within(Duration::from_millis(50), || children().is_empty() && open_fds() <= fds).await;
        assert!(settled, "children {:?}, fds {fds} -> {}", children(), open_fds());
    });
}

pub fn fifty_crash_restart_cycles_leak_nothing() {
    isolated("supervise::cycles_inner");
}
