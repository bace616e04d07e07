//! The writer's batch buffer: taken again, and let go when idle; runs of
//! posts given back whole, or split for a peer that takes less.

use super::*;

/// A batch of `n` bytes built in `buf`, as `feed_small` builds one.
fn batch(buf: &mut BytesMut, n: usize) -> bytes::Bytes {
    batch_room(buf, n).extend_from_slice(&vec![7; n]);
    buf.split().freeze()
}

#[test]
fn a_batch_is_built_where_the_last_was_once_that_one_is_written() {
    let mut buf = BytesMut::new();
    let first = batch(&mut buf, 60_000);
    let at = first.as_ptr();
    drop(first);
    let second = batch(&mut buf, 60_000);
    assert_eq!(second.as_ptr(), at, "taken again whole once written");
    // Still being written: the next goes elsewhere, the second intact.
    let third = batch(&mut buf, 60_000);
    assert_ne!(third.as_ptr(), at);
    assert!(second.iter().all(|&b| b == 7) && second.len() == 60_000);
    // Small batches are cut one after another from the same buffer.
    drop((second, third));
    let (a, b) = (batch(&mut buf, 100), batch(&mut buf, 100));
    assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(100));
}

#[test]
fn a_writer_idle_for_a_while_lets_its_batch_buffer_go() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_, sink) = crate::wire::ws::open(ours, 1 << 20).await.unwrap().split();
        let mut writer = Writer::new(sink);
        let outbox = Outbox::new(16, 1 << 20);
        writer.batch_buf = BytesMut::with_capacity(MAX_BATCH);
        // Work waiting: taken at once, the buffer kept; a run of posts
        // written, the outbox's buffer for runs kept.
        outbox.push(bytes::Bytes::from_static(b"work"), Vec::new()).unwrap();
        writer.wait_for_work(&outbox).await;
        assert_eq!(writer.batch.len(), 1);
        assert!(writer.batch_buf.capacity() >= MAX_BATCH);
        append_numbered(&outbox, 1, u64::MAX);
        writer.batch.clear();
        writer.wait_for_work(&outbox).await;
        assert!(!writer.feed_next().await.unwrap());
        writer.feed_small().await.unwrap();
        writer.settle();
        writer.fed.clear();
        assert!(outbox.holds_run_buffers());
        // No work for longer than the idle time (its timer is due
        // before this timeout's): the buffer goes, the writer waits on.
        writer.batch.clear();
        let idle = tokio::time::timeout(BATCH_BUF_IDLE * 3, writer.wait_for_work(&outbox));
        assert!(idle.await.is_err(), "no work came");
        assert_eq!(writer.batch_buf.capacity(), 0);
        assert!(!outbox.holds_run_buffers());
    });
}

/// `n` posts, each its number and 56 bytes more, appended to `outbox` in
/// runs; every `frame`th queued as a message of its own instead (so that
/// the runs between are small), as are those the runs refuse.
fn append_numbered(outbox: &Outbox, n: u64, frame: u64) {
    use crate::protocol::Codec;
    use crate::wire::encode::encode;
    for i in 0..n {
        let header = envelope::Header::post(0).unwrap();
        let msg = encode(Codec::Bincode, header, &(i, [7u8; 32], [7u8; 24]), 1 << 20).unwrap();
        // Refused by the run (its buffers all held), it goes alone, as
        // the sender's does.
        if (i + 1) % frame == 0 || !outbox.append_post(&msg.contiguous(), MAX_BATCH) {
            outbox.push(msg, Vec::new()).unwrap();
        }
    }
}

/// The numbers of the posts in `items`, in order.
fn numbers(items: &[Outgoing]) -> Vec<u64> {
    let number = |bytes: &Segments| {
        let bytes = bytes.contiguous();
        let (_, payload) = envelope::decode(&bytes).unwrap();
        crate::wire::codec::decode::<(u64, [u8; 32], [u8; 24])>(payload).unwrap().0
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Outgoing::Frame { bytes, .. } => out.push(number(bytes)),
            Outgoing::Posts(run) => out.extend(run.posts().iter().map(number)),
            Outgoing::End => {}
        }
    }
    out
}

/// A writer stopped while its peer reads nothing: every post of the runs
/// it took is either in doubt (it reached the kernel) or given back, in
/// order, the runs whole; the same with small runs, which go in batches
/// with other messages.
#[test]
fn runs_a_stopped_writer_never_wrote_are_given_back_whole_and_in_order() {
    stopped_with_runs(u64::MAX);
    stopped_with_runs(3);
}

fn stopped_with_runs(frame: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // The kernel takes a few KB: the first run reaches it, the others
        // (the buffers' 4 runs, then posts of their own) wait.
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
        let (_, sink) = crate::wire::ws::open(ours, 1 << 20).await.unwrap().split();
        let outbox = Arc::new(Outbox::new(usize::MAX, usize::MAX));
        const N: u64 = 50_000;
        append_numbered(&outbox, N, frame);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let running = tokio::spawn(Writer::new(sink).run(outbox.clone(), stopped));
        // Until it has taken everything, and then some turns more: the
        // socket is full (the writer waits for room), or soon will be.
        while outbox.len() > 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        stop.send(()).unwrap();
        let end = running.await.unwrap();
        assert!(end.result.is_ok(), "{:?}", end.result);
        let back = numbers(&end.unsent);
        // Whole runs behind the first (all posts in runs), or small runs
        // written in the first batch with the others (every third alone).
        let runs_back = end.unsent.iter().filter(|i| matches!(i, Outgoing::Posts(_))).count();
        match frame {
            u64::MAX => assert_eq!(runs_back, 3, "the buffers' 4 runs, the first written"),
            _ => assert!(runs_back == 0 && end.in_doubt > 10, "{} in doubt", end.in_doubt),
        }
        assert!(end.in_doubt > 0 && !back.is_empty(), "{} in doubt", end.in_doubt);
        assert_eq!(end.in_doubt as u64 + back.len() as u64, N, "every post accounted for");
        let expected: Vec<u64> = (end.in_doubt as u64..N).collect();
        assert_eq!(back, expected, "the last ones, in order");
    });
}

/// A run larger than the peer's largest WebSocket message goes as its
/// posts, one by one, in order.
#[test]
fn a_run_larger_than_the_peer_takes_goes_post_by_post() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_, sink) = crate::wire::ws::open(ours, 1000).await.unwrap().split();
        let mut writer = Writer::new(sink);
        let outbox = Outbox::new(usize::MAX, usize::MAX);
        append_numbered(&outbox, 100, u64::MAX);
        assert!(outbox.try_take_batch(&mut writer.batch));
        assert_eq!(writer.batch.len(), 1, "one run, larger than 1,000 bytes");
        assert!(!writer.feed_next().await.unwrap());
        let items: Vec<Outgoing> = writer.batch.drain(..).collect();
        assert!(items.iter().all(|i| matches!(i, Outgoing::Frame { .. })));
        assert_eq!(numbers(&items), (0..100).collect::<Vec<_>>());
    });
}
