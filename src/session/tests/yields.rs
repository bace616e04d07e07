//! The reader's yield after 1,024 frames that make no message, as the
//! session's `step` drives it (from a review of 0769cef, whose yield was
//! lost in `next_ready`).

use std::cell::Cell;
use std::io::Write;

use super::*;

/// A peer writing 100 WebSocket pings before each post: 560 posts and
/// 56,000 pings, all in the socket before the session reads. The reader
/// promises to let other tasks run after each 1,024 frames that make no
/// message (RELIABILITY.md, "the parent's thread, through frames that make
/// no message"), so a task beside it must run at least ~54 times while
/// the session reads them. `step` takes the reader's next message after
/// the first through `next_ready` (`now_or_never`): the yield happens
/// inside a future that is then dropped, its count of idle frames reset
/// already, and `step` returns `Flow::Go` having yielded nothing, with
/// its count of 128 messages per wake-up started again at the next call.
#[test]
fn pings_between_posts_let_other_tasks_run() {
    const POSTS: usize = 560;
    const PINGS: usize = 100;
    run(async {
        let (mut receiver, _a, raw) = receiving_raw().await;
        let post = encode(Codec::Bincode, Header::post(0).unwrap(), &"x".to_owned(), MAX)
            .unwrap()
            .contiguous();
        let mut unit = [0x89u8, 0].repeat(PINGS);
        unit.extend_from_slice(&crate::wire::wsframe::binary_frame(&post));
        let bytes = unit.repeat(POSTS);
        // All of it in the socket before the session reads: no wait for
        // the socket is among the yields counted.
        raw.set_nonblocking(true).unwrap();
        (&raw).write_all(&bytes).expect("all of it fits in the socket's buffer");
        let ticks = Rc::new(Cell::new(0usize));
        let ticking = ticks.clone();
        actix_rt::spawn(async move {
            loop {
                ticking.set(ticking.get() + 1);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.get();
        while receiver.side().posts.len() < POSTS {
            if let Flow::End(why) = receiver.step().await {
                panic!("ended: {why:?}");
            }
        }
        let ran = ticks.get() - before;
        let idle = POSTS * PINGS;
        assert!(
            ran >= idle / 1024 - 2,
            "{idle} pings between {POSTS} posts: the task beside ran {ran} times \
             (at least {} expected: one per 1,024 frames that make no message)",
            idle / 1024 - 2
        );
        drop(raw);
    });
}
