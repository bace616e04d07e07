//! A worker's events as a stream, without writing an actor.

use actix_webworker::{Event, Limits, Worker, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        stream::a_workers_life_read_as_a_stream,
        stream::a_stream_read_slowly_holds_its_worker_back,
    ]
}

async fn next_within(
    events: &mut actix_webworker::WorkerEvents<Test>,
) -> Option<actix_webworker::WorkerEvent<Test>> {
    tokio::time::timeout(WAIT, events.next()).await.expect("an event in time")
}

pub fn a_workers_life_read_as_a_stream() {
    run(async {
        let (worker, mut events) = Worker::<Test>::builder()
            .entry("test")
            .restart(actix_webworker::RestartPolicy::never())
            .start_with_events()
            .unwrap();
        worker.post(Cmd::Echo(0));
        let mut seen = Vec::new();
        while let Some(event) = next_within(&mut events).await {
            match event.kind {
                Event::Online => seen.push("online".to_owned()),
                Event::Message(m) => {
                    seen.push(format!("{:?}", m.data));
                    if m.data == Reply::Echo(0) {
                        worker.terminate();
                    }
                }
                Event::Exit(status) => seen.push(format!("exit {status}")),
                other => panic!("unexpected {other:?}"),
            }
        }
        // It ends once the worker has stopped for good.
        assert_eq!(seen, ["online", "Echo(0)", "Closing", "exit exit code 0"]);
    });
}

pub fn a_stream_read_slowly_holds_its_worker_back() {
    run(async {
        let (worker, mut events) = Worker::<Test>::builder()
            .entry("test")
            .limits(Limits::default().event_window(16))
            .start_with_events()
            .unwrap();
        worker.post(Cmd::Flood(20_000));
        let mut most = 0;
        for i in 0..20_000 {
            // One at a time, with a turn for everyone else in between: the
            // link reads on, but never more than the window ahead.
            tokio::task::yield_now().await;
            most = most.max(events.waiting());
            loop {
                let event = next_within(&mut events).await.expect("the worker runs");
                match event.kind {
                    Event::Message(m) => {
                        assert_eq!(m.data, Reply::Seq(i));
                        break;
                    }
                    Event::Online => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        println!("STREAM at most {most} events waited unread (window 16)");
        assert!(most <= 16, "{most} events waited unread");
        worker.terminate();
        while let Some(event) = next_within(&mut events).await {
            if let Event::Exit(status) = event.kind {
                assert!(status.success());
            }
        }
    });
}
