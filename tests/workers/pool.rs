//! Pools of real worker processes: routing, member crashes, the queue's
//! bound, broadcast, terminate, recycling, scaling, cancellation, stats.

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{
    Ask, Broadcast, Event, Join, PoolBuilder, PoolEvent, PoolStats, Recycle, RestartPolicy, Stats,
    WhenFull, WireError, WorkerAddrExt, WorkerError, WorkerPool,
};
use futures_util::future::join_all;
use libtest_mimic::Trial;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::common::*;
use crate::errors::Recorder;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        pool::asks_spread_over_the_members_and_all_are_answered,
        pool::the_least_loaded_member_gets_the_request_and_the_rest_wait,
        pool::a_member_killed_fails_only_its_requests_and_the_queue_flows,
        pool::broadcast_reaches_every_member,
        pool::terminate_closes_every_member_gracefully,
        pool::join_gives_the_status_of_a_member_that_fails_as_it_closes,
        pool::members_are_recycled_after_max_requests,
        pool::a_recycled_member_finishes_what_it_has_after_its_replacement_started,
        pool::the_pool_grows_while_requests_wait_and_shrinks_when_idle,
        pool::a_waiting_request_that_times_out_or_is_dropped_leaves_the_queue,
        pool::a_running_request_whose_caller_goes_is_cancelled_in_its_member,
        pool::members_that_give_up_are_replaced_until_the_pool_gives_up,
        pool::twenty_thousand_timed_asks_waiting_share_one_timer,
        pool::timed_asks_waiting_time_out_in_deadline_order_and_leave_the_queue,
        pool::a_full_queue_holds_two_thousand_callers_back_at_its_bound,
        pool::twenty_thousand_callers_that_go_leave_nothing_queued,
        pool::an_unknown_entry_stops_the_pool_at_once_naming_it,
        pool::without_a_recipient_members_errors_and_exits_are_logged,
        pool::asks_past_a_members_full_queue_wait_there_and_all_are_answered,
        pool::an_ask_made_after_a_broadcast_resolved_comes_after_it,
        pool::dropping_the_last_address_closes_the_members_and_resolves_every_ask,
    ]
}

/// A pool of the standard test worker, its events read by the test.
fn pool() -> (PoolBuilder<Test>, UnboundedReceiver<PoolEvent<Test>>) {
    let (recipient, rx) = pool_events();
    let builder = WorkerPool::<Test>::builder()
        .entry("test")
        .env("RUST_BACKTRACE", "0")
        .restart(RestartPolicy::never())
        .events(recipient);
    (builder, rx)
}

async fn stats(pool: &Addr<WorkerPool<Test>>) -> PoolStats {
    pool.send(Stats).await.expect("the pool answers")
}

/// In flight per member, smallest first.
async fn loads(pool: &Addr<WorkerPool<Test>>) -> Vec<usize> {
    let mut loads: Vec<usize> = stats(pool).await.members.iter().map(|m| m.in_flight).collect();
    loads.sort_unstable();
    loads
}

pub fn asks_spread_over_the_members_and_all_are_answered() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(2).start().unwrap();
        // Sent before any member is up: they wait in the pool's queue.
        let sums = join_all((0..2000u64).map(|i| pool.ask(Sum(vec![i, 1])))).await;
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), i as u64 + 1);
        }
        // The first member up may have answered them all (on a loaded
        // machine the second can start seconds later): from when both
        // are up, the requests go to both.
        pool_online(&mut rx, 2).await;
        let pids: HashSet<u32> = join_all((0..200).map(|_| pool.ask(WhichPid)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(pids.len(), 2, "both members answered");
        let stats = stats(&pool).await;
        assert_eq!(stats.members.len(), 2);
        assert_eq!(stats.completed, 2200);
        assert_eq!((stats.failed, stats.queued), (0, 0));
        assert!(stats.members.iter().all(|m| m.completed > 0), "{stats:?}");
        assert!(stats.rtt_p50 > Duration::ZERO && stats.rtt_p99 >= stats.rtt_p50);
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
        drop(rx.try_recv());
    });
}

pub fn the_least_loaded_member_gets_the_request_and_the_rest_wait() {
    run(async {
        let (builder, mut rx) = pool();
        let pool =
            builder.size(2).max_in_flight_per_worker(2).queue(1, WhenFull::Fail).start().unwrap();
        pool_online(&mut rx, 2).await;
        // Never answered: each holds its member's place.
        let mut held = Vec::new();
        held.push(pool.ask(Never));
        held.push(pool.ask(Never));
        held.push(pool.ask(Never));
        // The sends above are queued in order before this one is handled.
        assert_eq!(loads(&pool).await, [1, 2]);
        held.push(pool.ask(Never));
        assert_eq!(loads(&pool).await, [2, 2]);
        // Every member is full: one may wait, the next is refused.
        let waiting = pool.ask(Sum(vec![20, 22]));
        let refused = pool.ask(Sum(vec![1])).await;
        assert!(matches!(refused, Err(WorkerError::QueueFull { limit: 1 })), "{refused:?}");
        assert_eq!(stats(&pool).await.queued, 1);
        // A place frees (the member goes): the waiting one goes there.
        let pid = stats(&pool).await.members[0].pid;
        kill(pid, Signal::SIGKILL);
        assert_eq!(waiting.await.unwrap(), 42);
        pool.terminate();
        pool.send(Join).await.unwrap();
        for ask in held {
            assert!(ask.await.is_err());
        }
    });
}

pub fn a_member_killed_fails_only_its_requests_and_the_queue_flows() {
    run(async {
        let (builder, mut rx) = pool();
        let builder = builder.restart(fast(actix_webworker::Restart::OnFailure));
        let pool = builder.size(2).max_in_flight_per_worker(4).start().unwrap();
        pool_online(&mut rx, 2).await;
        let stuck: Vec<_> = (0..4).map(|_| pool.ask(Never)).collect();
        let stats_now = stats(&pool).await;
        let busy = stats_now.members.iter().find(|m| m.in_flight > 0).unwrap();
        let (busy_index, busy_pid) = (busy.index, busy.pid);
        assert!(stats_now.members.iter().all(|m| m.in_flight == 2), "{stats_now:?}");
        // Work keeps flowing while one member dies and comes back.
        let flowing = join_all((0..500u64).map(|i| pool.ask(Sum(vec![i]))));
        kill(busy_pid, Signal::SIGKILL);
        let sums = flowing.await;
        for (i, sum) in sums.into_iter().enumerate() {
            // A request in flight on the killed member fails; none other.
            match sum {
                Ok(n) => assert_eq!(n, i as u64),
                Err(WorkerError::Exited(status)) => assert_eq!(status.signal, Some(9)),
                Err(e) => panic!("{e:?}"),
            }
        }
        // The member restarts under its own policy, at the same index.
        pool_until(&mut rx, |ev| {
            matches!(ev, PoolEvent::Member { index, event }
                if *index == busy_index && matches!(event.kind, Event::Online))
        })
        .await;
        assert_eq!(pool.ask(Sum(vec![2, 3])).await.unwrap(), 5);
        pool.terminate();
        pool.send(Join).await.unwrap();
        // Of the four held, the killed member's two failed with its kill,
        // the other two with the graceful exit.
        let held = join_all(stuck).await;
        let killed = |r: &Result<(), WorkerError>| matches!(r, Err(WorkerError::Exited(s)) if s.signal == Some(9));
        assert_eq!(held.iter().filter(|r| killed(r)).count(), 2, "{held:?}");
        assert!(held.iter().all(|r| r.is_err()), "{held:?}");
    });
}

pub fn broadcast_reaches_every_member() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(3).start().unwrap();
        pool.send(Broadcast(Cmd::Pid)).await.unwrap().unwrap();
        let mut seen = HashSet::new();
        while seen.len() < 3 {
            let ev = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Member { event, .. } if matches!(event.kind, Event::Message(_))))
                .await;
            let PoolEvent::Member { index, event } = ev else { unreachable!() };
            let Event::Message(msg) = event.kind else { unreachable!() };
            assert_eq!(msg.data, Reply::Pid(event.pid));
            assert!(seen.insert(index), "member {index} twice");
        }
        // One shared buffer to every member: each gets its own descriptor
        // of the same sealed memfd, and sends it back mapped.
        let shared = actix_webworker::SharedBytes::copy_from_slice(&[5u8; 100_000]).unwrap();
        pool.send(Broadcast(Cmd::Shared(vec![shared.clone()]))).await.unwrap().unwrap();
        let mut back = HashSet::new();
        while back.len() < 3 {
            let ev = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Member { event, .. } if matches!(event.kind, Event::Message(_))))
                .await;
            let PoolEvent::Member { index, event } = ev else { unreachable!() };
            let Event::Message(msg) = event.kind else { unreachable!() };
            let Reply::Shared(bufs) = msg.data else { panic!("expected Shared") };
            assert_eq!(bufs[0], shared);
            assert!(bufs[0].is_mapped());
            assert!(back.insert(index), "member {index} twice");
        }
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

pub fn terminate_closes_every_member_gracefully() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(2).start().unwrap();
        pool_online(&mut rx, 2).await;
        pool.terminate();
        let status = pool.send(Join).await.unwrap();
        assert!(status.success(), "{status}");
        // Both members' on_close ran (each posts `Closing`), and both
        // exited with 0.
        let (mut closing, mut exits) = (0, 0);
        while let Ok(ev) = rx.try_recv() {
            if let PoolEvent::Member { event, .. } = ev {
                match event.kind {
                    Event::Message(msg) if msg.data == Reply::Closing => closing += 1,
                    Event::Exit(status) if status.success() => exits += 1,
                    _ => {}
                }
            }
        }
        assert_eq!((closing, exits), (2, 2));
        let after = pool.ask(Sum(vec![1])).await;
        assert!(matches!(after, Err(WorkerError::Exited(_))), "{after:?}");
    });
}

/// README, Pools › Shutdown: "`Join` resolves once all have exited, with
/// the first failing member's status". Of two members, one exits with
/// code 5 from its `on_close` as `terminate()` closes it (no restarts):
/// the pool's `Join` says code 5; the other member exited 0.
pub fn join_gives_the_status_of_a_member_that_fails_as_it_closes() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(2).start().unwrap();
        pool_online(&mut rx, 2).await;
        // A post goes to one member: it answers, and that one fails.
        pool.send(actix_webworker::Post::new(Cmd::ExitInOnClose(5))).await.unwrap().unwrap();
        let told = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Member { event, .. } if matches!(&event.kind, Event::Message(m) if m.data == Reply::Count(0))))
            .await;
        let PoolEvent::Member { index: failing, .. } = told else { unreachable!() };
        pool.terminate();
        let status = pool.send(Join).await.unwrap();
        let mut exits = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let PoolEvent::Member { index, event } = ev {
                if let Event::Exit(status) = event.kind {
                    exits.push((index, status.code, status.signal));
                }
            }
        }
        exits.sort();
        println!("members' exits: {exits:?}; the pool's status: {status}");
        assert_eq!((status.code, status.signal), (Some(5), None), "{status}");
        assert!(!status.success());
        assert_eq!(exits.len(), 2, "{exits:?}");
        for (index, code, signal) in exits {
            let want = if index == failing { Some(5) } else { Some(0) };
            assert_eq!((code, signal), (want, None), "member {index}");
        }
    });
}

pub fn members_are_recycled_after_max_requests() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(1).max_requests(5).start().unwrap();
        let mut pids = Vec::new();
        for _ in 0..12 {
            pids.push(pool.ask(WhichPid).await.unwrap());
        }
        assert!(pids[..5].iter().all(|&p| p == pids[0]), "{pids:?}");
        assert!(pids[5..10].iter().all(|&p| p == pids[5]), "{pids:?}");
        assert!(pids[10..].iter().all(|&p| p == pids[10]), "{pids:?}");
        assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");
        let recycled = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Recycled { .. })).await;
        assert!(matches!(recycled, PoolEvent::Recycled { index: 0, reason: Recycle::Requests(5) }));
        // The old one closes gracefully once its requests are done.
        pool_until(&mut rx, |ev| {
            matches!(ev, PoolEvent::Member { index: 0, event } if matches!(event.kind, Event::Exit(s) if s.success()))
        })
        .await;
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

/// README, Pools: a recycled member's "replacement starts first, it
/// finishes what it has, then closes gracefully (`on_close` runs)". A
/// member recycled after 3 requests, all 3 in flight at once: the
/// replacement is started before the old member says anything of its
/// end; all 3 are answered by the old one; it posts `Closing` (its
/// `on_close`) and exits 0; the next request goes to the replacement.
/// Then `max_rss(1)`: every member is over it, recycled as `Rss`.
pub fn a_recycled_member_finishes_what_it_has_after_its_replacement_started() {
    run(async {
        let (builder, mut rx) = pool();
        let pool =
            builder.size(1).max_in_flight_per_worker(4).max_requests(3).start().unwrap();
        pool_online(&mut rx, 1).await;
        let old = pool.ask(WhichPid).await.unwrap();
        let slow: Vec<_> = (0..2)
            .map(|n| actix::spawn(pool.ask(SlowEcho { n, delay_ms: 300 })))
            .collect();
        // Seen in order: recycled, its replacement started, and only then
        // the old member's Closing and exit.
        let mut seen = Vec::new();
        loop {
            let ev = pool_until(&mut rx, |_| true).await;
            match ev {
                PoolEvent::Recycled { index: 0, reason: Recycle::Requests(3) } => {
                    seen.push("recycled")
                }
                PoolEvent::Started { index, .. } if index != 0 => seen.push("started"),
                PoolEvent::Member { index: 0, event } => match event.kind {
                    Event::Message(m) if m.data == Reply::Closing => seen.push("closing"),
                    Event::Exit(s) => {
                        assert!(s.success(), "{s}");
                        seen.push("exit");
                        break;
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        assert_eq!(seen, ["recycled", "started", "closing", "exit"]);
        for (n, answered) in slow.into_iter().enumerate() {
            assert_eq!(answered.await.unwrap().unwrap(), n as u64, "answered by the old member");
        }
        assert_ne!(pool.ask(WhichPid).await.unwrap(), old, "the replacement answers");
        pool.terminate();
        pool.send(Join).await.unwrap();

        let (builder, mut rx) = self::pool();
        let heavy = builder.size(1).max_rss(1).start().unwrap();
        let recycled = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Recycled { .. })).await;
        assert!(
            matches!(recycled, PoolEvent::Recycled { index: 0, reason: Recycle::Rss(rss) } if rss > 1),
            "{recycled:?}"
        );
        heavy.terminate();
        heavy.send(Join).await.unwrap();
    });
}

pub fn the_pool_grows_while_requests_wait_and_shrinks_when_idle() {
    run(async {
        let (builder, mut rx) = pool();
        let builder = builder.min(1).max(2).max_in_flight_per_worker(1);
        let pool = builder.idle_timeout(Duration::from_millis(500)).start().unwrap();
        pool_online(&mut rx, 1).await;
        let held = pool.ask(Never);
        // The only member is full: this one waits, and the pool grows.
        assert_eq!(pool.ask(Sum(vec![40, 2])).await.unwrap(), 42);
        let mut sizes = Vec::new();
        while sizes.last() != Some(&1) {
            if let PoolEvent::Scaled { members } =
                pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Scaled { .. })).await
            {
                sizes.push(members);
            }
        }
        assert_eq!(sizes, [2, 1]);
        // The busy member stayed.
        assert_eq!(loads(&pool).await, [1]);
        pool.terminate();
        pool.send(Join).await.unwrap();
        assert!(held.await.is_err());
    });
}

pub fn a_waiting_request_that_times_out_or_is_dropped_leaves_the_queue() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(1).max_in_flight_per_worker(1).start().unwrap();
        pool_online(&mut rx, 1).await;
        let held = pool.ask(Never);
        let limit = Duration::from_millis(100);
        let timed_out = pool.send(Ask::new(Sum(vec![1])).timeout(limit)).await.unwrap();
        assert!(matches!(timed_out, Err(WorkerError::Timeout(l)) if l == limit), "{timed_out:?}");
        drop(pool.send(Ask::new(Sum(vec![2]))));
        assert_eq!(stats(&pool).await.queued, 0);
        pool.terminate();
        pool.send(Join).await.unwrap();
        assert!(held.await.is_err());
    });
}

pub fn a_running_request_whose_caller_goes_is_cancelled_in_its_member() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(1).start().unwrap();
        pool_online(&mut rx, 1).await;
        let asked = pool.send(Ask::new(Hold(7)));
        // Running in the member: a request to the same member, after it,
        // has been answered.
        assert_eq!(pool.ask(Sum(vec![1])).await.unwrap(), 1);
        assert_eq!(loads(&pool).await, [1]);
        // README, Pools: `PoolStats` counts busy and idle members.
        let busy = stats(&pool).await;
        assert_eq!((busy.busy, busy.idle), (1, 0), "{busy:?}");
        drop(asked);
        pool_until(&mut rx, |ev| {
            matches!(ev, PoolEvent::Member { event, .. }
                if matches!(&event.kind, Event::Message(m) if m.data == Reply::Dropped(7)))
        })
        .await;
        // Its place is free again.
        assert_eq!(pool.ask(Sum(vec![4, 5])).await.unwrap(), 9);
        assert_eq!(loads(&pool).await, [0]);
        let stats = stats(&pool).await;
        assert_eq!((stats.completed, stats.failed), (2, 1), "{stats:?}");
        assert_eq!((stats.busy, stats.idle), (0, 1), "{stats:?}");
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

pub fn members_that_give_up_are_replaced_until_the_pool_gives_up() {
    run(async {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("crash")
            .restart(RestartPolicy::never())
            .replacements(2, Duration::from_secs(60))
            .events(recipient)
            .size(1)
            .start()
            .unwrap();
        let gave_up = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::GaveUp(_))).await;
        let PoolEvent::GaveUp(g) = gave_up else { unreachable!() };
        assert_eq!(g.exits.len(), 3, "{g:?}");
        assert!(g.exits.iter().all(|s| s.code == Some(7)), "{g:?}");
        let status = pool.send(Join).await.unwrap();
        assert!(!status.success());
        let after = pool.ask(Sum(vec![1])).await;
        assert!(after.is_err(), "{after:?}");
    });
}

/// Stops a member's process (SIGSTOP) and returns once it is stopped: it
/// reads nothing until SIGCONT.
fn freeze_pid(pid: u32) {
    kill(pid, Signal::SIGSTOP);
    // SAFETY: waitid into a local; WNOWAIT leaves the child's state for its
    // reaper, and WSTOPPED waits only for the stop.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waiting for the member to stop: {}", std::io::Error::last_os_error());
}

fn thaw_pid(pid: u32) {
    kill(pid, Signal::SIGCONT);
}

/// Sends `n` asks of `Sum([i])` at once, each with `timeout` if given, while
/// both members of `pool` (one in flight each) are frozen; returns the
/// pool's figures with all of them sent, and their answers once thawed.
async fn flood_while_frozen(
    pool: &Addr<WorkerPool<Test>>,
    pids: &[u32],
    n: u64,
    timeout: Option<Duration>,
) -> (PoolStats, Vec<Result<u64, WorkerError>>, Duration) {
    pids.iter().for_each(|&pid| freeze_pid(pid));
    let started = std::time::Instant::now();
    let asks: Vec<_> = (0..n)
        .map(|i| {
            let ask = Ask::new(Sum(vec![i]));
            let ask = match timeout {
                Some(limit) => ask.timeout(limit),
                None => ask,
            };
            let sent = pool.send(ask);
            async move { sent.await.expect("the pool answers") }
        })
        .collect();
    // Handled after every ask above (one sender, in order).
    let during = stats(pool).await;
    println!(
        "POOL_FLOOD {n} asks (timeout {timeout:?}) sent: queued {} deadlines {} timers {}",
        during.queued, during.deadlines, during.timers
    );
    pids.iter().for_each(|&pid| thaw_pid(pid));
    let answers = tokio::time::timeout(WAIT, join_all(asks)).await.expect("answered in time");
    (during, answers, started.elapsed())
}

/// Finding 6 of the reliability review: each timed ask waiting in the
/// queue added a timer to the pool's context, polled on every wake-up and
/// kept until it fired (20,000 asks: 0.48 s untimed, 8.26 s timed).
/// Checked by count, not time: one timer however many wait, and no
/// deadline entry left once they have gone.
pub fn twenty_thousand_timed_asks_waiting_share_one_timer() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(2).max_in_flight_per_worker(1).start().unwrap();
        pool_online(&mut rx, 2).await;
        let pids: Vec<u32> = stats(&pool).await.members.iter().map(|m| m.pid).collect();
        const N: u64 = 20_000;
        let limit = Duration::from_secs(120);
        let (during, answers, timed) = flood_while_frozen(&pool, &pids, N, Some(limit)).await;
        // Two in flight (one per member, frozen), the rest wait, timed.
        assert_eq!(during.queued, N as usize - 2, "{during:?}");
        assert_eq!(during.deadlines, during.queued, "{during:?}");
        assert_eq!(during.timers, 1, "one timer for the whole queue: {during:?}");
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), i as u64, "ask {i}: none times out");
        }
        let after = stats(&pool).await;
        assert_eq!((after.queued, after.deadlines, after.timers), (0, 0, 0), "{after:?}");
        // The same flood untimed, for the figure: no timer left behind
        // slows it.
        let (_, answers, untimed) = flood_while_frozen(&pool, &pids, N, None).await;
        assert!(answers.iter().all(Result::is_ok));
        println!(
            "POOL_TIMED {N} timed asks waiting: timers {} deadlines {} during; {:?} timed, {:?} untimed after",
            during.timers, during.deadlines, timed, untimed
        );
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
    });
}

/// A timed ask that waits in the queue still fails with its own timeout
/// where it waits, and leaves the queue then, whatever order the deadlines
/// come in; an untimed one beside them stays.
pub fn timed_asks_waiting_time_out_in_deadline_order_and_leave_the_queue() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(1).max_in_flight_per_worker(1).start().unwrap();
        pool_online(&mut rx, 1).await;
        let held = pool.ask(Never);
        let ms = Duration::from_millis;
        let untimed = pool.send(Ask::new(Sum(vec![5])));
        let (tx, mut done) = unbounded_channel();
        // Asked late first: the timer is armed again for each earlier one.
        for limit in [ms(600), ms(200), ms(400)] {
            let sent = pool.send(Ask::new(Sum(vec![1])).timeout(limit));
            let tx = tx.clone();
            actix_rt::spawn(async move {
                let _ = tx.send((limit, sent.await.unwrap()));
            });
        }
        let during = stats(&pool).await;
        assert_eq!((during.queued, during.deadlines, during.timers), (4, 3, 1), "{during:?}");
        let mut order = Vec::new();
        for _ in 0..3 {
            let (limit, answer) =
                tokio::time::timeout(WAIT, done.recv()).await.expect("timed out in time").unwrap();
            assert!(matches!(answer, Err(WorkerError::Timeout(l)) if l == limit), "{answer:?}");
            order.push(limit);
        }
        assert_eq!(order, [ms(200), ms(400), ms(600)]);
        // Gone from the queue and from the deadlines; no timer armed.
        let after = stats(&pool).await;
        assert_eq!((after.queued, after.deadlines, after.timers), (1, 0, 0), "{after:?}");
        pool.terminate();
        pool.send(Join).await.unwrap();
        assert!(matches!(untimed.await.unwrap(), Err(WorkerError::Terminating)));
        assert!(held.await.is_err());
    });
}

/// Finding 10 of the reliability review: under `queue(10, WhenFull::Wait)`
/// every ask was queued (2,000 waiting callers, depth 2,001). Now callers
/// of `ask` beyond the bound are held back, their requests in their own
/// futures; the queue, as `Stats` sees it (it sweeps nothing), never holds
/// more than the bound.
pub fn a_full_queue_holds_two_thousand_callers_back_at_its_bound() {
    run(async {
        let (builder, mut rx) = pool();
        let builder = builder.size(1).max_in_flight_per_worker(1);
        let pool = builder.queue(10, WhenFull::Wait).start().unwrap();
        pool_online(&mut rx, 1).await;
        let pid = stats(&pool).await.members[0].pid;
        freeze_pid(pid);
        const N: u64 = 2_000;
        let asks: Vec<_> = (0..N).map(|i| pool.ask(Sum(vec![i, 1]))).collect();
        let all = actix_rt::spawn(join_all(asks));
        // Handled after every first attempt above (one sender, in order).
        let first = stats(&pool).await;
        assert_eq!(first.members[0].in_flight, 1, "{first:?}");
        assert_eq!(first.queued, 10, "{first:?}");
        assert_eq!(first.waiting, N as usize - 11, "{first:?}");
        thaw_pid(pid);
        let (mut most, mut looks) = (0, 0);
        while !all.is_finished() {
            let now = stats(&pool).await;
            most = most.max(now.queued);
            looks += 1;
            assert!(now.queued <= 10, "{now:?}");
            tokio::task::yield_now().await;
        }
        let sums = all.await.unwrap();
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), i as u64 + 1);
        }
        let after = stats(&pool).await;
        assert_eq!((after.queued, after.waiting), (0, 0), "{after:?}");
        println!(
            "POOL_BOUND queue(10, Wait), {N} callers: queued {} held back {} at first; \
             at most {most} queued in {looks} looks while they drained",
            first.queued, first.waiting
        );
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
    });
}

/// Finding 10, the other half: 20,000 requests of 16 KiB whose callers
/// went stayed queued (+16 KiB each) until a `Stats` swept them, and the
/// test that said they left looked through `Stats`. Here `Stats` sweeps
/// nothing: the queue is seen to hold only the callers still there.
pub fn twenty_thousand_callers_that_go_leave_nothing_queued() {
    run(async {
        let (builder, mut rx) = pool();
        let builder = builder.size(1).max_in_flight_per_worker(1);
        let pool = builder.queue(100, WhenFull::Wait).start().unwrap();
        pool_online(&mut rx, 1).await;
        let pid = stats(&pool).await.members[0].pid;
        freeze_pid(pid);
        // In flight, its caller here: no answer frees a place meanwhile, so
        // nothing reaches the front of the queue.
        let held = pool.send(Ask::new(Never));
        let ballast = || Sum(vec![0; 2048]); // 16 KiB each
                                             // 10,000 plain sends (queued, beyond the bound), 10,000 through
                                             // `ask` (held back, their requests in their futures).
        let sent: Vec<_> = (0..10_000).map(|_| pool.send(Ask::new(ballast()))).collect();
        let asked: Vec<_> = (0..10_000).map(|_| pool.ask(ballast())).collect();
        let taken = stats(&pool).await;
        assert_eq!((taken.queued, taken.waiting), (10_000, 10_000), "{taken:?}");
        // 50 callers stay.
        let staying: Vec<_> = (0..50u64).map(|i| pool.ask(Sum(vec![i, 1]))).collect();
        let staying = actix_rt::spawn(join_all(staying));
        // All the others go at once.
        drop((sent, asked));
        // Nothing sweeps on our side: the pool finds them gone itself.
        let (mut looks, since) = (0, std::time::Instant::now());
        let settled = loop {
            let now = stats(&pool).await;
            looks += 1;
            if (now.queued, now.waiting) == (50, 0) {
                break now;
            }
            assert!(since.elapsed() < WAIT, "never settled: {now:?}");
            tokio::task::yield_now().await;
        };
        thaw_pid(pid);
        // Its caller goes too: cancelled in the member, which takes the rest.
        drop(held);
        let sums = tokio::time::timeout(WAIT, staying).await.expect("answered in time").unwrap();
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), i as u64 + 1);
        }
        println!(
            "POOL_GONE 20,000 callers of 16 KiB gone: queued {} held back {} before; \
             {} queued, {} held back once the pool looked ({looks} looks, {:?}); \
             the 50 that stayed answered",
            taken.queued,
            taken.waiting,
            settled.queued,
            settled.waiting,
            since.elapsed()
        );
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
    });
}

/// A failure certain to meet every member (here, an entry nobody has) stops
/// the pool at once: no replacements, and what waits, or comes after, is
/// refused with that cause, as one worker with the same typo is.
pub fn an_unknown_entry_stops_the_pool_at_once_naming_it() {
    run(async {
        let (builder, mut rx) = pool();
        // A pool that would replace its members many times over.
        let replacements = builder.entry("no-such-entry").size(4).replacements(100, WAIT);
        let pool = replacements.start();
        let pool = pool.unwrap();
        let waiting = join_all((0..50u64).map(|i| pool.ask(Sum(vec![i]))));
        let waiting = tokio::time::timeout(WAIT, waiting).await.expect("refused in time");
        let unknown = |e: &WorkerError| {
            matches!(e, WorkerError::Wire(WireError::UnknownEntry { entry, .. }) if entry == "no-such-entry")
        };
        for answer in waiting {
            assert!(answer.as_ref().is_err_and(unknown), "{answer:?}");
        }
        let PoolEvent::GaveUp(gave_up) = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::GaveUp(_))).await
        else {
            unreachable!()
        };
        assert!(matches!(gave_up.cause, Some(WireError::UnknownEntry { .. })), "{gave_up:?}");
        assert!(gave_up.reason.contains("no-such-entry"), "{}", gave_up.reason);
        let after = pool.ask(Sum(vec![1])).await;
        assert!(after.as_ref().is_err_and(unknown), "{after:?}");
        pool.send(Join).await.unwrap();
        // The four members it started, and not one more.
        let mut started = 0;
        while let Ok(ev) = rx.try_recv() {
            started += usize::from(matches!(ev, PoolEvent::Started { .. }));
        }
        assert!(started <= 4, "{started} members started");
    });
}

/// A pool with no `.events(..)` logs what its members would log as
/// workers of their own: their errors and exits are not to vanish.
pub fn without_a_recipient_members_errors_and_exits_are_logged() {
    let recorder = Recorder::default();
    let seen = recorder.clone();
    tracing::subscriber::with_default(recorder, || {
        run(async move {
            let pool = WorkerPool::<Test>::builder()
                .name("quiet")
                .entry("test")
                .size(1)
                .restart(RestartPolicy::never())
                .start()
                .unwrap();
            assert_eq!(pool.ask(Sum(vec![1])).await.unwrap(), 1);
            pool.post(Cmd::Panic("a member's panic".into()));
            let reported = settles(|| seen.said(&["uncaught error", "a member's panic", "quiet#0"])).await;
            assert!(reported, "the member's panic was not logged");
            pool.post(Cmd::Exit(3));
            let exited = settles(|| seen.said(&["exited", "exit code 3", "quiet#0"])).await;
            assert!(exited, "the member's exit was not logged");
            pool.terminate();
            pool.send(Join).await.unwrap();
        });
    });
}

/// A pool routes its asks past the member's mailbox; under the members'
/// default `WhenFull::Wait`, those that find its queue full (the member
/// blocked, its socket and its queue of 4 full) are handed to the
/// member's actor and wait there for room: none is refused or lost, each
/// gets its own answer.
pub fn asks_past_a_members_full_queue_wait_there_and_all_are_answered() {
    run(async {
        let (builder, _events) = pool();
        let limits = actix_webworker::Limits::default().max_queued_messages(4);
        let pool = builder.size(1).max_in_flight_per_worker(1000).limits(limits).start().unwrap();
        // Online, and its line past the mailbox open.
        assert_eq!(pool.ask(Sum(vec![1, 2])).await.unwrap(), 3);
        pool.send(Broadcast(Cmd::Block(300))).await.unwrap().unwrap();
        // 72 KiB each (u64::MAX is 9 bytes in bincode's varints): a few
        // fill the socket, four the queue; the rest wait in the actor.
        let asks = (0..200u64).map(|i| pool.ask(Sum([u64::MAX / 16384, i].repeat(4096))));
        let answers = join_all(asks).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let expected = (u64::MAX / 16384 + i as u64) * 4096;
            assert_eq!(answer.unwrap(), expected, "ask {i}");
        }
        assert_eq!(stats(&pool).await.members[0].in_flight, 0);
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

/// A broadcast resolves once every member has queued it; an ask made then
/// (which goes straight to a member's queue, past its mailbox) comes after
/// it, in every member.
pub fn an_ask_made_after_a_broadcast_resolved_comes_after_it() {
    run(async {
        let (builder, _events) = pool();
        let pool = builder.size(2).max_in_flight_per_worker(1).start().unwrap();
        for round in 0..20 {
            pool.send(Broadcast(Cmd::Echo(round))).await.unwrap().unwrap();
            // One to each member: the first is busy when the second is routed.
            let seen = join_all([pool.ask(Seen), pool.ask(Seen)]).await;
            assert!(seen.iter().all(|s| *s.as_ref().unwrap() == round + 1), "{round}: {seen:?}");
        }
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

/// Dropping a pool's last address closes its members the polite way, as
/// `terminate()` does and the README says (it did not: the tasks waiting
/// for the members' ends ran in the pool's context, which actix keeps
/// alive while anything runs there, and the pool and its members lived on).
/// A caller's ask does not keep the address (only one held back does, to
/// send its request again): of the asks made before it went, what the
/// members had accepted is answered, and what still waited in the pool's
/// queue is refused as `Terminating`, each resolved.
pub fn dropping_the_last_address_closes_the_members_and_resolves_every_ask() {
    run(async {
        let (builder, mut rx) = pool();
        let pool = builder.size(2).start().unwrap();
        pool_online(&mut rx, 2).await;
        let pids: Vec<u32> = stats(&pool).await.members.iter().map(|m| m.pid).collect();
        let asks: Vec<_> = (0..500u64).map(|i| pool.ask(Sum(vec![i, 2]))).collect();
        drop(pool);
        let (mut answered, mut refused) = (0, 0);
        for (i, sum) in join_all(asks).await.into_iter().enumerate() {
            match sum {
                Ok(sum) => {
                    assert_eq!(sum, i as u64 + 2);
                    answered += 1;
                }
                Err(WorkerError::Terminating) => refused += 1,
                Err(e) => panic!("ask {i}: {e:?}"),
            }
        }
        println!("POOL_DROPPED {answered} answered, {refused} refused as Terminating");
        assert!(answered > 0, "what the members had accepted is answered");
        // The members closed: both processes are gone (the pool's events
        // went with the pool).
        for pid in pids {
            let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
            assert!(gone, "member {pid} still runs after the pool's last address went");
        }
    });
}
