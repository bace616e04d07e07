//! The writer's batch buffer: taken again, and let go when idle.

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
        // Work waiting: taken at once, the buffer kept.
        outbox.push(bytes::Bytes::from_static(b"work"), Vec::new()).unwrap();
        writer.wait_for_work(&outbox).await;
        assert_eq!(writer.batch.len(), 1);
        assert!(writer.batch_buf.capacity() >= MAX_BATCH);
        // No work for longer than the idle time (its timer is due
        // before this timeout's): the buffer goes, the writer waits on.
        writer.batch.clear();
        let idle = tokio::time::timeout(BATCH_BUF_IDLE * 3, writer.wait_for_work(&outbox));
        assert!(idle.await.is_err(), "no work came");
        assert_eq!(writer.batch_buf.capacity(), 0);
    });
}
