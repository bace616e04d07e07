//! The Web Workers surface: posting, ordering, sizes, exits, terminate,
//! on_close, panics, handshake refusal, parent death, and no leaks.

use std::time::Duration;

use actix_webworker::{
    Event, Grace, Limits, Post, Terminate, WireError, WorkerAddrExt, WorkerError,
};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        basics::posted_before_handshake_is_delivered,
        basics::ten_thousand_each_way_in_order,
        basics::a_burst_under_a_small_limit_arrives_in_order,
        basics::sixteen_mib_round_trip,
        basics::over_limit_is_refused_and_both_keep_working,
        basics::exit_code_is_reported,
        basics::sigkill_is_reported,
        basics::terminate_kills_a_stuck_worker_after_the_grace_period,
        basics::on_close_runs_before_exit_on_terminate,
        basics::close_from_inside_runs_on_close_and_exits_zero,
        basics::panic_in_handler_is_reported_and_the_worker_goes_on,
        basics::mismatched_worker_is_refused,
        basics::parent_death_takes_the_worker_down,
        basics::parent_death_runs_the_workers_on_close,
        basics::dropping_the_last_address_terminates_the_worker,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![basics::parent_role, basics::parent_role_with_a_note,]
}

pub fn posted_before_handshake_is_delivered() {
    run(async {
        let (worker, mut events) = start();
        // Nothing has been awaited: the child cannot have said hello yet.
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.terminate();
        assert_eq!(events.exit().await.code, Some(0));
    });
}

pub fn ten_thousand_each_way_in_order() {
    run(async {
        let (worker, mut events) = start();
        for i in 0..10_000 {
            worker.post(Cmd::Echo(i));
        }
        for i in 0..10_000 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        worker.post(Cmd::Flood(10_000));
        for i in 0..10_000 {
            assert_eq!(events.message().await.data, Reply::Seq(i));
        }
        worker.terminate();
        assert_eq!(events.message().await.data, Reply::Closing);
        assert!(events.exit().await.success());
    });
}

pub fn sixteen_mib_round_trip() {
    run(async {
        let (worker, mut events) = start();
        let blob: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
        worker.send(Post::new(Cmd::Blob(blob.clone()))).await.unwrap().unwrap();
        match events.message().await.data {
            Reply::Blob(back) => assert!(back == blob, "the 16 MiB blob came back changed"),
            other => panic!("expected the blob, got {other:?}"),
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn over_limit_is_refused_and_both_keep_working() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let limits = Limits::default().max_message_size(1 << 20);
        let worker = builder(rec).limits(limits).start().unwrap();
        let res = worker.send(Post::new(Cmd::Blob(vec![0; 2 << 20]))).await.unwrap();
        match res {
            Err(WorkerError::Wire(WireError::TooLarge { size, limit })) => {
                assert!(size > 2 << 20);
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        loop {
            match events.next().await {
                Event::Online => continue,
                Event::Refused(WorkerError::Wire(WireError::TooLarge { .. })) => break,
                other => panic!("expected a refusal event, got {other:?}"),
            }
        }
        // The worker's own over-size post is refused on its side.
        worker.post(Cmd::BlobBack(2 << 20));
        match events.message().await.data {
            Reply::Refused(text) => assert!(text.contains("over the limit"), "{text}"),
            other => panic!("expected Refused, got {other:?}"),
        }
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn exit_code_is_reported() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Exit(3));
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (Some(3), None));
        // Posting to an exited worker is a typed error, not silence.
        let res = worker.send(Post::new(Cmd::Echo(1))).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Exited(s)) if s.code == Some(3)), "{res:?}");
    });
}

pub fn sigkill_is_reported() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected a pid") };
        kill(pid, Signal::SIGKILL);
        let status = events.exit().await;
        assert_eq!((status.code, status.signal), (None, Some(9)));
    });
}

pub fn terminate_kills_a_stuck_worker_after_the_grace_period() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .grace_period(Duration::from_millis(300))
            .kill_delay(Duration::from_millis(200))
            .start()
            .unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.post(Cmd::Block(120_000));
        let started = std::time::Instant::now();
        worker.terminate();
        let status = events.exit().await;
        // SIGTERM is caught by the runtime, which is stuck: SIGKILL ends it.
        assert_eq!(status.signal, Some(libc::SIGKILL), "{status}");
        assert!(started.elapsed() >= Duration::from_millis(500));
    });
}

pub fn on_close_runs_before_exit_on_terminate() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Echo(0));
        worker.send(Terminate(Grace::Never)).await.unwrap();
        assert_eq!(events.message().await.data, Reply::Echo(0));
        assert_eq!(events.message().await.data, Reply::Closing);
        assert!(events.exit().await.success());
    });
}

pub fn close_from_inside_runs_on_close_and_exits_zero() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Close);
        assert_eq!(events.message().await.data, Reply::Closing);
        assert!(events.exit().await.success());
        let res = worker.send(Post::new(Cmd::Echo(1))).await.unwrap();
        assert!(res.is_err());
    });
}

pub fn panic_in_handler_is_reported_and_the_worker_goes_on() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Panic("oh no".into()));
        let report = events.error().await;
        assert_eq!(report.message, "oh no");
        assert!(
            report.file.as_deref().unwrap_or("").ends_with("tests/workers/common/worker.rs"),
            "{report:?}"
        );
        assert_eq!(report.line, Some(PANIC_LINE));
        assert!(report.column.is_some());
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn mismatched_worker_is_refused() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("v2").capture_output().start().unwrap();
        worker.post(Cmd::Echo(0));
        loop {
            match events.next().await {
                Event::WireError(WireError::FingerprintMismatch { ours, theirs }) => {
                    assert_ne!(ours, theirs);
                    break;
                }
                Event::Exit(s) => panic!("exited ({s}) without a mismatch error"),
                Event::Message(m) => panic!("a mismatched worker answered: {m:?}"),
                _ => continue,
            }
        }
        let status = events.exit().await;
        assert!(!status.success(), "{status}");
    });
}

/// The parent side of `parent_death_takes_the_worker_down`: starts a worker,
/// prints its pid, and waits to be killed.
pub fn parent_role() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected a pid") };
        println!("WORKER_PID={pid}");
        std::future::pending::<()>().await;
    });
}

pub fn parent_death_takes_the_worker_down() {
    let (mut parent, pid) = role_with_worker("basics::parent_role");
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(2)), "worker {pid} outlived its parent by 2 s");
}

/// The parent side of `parent_death_runs_the_workers_on_close`: starts a
/// worker whose `on_close` appends "closed <pid>" to the file `AWW_NOTE`
/// names, prints its pid, and waits to be killed.
pub fn parent_role_with_a_note() {
    let note = std::env::var("AWW_NOTE").expect("AWW_NOTE");
    run(async move {
        let (worker, mut events) = start();
        worker.post(Cmd::NoteOnCloseIn(note));
        assert_eq!(events.message().await.data, Reply::Count(0));
        worker.post(Cmd::Pid);
        let Reply::Pid(pid) = events.message().await.data else { panic!("expected a pid") };
        println!("WORKER_PID={pid}");
        std::future::pending::<()>().await;
    });
}

/// README, Behaviour worth knowing: "when the parent dies, it runs
/// `on_close`, then kills its own group". The parent SIGKILLed: once the
/// worker is gone, its `on_close` has written its note.
pub fn parent_death_runs_the_workers_on_close() {
    use std::io::BufRead;
    let note = std::env::temp_dir().join(format!("aww-parent-death-note-{}", std::process::id()));
    let _ = std::fs::remove_file(&note);
    let mut parent = role("basics::parent_role_with_a_note")
        .env("AWW_NOTE", &note)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(parent.stdout.take().unwrap());
    let pid = stdout.lines().find_map(|line| {
        let line = line.ok()?;
        line.split_once("WORKER_PID=").map(|(_, p)| p.trim().parse::<u32>().unwrap())
    });
    let pid = pid.expect("the parent printed its worker's pid");
    assert!(!note.exists() || std::fs::read_to_string(&note).unwrap().is_empty());
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(wait_gone(pid, WAIT), "worker {pid} outlived its parent");
    let noted = std::fs::read_to_string(&note).unwrap_or_default();
    let _ = std::fs::remove_file(&note);
    assert_eq!(noted, format!("closed {pid}\n"), "the worker's on_close did not run");
}

pub fn dropping_the_last_address_terminates_the_worker() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        drop(worker);
        // The polite way: on_close runs, then a clean exit.
        assert_eq!(events.message().await.data, Reply::Closing);
        assert!(events.exit().await.success());
    });
}

/// Under a message limit smaller than a batch, small messages in a burst
/// still arrive, in order: batches stay within what the peer takes.
pub fn a_burst_under_a_small_limit_arrives_in_order() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let limits = Limits::default().max_message_size(256);
        let worker = builder(rec).limits(limits).start().unwrap();
        for i in 0..1_000 {
            worker.post(Cmd::Echo(i));
        }
        for i in 0..1_000 {
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}
