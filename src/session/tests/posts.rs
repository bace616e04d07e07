//! Posts between two sessions: in order, with their descriptors, queued
//! as frames of their own or appended in runs.

use std::io::Write;
use std::os::fd::OwnedFd;

use super::*;

#[test]
fn posts_arrive_in_order_with_their_descriptors_and_gathered() {
    posts_arrive_in_order(|outbox, _, text, fds| post(outbox, text, fds));
}

/// Through the sender, which appends posts without descriptors in runs.
#[test]
fn posts_in_runs_arrive_in_order_with_the_others_between() {
    posts_arrive_in_order(|_, sender, text, fds| sender.post(None, &text.to_owned(), fds).unwrap());
}

/// Runs of two posts between posts queued as messages of their own: the
/// small runs go in batches with the others, their entries as they are.
#[test]
fn small_runs_go_in_batches_with_other_messages() {
    let n = std::cell::Cell::new(0);
    posts_arrive_in_order(|outbox, sender, text, fds| {
        n.set(n.get() + 1);
        match n.get() % 3 {
            0 => post(outbox, text, fds),
            _ => sender.post(None, &text.to_owned(), fds).unwrap(),
        }
    });
}

/// 1,000 posts, one with a descriptor, queued by `post`, read in order.
fn posts_arrive_in_order(post: impl Fn(&Outbox, &Sender, &str, Vec<OwnedFd>)) {
    run(async {
        let (sender, mut receiver) =
            sessions((none(), PostsOnly(vec![])), (none(), Recorder::default())).await;
        let outbox = sender.sender().outbox.clone();
        let (read_end, mut write_end) = std::io::pipe().unwrap();
        write_end.write_all(b"through the fd").unwrap();
        drop(write_end);
        for i in 0..1000 {
            let fds =
                if i == 500 { vec![OwnedFd::from(read_end.try_clone().unwrap())] } else { vec![] };
            post(&outbox, sender.sender(), &format!("m{i}"), fds);
        }
        drop(read_end);
        // The sender ends: what it queued is written, then its socket closes.
        let sent = sender.finish(Finish::Drain).await;
        assert_eq!(sent.writer.unwrap().unsent.len(), 0);
        assert_eq!(receiver.run().await, Why::PeerClosed);
        let got = receiver.finish(Finish::Now).await.side;
        let texts: Vec<_> = got.posts.iter().map(|p| p.data.clone()).collect();
        let expected: Vec<_> = (0..1000).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, expected);
        for (i, p) in got.posts.iter().enumerate() {
            assert_eq!(p.fds.len(), usize::from(i == 500), "post {i}");
        }
        let mut file = std::fs::File::from(got.posts[500].fds[0].try_clone().unwrap());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "through the fd");
        // Many posts read in one go are handed on together.
        assert!(got.flushes_with_posts < 1000, "{} flushes", got.flushes_with_posts);
        assert!(got.errors.is_empty(), "{:?}", got.errors);
    });
}
