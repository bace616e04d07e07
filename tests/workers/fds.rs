//! File descriptors travel with messages, both ways.

use std::io::Read;

use actix_webworker::{Event, Post, WireError, WorkerAddrExt, WorkerError, MAX_FDS_PER_MESSAGE};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        fds::pipe_write_end_to_the_worker,
        fds::file_opened_by_the_parent_is_read_by_the_worker,
        fds::worker_sends_a_descriptor_back,
        fds::listening_socket_accepts_in_the_worker,
        fds::too_many_descriptors_is_a_typed_error,
        fds::ten_thousand_mixed_both_ways_stay_matched,
        fds::descriptor_counts_return_to_their_start,
    ]
}

/// Run only as a process of their own, by the tests above.
pub fn roles() -> Vec<Trial> {
    crate::inner![fds::fd_counts_inner,]
}

pub fn pipe_write_end_to_the_worker() {
    run(async {
        let (worker, mut events) = start();
        let (mut r, w) = std::io::pipe().unwrap();
        worker
            .send(Post::with_fds(Cmd::WriteFd("written by the worker".into()), vec![w.into()]))
            .await
            .unwrap()
            .unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap(); // EOF: the worker closed its copy
        assert_eq!(text, "written by the worker");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn file_opened_by_the_parent_is_read_by_the_worker() {
    run(async {
        let (worker, mut events) = start();
        let path = std::env::temp_dir().join(format!("aww-fd-{}", std::process::id()));
        std::fs::write(&path, "the file's content").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        worker.do_send(Post::with_fds(Cmd::ReadFd, vec![file.into()]));
        assert_eq!(events.message().await.data, Reply::Content("the file's content".into()));
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn worker_sends_a_descriptor_back() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::Echo(0));
        let plain = events.message().await;
        assert!(plain.fd().is_none() && plain.fds.is_empty(), "no descriptor was sent");
        worker.post(Cmd::SendPipe("from the worker".into()));
        let mut msg = events.message().await;
        let mut text = String::new();
        std::fs::File::from(msg.take_fd().expect("a descriptor"))
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "from the worker");
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn listening_socket_accepts_in_the_worker() {
    run(async {
        let (worker, mut events) = start();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        worker.do_send(Post::with_fds(Cmd::Accept, vec![listener.into()]));
        // A blocking client on its own thread: this one runs the actors.
        let client = tokio::task::spawn_blocking(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let mut text = String::new();
            client.read_to_string(&mut text).unwrap();
            text
        });
        let text = tokio::time::timeout(WAIT, client).await.expect("the worker answered").unwrap();
        assert_eq!(text, "hi from the worker");
        assert_eq!(events.message().await.data, Reply::Accepted);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn too_many_descriptors_is_a_typed_error() {
    run(async {
        let (worker, mut events) = start();
        let fds: Vec<_> = (0..=MAX_FDS_PER_MESSAGE as u64).map(pipe_holding).collect();
        let res = worker.send(Post::with_fds(Cmd::Echo(0), fds)).await.unwrap();
        assert!(matches!(res, Err(WorkerError::Wire(WireError::TooManyFds { count, limit }))
            if count == MAX_FDS_PER_MESSAGE + 1 && limit == MAX_FDS_PER_MESSAGE));
        // Exactly the limit is fine.
        let fds: Vec<_> = (0..MAX_FDS_PER_MESSAGE as u64).map(pipe_holding).collect();
        worker.send(Post::with_fds(Cmd::Echo(0), fds)).await.unwrap().unwrap();
        loop {
            match events.next().await {
                Event::Message(m) => {
                    assert_eq!(m.data, Reply::Echo(0));
                    break;
                }
                Event::Online | Event::Refused(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// 10,000 messages each way, a descriptor on every third one going and
/// every second one coming back, all in one fast stream.
pub fn ten_thousand_mixed_both_ways_stay_matched() {
    run(async {
        let (worker, mut events) = start();
        mixed_stream(&worker, &mut events, 10_000).await;
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

async fn mixed_stream(
    worker: &actix::Addr<actix_webworker::Worker<Test>>,
    events: &mut Events<Test>,
    n: u64,
) {
    for i in 0..n {
        let fds = if i % 3 == 0 { vec![pipe_holding(i)] } else { vec![] };
        worker.do_send(Post::with_fds(Cmd::Tagged(i), fds));
    }
    for i in 0..n {
        let mut msg = events.message().await;
        assert_eq!(msg.data, Reply::Tagged(i, true), "the worker saw the wrong descriptors");
        if i % 2 == 0 {
            assert_eq!(msg.fds.len(), 1, "message {i} lost its descriptor");
            assert_eq!(read_u64(msg.fds.pop().unwrap()), i);
        } else {
            assert!(msg.fds.is_empty(), "message {i} got someone else's descriptor");
        }
    }
}

/// Run alone by `descriptor_counts_return_to_their_start`.
pub fn fd_counts_inner() {
    run(async {
        let (worker, mut events) = start();
        worker.post(Cmd::FdCount);
        let Reply::Count(worker_start) = events.message().await.data else { panic!() };
        let parent_start = open_fds();
        mixed_stream(&worker, &mut events, 2_000).await;
        worker.post(Cmd::FdCount);
        assert_eq!(events.message().await.data, Reply::Count(worker_start));
        assert_eq!(open_fds(), parent_start);
        worker.terminate();
        assert!(events.exit().await.success());
        drop(worker);

        // A worker that dies with descriptors in flight, both in its socket
        // and still queued in the parent.
        let (worker, mut events) = start();
        events.online().await;
        let baseline = open_fds();
        worker.post(Cmd::Exit(1));
        for i in 0..500 {
            worker.do_send(Post::with_fds(Cmd::Tagged(i * 3), vec![pipe_holding(i)]));
        }
        assert_eq!(events.exit().await.code, Some(1));
        // Queued descriptors are closed when the worker stops for good.
        assert_eq!(worker.send(actix_webworker::Join).await.unwrap().code, Some(1));
        assert!(
            within(std::time::Duration::from_millis(50), || open_fds() <= baseline).await,
            "descriptors: {baseline} before, {} after",
            open_fds()
        );
    });
}

pub fn descriptor_counts_return_to_their_start() {
    isolated("fds::fd_counts_inner");
}
