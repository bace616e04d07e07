//! The outbox alone: bounds, order, what outlives a connection.

use bytes::Bytes;

use super::*;
use crate::wire::envelope::{self, Kind};

fn post(b: u8) -> Segments {
    Bytes::from(vec![Kind::Post as u8, 0, b]).into()
}

fn payloads(batch: &VecDeque<Outgoing>) -> Vec<u8> {
    batch
        .iter()
        .map(|i| match i {
            Outgoing::Frame { bytes, .. } => bytes.contiguous()[bytes.len() - 1],
            Outgoing::End => 0,
        })
        .collect()
}

#[test]
fn bounded_and_ended() {
    let outbox = Outbox::new(2, usize::MAX);
    outbox.push(post(1), vec![]).unwrap();
    outbox.push(post(2), vec![]).unwrap();
    assert!(matches!(outbox.push(post(3), vec![]), Err(WorkerError::QueueFull { limit: 2 })));
    outbox.push_unbounded(post(3), vec![]).unwrap();
    outbox.end();
    // A second end queues no second End.
    outbox.end();
    let mut batch = VecDeque::new();
    assert!(outbox.try_take_batch(&mut batch));
    assert_eq!(batch.iter().filter(|i| matches!(i, Outgoing::End)).count(), 1);
    assert!(matches!(outbox.push(post(4), vec![]), Err(WorkerError::Terminating)));
}

#[test]
fn room_is_announced_when_a_batch_is_taken() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let outbox = std::sync::Arc::new(Outbox::new(1, usize::MAX));
        outbox.push(post(1), vec![]).unwrap();
        let epoch = outbox.room_epoch();
        assert!(outbox.push(post(2), vec![]).is_err());
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.wait_room(epoch).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut batch = VecDeque::new();
        outbox.take_batch(&mut batch).await;
        waiting.await.unwrap();
        outbox.push(post(2), vec![]).unwrap();
        // Room made before the wait starts is not missed.
        let epoch = outbox.room_epoch();
        outbox.discard(WorkerError::Terminating);
        outbox.wait_room(epoch).await;
    });
}

#[test]
fn byte_bound() {
    let outbox = Outbox::new(100, 10);
    outbox.push(Bytes::from(vec![0; 20]), vec![]).unwrap(); // first always fits
    assert!(outbox.push(Bytes::from(vec![0; 1]), vec![]).is_err());
}

#[test]
fn put_back_goes_first_and_only_posts_outlive_a_connection() {
    let outbox = Outbox::new(100, usize::MAX);
    outbox.push(post(3), vec![]).unwrap();
    let mut request = Vec::new();
    envelope::begin(&mut request, envelope::Header::request(1, 2));
    outbox.push(Bytes::from(request), vec![]).unwrap();
    outbox.put_back(vec![
        Outgoing::Frame { bytes: post(1), fds: vec![] },
        Outgoing::Frame { bytes: post(2), fds: vec![] },
    ]);
    let connection = outbox.owe_reply(0);
    let _ = outbox.end_connection();
    // A late answer for the connection that ended goes nowhere.
    outbox.push_reply(envelope::bare(Kind::Closing).into(), Vec::new(), connection, 0);
    let mut batch = VecDeque::new();
    assert!(outbox.try_take_batch(&mut batch));
    assert_eq!(payloads(&batch), [1, 2, 3]);
    // Control messages are never counted as posts.
    outbox.push_last(envelope::bare(Kind::Terminate)).unwrap();
    assert_eq!(outbox.discard(WorkerError::Terminating), 0);
}

#[test]
fn replies_count_against_the_bound() {
    let outbox = Outbox::new(2, usize::MAX);
    let connection = outbox.owe_reply(0);
    assert!(!outbox.replies_over());
    outbox.owe_reply(0);
    assert!(outbox.replies_over(), "two owed");
    let mut answer = Vec::new();
    envelope::begin(&mut answer, envelope::Header::reply_to(1));
    let answer = Bytes::from(answer);
    outbox.push_reply(answer.clone().into(), Vec::new(), connection, 0);
    outbox.push_reply(answer.into(), Vec::new(), connection, 0);
    assert!(outbox.replies_over(), "two queued");
    let mut batch = VecDeque::new();
    assert!(outbox.try_take_batch(&mut batch));
    assert!(!outbox.replies_over());
}

/// The requests being answered hold their bytes until answered (or
/// forgiven): a peer that asks large and never lets the answers finish is
/// held back by bytes, not only by count.
#[test]
fn requests_being_answered_count_their_bytes_against_the_bound() {
    let outbox = Outbox::new(100, 1000);
    let first = outbox.owe_reply(600);
    assert!(!outbox.replies_over());
    let second = outbox.owe_reply(300);
    outbox.owe_more(second, 100);
    assert!(outbox.replies_over(), "1,000 bytes held");
    outbox.forgive_reply(second, 400);
    assert!(!outbox.replies_over());
    let mut answer = Vec::new();
    envelope::begin(&mut answer, envelope::Header::reply_to(1));
    outbox.push_reply(Bytes::from(answer).into(), Vec::new(), first, 600);
    let mut batch = VecDeque::new();
    assert!(outbox.try_take_batch(&mut batch));
    assert!(!outbox.replies_over());
    // Bytes held for a connection that ended are let go with it.
    outbox.owe_reply(5000);
    assert!(outbox.replies_over());
    let _ = outbox.end_connection();
    assert!(!outbox.replies_over());
}
