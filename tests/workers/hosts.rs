//! A pool spread over hosts: placement within each host's limit, a member
//! lost on one host replaced on another, and members here preferred at
//! equal load. The "hosts" here are launchers on this machine (`env`, which
//! runs the worker as `ssh host --` would on another), over TCP on
//! loopback; `cluster` runs pools through real engines.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use actix_webworker::{Event, Host, Join, PoolEvent, PoolStats, Stats, WorkerAddrExt, WorkerPool};
use futures_util::future::join_all;
use libtest_mimic::Trial;
use nix::sys::signal::Signal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        hosts::members_are_spread_over_the_hosts_within_their_limits,
        hosts::a_member_lost_on_a_host_is_replaced_on_another,
        hosts::of_members_as_loaded_the_one_here_answers,
    ]
}

/// Forwards a pool's events to the test.
struct Forward(UnboundedSender<PoolEvent<Test>>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<PoolEvent<Test>> for Forward {
    type Result = ();

    fn handle(&mut self, ev: PoolEvent<Test>, _: &mut Context<Self>) {
        let _ = self.0.send(ev);
    }
}

/// A host on this machine reached as a remote one would be: through a
/// launcher, over TCP.
fn far(name: &str) -> Host {
    Host::launched(name, ["env"])
}

/// A pool of the test worker over `hosts`, `n` members, its events read by
/// the test.
fn pool_over(
    hosts: Vec<Host>,
    n: usize,
) -> (Addr<WorkerPool<Test>>, UnboundedReceiver<PoolEvent<Test>>) {
    let (tx, rx) = unbounded_channel();
    let pool = WorkerPool::<Test>::builder()
        .entry("test")
        .transport(loopback())
        .heartbeat(Duration::from_millis(100), Duration::from_secs(2))
        .hosts(hosts)
        .size(n)
        .events(Forward(tx).start().recipient())
        .start()
        .expect("the pool starts");
    (pool, rx)
}

/// Reads events until `n` members are online.
async fn online(rx: &mut UnboundedReceiver<PoolEvent<Test>>, n: usize) {
    let mut up = 0;
    while up < n {
        let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("events");
        if let PoolEvent::Member { event, .. } = ev {
            up += usize::from(matches!(event.kind, Event::Online));
        }
    }
}

/// How many members each host has, as the pool's stats say.
fn per_host(stats: &PoolStats) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for m in &stats.members {
        *count.entry(m.host.to_string()).or_default() += 1;
    }
    count
}

pub fn members_are_spread_over_the_hosts_within_their_limits() {
    run(async {
        let hosts = vec![Host::local().limit(1), far("a").limit(2), far("b").limit(3)];
        let (pool, mut rx) = pool_over(hosts, 5);
        online(&mut rx, 5).await;
        let stats = pool.send(Stats).await.unwrap();
        let count = per_host(&stats);
        // One here (its limit), then the fewest first: a and b two each.
        let want = HashMap::from([("local".into(), 1), ("a".into(), 2), ("b".into(), 2)]);
        assert_eq!(count, want, "{:?}", stats.members);
        let sums = join_all((0..500u64).map(|i| pool.ask(Sum(vec![i, 1])))).await;
        for (i, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), i as u64 + 1);
        }
        pool.terminate();
        assert!(pool.send(Join).await.unwrap().success());
    });
}

pub fn a_member_lost_on_a_host_is_replaced_on_another() {
    run(async {
        let hosts = vec![far("a").limit(2), far("b").limit(2)];
        let (pool, mut rx) = pool_over(hosts, 2);
        online(&mut rx, 2).await;
        let stats = pool.send(Stats).await.unwrap();
        assert_eq!(per_host(&stats), HashMap::from([("a".into(), 1), ("b".into(), 1)]));
        // Host a goes silent: its member stops answering anything.
        let on_a = stats.members.iter().find(|m| &*m.host == "a").unwrap().pid;
        kill(on_a, Signal::SIGSTOP);
        // Lost within the heartbeat's bound, replaced on b.
        loop {
            let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("events");
            if let PoolEvent::Started { host, .. } = ev {
                assert_eq!(&*host, "b", "the replacement went to the host that was lost");
                break;
            }
        }
        online(&mut rx, 1).await;
        let stats = pool.send(Stats).await.unwrap();
        assert_eq!(per_host(&stats), HashMap::from([("b".into(), 2)]), "{:?}", stats.members);
        let pid_gone = settles(|| !std::path::Path::new(&format!("/proc/{on_a}")).exists()).await;
        assert!(pid_gone, "the lost worker was not killed and reaped");
        for sum in join_all((0..100u64).map(|i| pool.ask(Sum(vec![i])))).await {
            sum.unwrap();
        }
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

pub fn of_members_as_loaded_the_one_here_answers() {
    run(async {
        let hosts = vec![far("a").limit(1), Host::local().limit(1)];
        let (pool, mut rx) = pool_over(hosts, 2);
        online(&mut rx, 2).await;
        let stats = pool.send(Stats).await.unwrap();
        let here = stats.members.iter().find(|m| &*m.host == "local").unwrap().pid;
        // One at a time: both idle at every ask, and the one here takes each.
        for _ in 0..20 {
            assert_eq!(pool.ask(WhichPid).await.unwrap(), here);
        }
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}
