//! Starting workers: `start()` returns at once, the parent's event loop
//! goes on while processes start, and a program that cannot run is a typed
//! error, at once or as an event within milliseconds.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_webworker::{Event, ResourceLimits, SpawnError, Worker, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        startup::starting_64_workers_leaves_the_event_loop_free,
        startup::a_program_that_cannot_run_is_a_typed_error,
        startup::workers_that_never_say_hello_do_not_hold_up_the_next_start,
    ]
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub fn starting_64_workers_leaves_the_event_loop_free() {
    run(async {
        // A 1 ms ticker on the parent's event loop, noting its worst delay,
        // and the most CPU time the loop's thread used between two ticks:
        // the work that held the loop up, whatever the scheduler did.
        let late = Rc::new(Cell::new(Duration::ZERO));
        let busy = Rc::new(Cell::new(Duration::ZERO));
        let ticker = {
            let (late, busy) = (late.clone(), busy.clone());
            actix_rt::spawn(async move {
                let mut next = Instant::now();
                let mut cpu = thread_cpu();
                loop {
                    next += Duration::from_millis(1);
                    tokio::time::sleep_until(next.into()).await;
                    late.set(late.get().max(Instant::now().saturating_duration_since(next)));
                    let now = thread_cpu();
                    busy.set(busy.get().max(now - cpu));
                    cpu = now;
                }
            })
        };
        // The ticker's own baseline first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        late.set(Duration::ZERO);
        busy.set(Duration::ZERO);
        let cpu = thread_cpu();
        let t0 = Instant::now();
        let workers: Vec<_> = (0..64).map(|_| start()).collect();
        let start_cpu = thread_cpu() - cpu;
        let mut started = Vec::new();
        for (worker, mut events) in workers {
            events.online().await;
            started.push((worker, events));
        }
        let all_online = t0.elapsed();
        let (worst_late, worst_busy) = (late.get(), busy.get());
        ticker.abort();
        for (worker, events) in &mut started {
            worker.terminate();
            assert!(events.exit().await.success());
        }
        println!(
            "STARTUP 64 start() calls: {} us of the loop's CPU; all online after {} ms; \
             the 1 ms ticker at most {} us late, the loop at most {} us busy between ticks",
            start_cpu.as_micros(),
            all_online.as_millis(),
            worst_late.as_micros(),
            worst_busy.as_micros()
        );
        // No fork on the loop's thread: forking them there held it 60-80
        // ms. The 64 starts themselves cost it 3.8-7.9 ms of CPU on
        // 2026-12-06 on this machine, `b4b8fc7` alike (5 runs each, built
        // side by side: 4.2-6.2 ms), where they had cost under 1 ms: the
        // bound, 5 ms then, is 20 ms, still a third of what a fork on the
        // loop costs. Where those milliseconds go is issue 27's (the
        // descriptor table grown on the loop's thread, among others).
        assert!(start_cpu < Duration::from_millis(20), "start() used {start_cpu:?} of CPU");
        assert!(worst_busy < Duration::from_millis(20), "the loop was busy {worst_busy:?}");
        // How late the ticker was is printed, not asserted: that is wall
        // time, the scheduler's choice on a loaded machine (54-75 ms with
        // eight tests at once beside two busy loops, while the loop's own
        // CPU between two ticks stayed under the bound above). What held
        // the loop up is what `worst_busy` measures.
    });
}

pub fn a_program_that_cannot_run_is_a_typed_error() {
    run(async {
        // Missing: refused by `start()` itself.
        for program in ["/nonexistent/program", "no-such-program-anywhere"] {
            let (rec, _events) = events::<Test>();
            let res = Worker::<Test>::builder().program(program).events(rec).start();
            assert!(
                matches!(&res, Err(SpawnError::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound),
                "{program}: {:?}",
                res.err()
            );
        }
        // A start that fails between fork and exec (a descriptor limit no
        // process may have): told by an event, promptly, never retried.
        let (rec, mut events) = events::<Test>();
        let impossible = ResourceLimits::default().open_files(1 << 40);
        let t0 = Instant::now();
        let worker = builder(rec).resource_limits(impossible).start().unwrap();
        let pending = worker.ask(Sum(vec![1]));
        let gave_up = loop {
            match events.next().await {
                Event::GaveUp(g) => break g,
                Event::Restarting { .. } => panic!("a start that cannot work was retried"),
                _ => {}
            }
        };
        let took = t0.elapsed();
        assert!(gave_up.reason.contains("could not start"), "{}", gave_up.reason);
        assert!(pending.await.is_err());
        println!("STARTUP a failed start told in {} us", took.as_micros());
    });
}

/// Starts are admitted a few at a time (as many as there are CPUs, until
/// each worker's hello), but the wait is bounded: programs that never say
/// hello, more of them than may start at once, leave the next start a
/// short wait, not one as long as their handshake timeout.
pub fn workers_that_never_say_hello_do_not_hold_up_the_next_start() {
    run(async {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        let silent: Vec<_> = (0..cpus + 2)
            .map(|_| {
                let (rec, events) = events::<Test>();
                let worker = Worker::<Test>::builder()
                    .program("/bin/sleep")
                    .args(["600"])
                    .handshake_timeout(Duration::from_secs(600))
                    .events(rec)
                    .start()
                    .expect("sleep starts");
                (worker, events)
            })
            .collect();
        let t0 = Instant::now();
        let (worker, mut events) = start();
        // Held to the silent ones' handshake timeout, this would fail here.
        tokio::time::timeout(Duration::from_secs(120), events.online())
            .await
            .expect("the next start was held up by workers that never said hello");
        println!("STARTUP online behind {} silent starts after {} ms", cpus + 2, t0.elapsed().as_millis());
        assert_eq!(worker.ask(Sum(vec![2, 3])).await.expect("an answer"), 5);
        worker.terminate();
        assert!(events.exit().await.success());
        for (silent, mut events) in silent {
            silent.terminate();
            events.exit().await;
        }
    });
}
