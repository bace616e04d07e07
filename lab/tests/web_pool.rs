//! The web server of `examples/web_pool` under real HTTP: 1,000 requests,
//! 32 in flight, from awc, with a pool member killed mid-way. Every request
//! is answered; only those in flight on the killed member fail (503, with
//! its signal); the pool is back to full size, and the time that took is
//! printed (not asserted against a clock).

#[path = "../examples/web_pool/app.rs"]
mod app;

use std::time::{Duration, Instant};

use actix_webworker::{run_if_worker, Join, Stats, WorkerAddrExt};
use futures_util::stream::{FuturesUnordered, StreamExt};

const REQUESTS: usize = 1_000;
const IN_FLIGHT: usize = 32;
const KILL_AFTER: usize = 300;
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    run_if_worker([app::entry()]);
    actix_web::rt::System::new().block_on(async {
        tokio::time::timeout(Duration::from_secs(300), requests_with_a_member_killed())
            .await
            .expect("the test finishes");
    });
    println!("web_pool: ok");
}

/// Waits until two members are online, neither of them `killed_pid`;
/// returns how long that took.
async fn back_to_full_size(
    pool: actix::Addr<actix_webworker::WorkerPool<app::Jobs>>,
    killed_pid: u32,
) -> Duration {
    let killed_at = Instant::now();
    loop {
        let stats = pool.send(Stats).await.expect("the pool answers");
        let online: Vec<_> = stats.members.iter().filter(|m| m.online).collect();
        if online.len() == 2 && online.iter().all(|m| m.pid != killed_pid) {
            return killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < WAIT, "the pool did not come back: {stats:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn requests_with_a_member_killed() {
    let pool = app::pool(2).expect("the pool starts");
    let (server, bound) = app::server(pool.clone(), "127.0.0.1:0").expect("the server binds");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let client = awc::Client::builder().timeout(WAIT).finish();

    let mut in_flight = FuturesUnordered::new();
    let mut answers = Vec::with_capacity(REQUESTS);
    let mut killed = None;
    let mut next = 0;
    while answers.len() < REQUESTS {
        while in_flight.len() < IN_FLIGHT && next < REQUESTS {
            let url = format!("http://{bound}/primes/{}", 5_000 + next);
            let client = client.clone();
            in_flight.push(async move {
                let mut response = client.get(url).send().await.expect("an HTTP answer");
                let status = response.status();
                let body = response.body().await.expect("a body");
                (status, body)
            });
            next += 1;
        }
        answers.push(in_flight.next().await.expect("in flight"));
        if answers.len() == KILL_AFTER && killed.is_none() {
            let stats = pool.send(Stats).await.expect("the pool answers");
            let busy = stats.members.iter().max_by_key(|m| m.in_flight).expect("a member");
            // SAFETY: signalling a worker of ours.
            unsafe { libc::kill(busy.pid as i32, libc::SIGKILL) };
            killed =
                Some((busy.pid, actix_web::rt::spawn(back_to_full_size(pool.clone(), busy.pid))));
        }
    }
    let (_, back) = killed.expect("a member was killed");

    let (mut ok, mut failed) = (0, 0);
    for (status, body) in &answers {
        if status.is_success() {
            let counted: app::Counted = serde_json::from_slice(body).expect("JSON");
            assert!(counted.primes > 0);
            ok += 1;
        } else {
            assert_eq!(status.as_u16(), 503, "{body:?}");
            let failure: app::Failed = serde_json::from_slice(body).expect("JSON");
            // Only what the killed member had in flight: its exit, SIGKILL.
            assert_eq!(failure.signal, Some(libc::SIGKILL), "{failure:?}");
            failed += 1;
        }
    }
    assert_eq!(ok + failed, REQUESTS);
    // A member takes at most 4 at once (`app::pool`).
    assert!(failed <= 4, "{failed} failed");

    let back = back.await.expect("the watcher ran");
    println!(
        "web_pool: {ok} answered, {failed} failed with the killed member; back to 2 members {back:?} after the kill"
    );
    handle.stop(true).await;
    pool.terminate();
    assert!(pool.send(Join).await.is_ok());
}
