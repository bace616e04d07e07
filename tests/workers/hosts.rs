//! A pool spread over hosts: placement within each host's limit, a member
//! lost on one host replaced on another, and members here preferred at
//! equal load. The "hosts" here are launchers on this machine (`env`, which
//! runs the worker as `ssh host --` would on another), over TCP on
//! loopback; `cluster` runs pools through real engines. They need the
//! crate's `tcp` feature (the namespace hosts, over TLS, its `tls`).

#[cfg(feature = "tcp")]
use std::collections::HashMap;
#[cfg(feature = "tcp")]
use std::time::Duration;

#[cfg(feature = "tcp")]
use actix::prelude::*;
#[cfg(feature = "tls")]
use actix_webworker::{Transport, WorkerError};
#[cfg(feature = "tcp")]
use actix_webworker::{Event, Host, Join, PoolEvent, PoolStats, Stats, WorkerAddrExt, WorkerPool};
#[cfg(feature = "tcp")]
use futures_util::future::join_all;
use libtest_mimic::Trial;
#[cfg(feature = "tcp")]
use nix::sys::signal::Signal;
#[cfg(feature = "tcp")]
use tokio::sync::mpsc::UnboundedReceiver;

#[cfg(feature = "tcp")]
use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::with_feature!(
        "tcp",
        trials![
            hosts::members_are_spread_over_the_hosts_within_their_limits,
            hosts::a_member_lost_on_a_host_is_replaced_on_another,
            hosts::of_members_as_loaded_the_one_here_answers,
            hosts::a_member_starting_on_a_host_found_down_is_replaced_at_once,
            hosts::with_prefer_local_off_members_as_loaded_take_turns_wherever_they_run,
            hosts::a_host_where_a_member_never_came_online_is_passed_over,
            hosts::with_every_host_with_room_down_the_pool_serves_with_what_it_has_and_waits,
        ]
    );
    tests.extend(crate::with_feature!(
        "tls",
        trials![hosts::a_pool_over_two_namespace_hosts_survives_losing_one]
    ));
    tests
}

#[cfg(feature = "tcp")]
/// A host on this machine reached as a remote one would be: through a
/// launcher, over TCP.
fn far(name: &str) -> Host {
    Host::launched(name, ["env"])
}

#[cfg(feature = "tcp")]
/// A pool of the test worker over `hosts`, `n` members, its events read by
/// the test.
fn pool_over(
    hosts: Vec<Host>,
    n: usize,
) -> (Addr<WorkerPool<Test>>, UnboundedReceiver<PoolEvent<Test>>) {
    let (recipient, rx) = pool_events();
    let pool = WorkerPool::<Test>::builder()
        .entry("test")
        .transport(loopback())
        .heartbeat(Duration::from_millis(100), Duration::from_secs(2))
        .hosts(hosts)
        .size(n)
        .events(recipient)
        .start()
        .expect("the pool starts");
    (pool, rx)
}

#[cfg(feature = "tcp")]
/// How many members each host has, as the pool's stats say.
fn per_host(stats: &PoolStats) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for m in &stats.members {
        *count.entry(m.host.to_string()).or_default() += 1;
    }
    count
}

#[cfg(feature = "tcp")]
pub fn members_are_spread_over_the_hosts_within_their_limits() {
    run(async {
        let hosts = vec![Host::local().limit(1), far("a").limit(2), far("b").limit(3)];
        let (pool, mut rx) = pool_over(hosts, 5);
        pool_online(&mut rx, 5).await;
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

#[cfg(feature = "tcp")]
pub fn a_member_lost_on_a_host_is_replaced_on_another() {
    run(async {
        let hosts = vec![far("a").limit(2), far("b").limit(2)];
        let (pool, mut rx) = pool_over(hosts, 2);
        pool_online(&mut rx, 2).await;
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
        pool_online(&mut rx, 1).await;
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

/// A host where one member was lost is taken for down, and a member still
/// starting there is ended at once and replaced elsewhere, not left to
/// its handshake timeout (a minute here: without that, the test would
/// see `HandshakeTimeout` before the replacement).
#[cfg(feature = "tcp")]
pub fn a_member_starting_on_a_host_found_down_is_replaced_at_once() {
    run(async {
        // Host a runs its first member, and never its second (the launcher
        // sleeps instead).
        let lock = std::env::temp_dir().join(format!("aww-once-{}", std::process::id()));
        let _ = std::fs::remove_dir(&lock);
        let script = format!(
            "if mkdir {} 2>/dev/null; then exec \"$@\"; else exec sleep 600; fi",
            lock.display()
        );
        let once = Host::launched("a", ["sh", "-c", &script, "launcher"]).limit(2);
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .transport(loopback())
            .heartbeat(Duration::from_millis(100), Duration::from_secs(2))
            .handshake_timeout(Duration::from_secs(60))
            .hosts([once, far("b").limit(3)])
            .size(3)
            .events(recipient)
            .start()
            .expect("the pool starts");
        // Members 0 (a), 1 (b) up; member 2 (a) starting for ever.
        pool_online(&mut rx, 2).await;
        let stats = pool.send(Stats).await.unwrap();
        let on_a = stats.members.iter().find(|m| &*m.host == "a" && m.online).unwrap().pid;
        kill(on_a, Signal::SIGSTOP);
        // Both of a's replaced on b, and no handshake timed out.
        let (mut started, mut up) = (0, 0);
        while started < 2 || up < 2 {
            let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("events");
            match ev {
                PoolEvent::Started { host, .. } => {
                    assert_eq!(&*host, "b");
                    started += 1;
                }
                PoolEvent::Member { event, .. } => match event.kind {
                    Event::Online => up += 1,
                    Event::WireError(actix_webworker::WireError::HandshakeTimeout(_)) => {
                        panic!("the member starting on the host found down waited for its timeout")
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let stats = pool.send(Stats).await.unwrap();
        assert_eq!(per_host(&stats), HashMap::from([("b".into(), 3)]), "{:?}", stats.members);
        pool.terminate();
        pool.send(Join).await.unwrap();
        let _ = std::fs::remove_dir(&lock);
    });
}

#[cfg(feature = "tcp")]
pub fn of_members_as_loaded_the_one_here_answers() {
    run(async {
        let hosts = vec![far("a").limit(1), Host::local().limit(1)];
        let (pool, mut rx) = pool_over(hosts, 2);
        pool_online(&mut rx, 2).await;
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

/// docs/cluster.md, Routing: "`prefer_local(false)` turns that off". Of
/// two idle members, one here and one on a host, the asks made one at a
/// time go in turn to both (with the preference on, every one goes to the
/// one here: `of_members_as_loaded_the_one_here_answers`).
#[cfg(feature = "tcp")]
pub fn with_prefer_local_off_members_as_loaded_take_turns_wherever_they_run() {
    run(async {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .transport(loopback())
            .hosts([far("a").limit(1), Host::local().limit(1)])
            .prefer_local(false)
            .size(2)
            .events(recipient)
            .start()
            .expect("the pool starts");
        pool_online(&mut rx, 2).await;
        let stats = pool.send(Stats).await.unwrap();
        let pid_on = |host: &str| stats.members.iter().find(|m| &*m.host == host).unwrap().pid;
        let (here, there) = (pid_on("local"), pid_on("a"));
        let mut answered = HashMap::<u32, usize>::new();
        for _ in 0..20 {
            *answered.entry(pool.ask(WhichPid).await.unwrap()).or_default() += 1;
        }
        assert_eq!(answered, HashMap::from([(here, 10), (there, 10)]), "here {here}, there {there}");
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

/// docs/cluster.md, Host loss, 2: a host where a member could not be
/// started (it never came online) is passed over, as one where a member
/// was lost. Host a's launcher fails at once; its member is replaced on b,
/// although a then has fewer members (placement would pick it were it not
/// passed over), and a is not tried again within its `retry_after`.
#[cfg(feature = "tcp")]
pub fn a_host_where_a_member_never_came_online_is_passed_over() {
    run(async {
        let broken = Host::launched("a", ["false"]).limit(2);
        let (pool, mut rx) = pool_over(vec![broken, far("b").limit(3)], 2);
        // Member 0 on a (fails), member 1 on b; then the replacement.
        let mut on: Vec<String> = Vec::new();
        while on.len() < 3 {
            if let PoolEvent::Started { host, .. } = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Started { .. })).await {
                on.push(host.to_string());
            }
        }
        assert_eq!(on, ["a", "b", "b"], "where the members were started");
        // Both on b online, and they answer.
        let stats = settles_stats(&pool, |s| per_host(s) == HashMap::from([("b".into(), 2)]) && s.members.iter().all(|m| m.online)).await;
        assert_eq!(per_host(&stats), HashMap::from([("b".into(), 2)]), "{:?}", stats.members);
        for sum in join_all((0..100u64).map(|i| pool.ask(Sum(vec![i, 1])))).await {
            sum.unwrap();
        }
        // Nothing more was started on a meanwhile.
        while let Ok(ev) = rx.try_recv() {
            if let PoolEvent::Started { host, .. } = ev {
                assert_ne!(&*host, "a", "the host that failed its member was tried again");
            }
        }
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
}

/// docs/cluster.md, Host loss, 3: "With every host with room down, the
/// pool waits for the first to come back (`SpawnError::NoHost` is logged)
/// and serves with the members it has." Hosts a and b of one member each;
/// a's member stops (SIGSTOP) and is lost: a is down for its
/// `retry_after` (3 s) and b is full, so no replacement is started, the
/// pool logs `NoHost` and answers with b's member; once a is back, the
/// member is replaced there.
#[cfg(feature = "tcp")]
pub fn with_every_host_with_room_down_the_pool_serves_with_what_it_has_and_waits() {
    let recorder = crate::errors::Recorder::default();
    let seen = recorder.clone();
    tracing::subscriber::with_default(recorder, || {
        run(async move {
            let retry = Duration::from_secs(3);
            let hosts = vec![far("a").limit(1).retry_after(retry), far("b").limit(1)];
            let (pool, mut rx) = pool_over(hosts, 2);
            pool_online(&mut rx, 2).await;
            let stats = pool.send(Stats).await.unwrap();
            let pid_on = |host: &str| stats.members.iter().find(|m| &*m.host == host).unwrap().pid;
            let (on_a, on_b) = (pid_on("a"), pid_on("b"));
            kill(on_a, Signal::SIGSTOP);
            // Lost within the heartbeat's 2 s.
            let lost = |ev: &PoolEvent<Test>| {
                matches!(ev, PoolEvent::Member { event, .. }
                    if matches!(&event.kind, Event::Exit(s) if s.lost.is_some()))
            };
            let ev = pool_until(&mut rx, |ev| lost(ev) || matches!(ev, PoolEvent::Started { .. })).await;
            assert!(lost(&ev), "a member was started before the loss: {ev:?}");
            let lost_at = std::time::Instant::now();
            // No host for a replacement: said in the log.
            let said = settles(|| seen.said(&["could not replace a member", "no host for another member", "those with room are down"])).await;
            assert!(said, "NoHost was not logged: {:?}", seen.0.lock().unwrap());
            // The pool serves with the member it has.
            for _ in 0..20 {
                assert_eq!(pool.ask(WhichPid).await.unwrap(), on_b);
            }
            // a is back after its retry_after: the replacement goes there.
            let ev = pool_until(&mut rx, |ev| matches!(ev, PoolEvent::Started { .. })).await;
            let waited = lost_at.elapsed();
            let PoolEvent::Started { host, .. } = ev else { unreachable!() };
            assert_eq!(&*host, "a", "the replacement went over b's limit");
            assert!(waited >= retry - Duration::from_secs(1), "replaced {waited:?} after the loss, before a was back");
            pool_online(&mut rx, 1).await;
            let stats = pool.send(Stats).await.unwrap();
            let want = HashMap::from([("a".into(), 1), ("b".into(), 1)]);
            assert_eq!(per_host(&stats), want, "{:?}", stats.members);
            assert!(stats.members.iter().all(|m| m.pid != on_a), "the lost member is still counted");
            for sum in join_all((0..100u64).map(|i| pool.ask(Sum(vec![i])))).await {
                sum.unwrap();
            }
            pool.terminate();
            pool.send(Join).await.unwrap();
        });
    });
}

#[cfg(feature = "tcp")]
/// The pool's stats once `f` holds of them (or the last, after 10 s).
async fn settles_stats(pool: &Addr<WorkerPool<Test>>, f: impl Fn(&PoolStats) -> bool) -> PoolStats {
    for _ in 0..1000 {
        let stats = pool.send(Stats).await.unwrap();
        if f(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.send(Stats).await.unwrap()
}

#[cfg(feature = "tls")]
/// A host of the test's own: a network namespace joined to this one by a
/// veth pair (addresses that exist only on the pair), with an sshd of its
/// own listening inside. Everything goes on drop: the namespace's
/// processes, the namespace (and the pair with it), the keys.
struct NsHost {
    ns: String,
    /// The veth end here, which the test takes down to cut the host off.
    here_if: String,
    /// This machine's address as the host sees it, and the host's own.
    here_ip: String,
    host_ip: String,
    sshd: std::process::Child,
}

#[cfg(feature = "tls")]
impl NsHost {
    fn make(k: usize, dir: &std::path::Path) -> Result<NsHost, String> {
        let id = std::process::id();
        let (net, ns, here_if) = (id % 250, format!("aww-{id}-h{k}"), format!("aw{}h{k}", id % 100_000));
        let (here_ip, host_ip) = (format!("10.202.{net}.{}", 4 * k + 1), format!("10.202.{net}.{}", 4 * k + 2));
        ip(&["netns", "add", &ns])?;
        let inside = format!("aw{}i{k}", id % 100_000);
        let (here_cidr, host_cidr) = (format!("{here_ip}/30"), format!("{host_ip}/30"));
        let steps: [&[&str]; 6] = [
            &["link", "add", &here_if, "type", "veth", "peer", "name", &inside, "netns", &ns],
            &["addr", "add", &here_cidr, "dev", &here_if],
            &["-n", &ns, "addr", "add", &host_cidr, "dev", &inside],
            &["link", "set", &here_if, "up"],
            &["-n", &ns, "link", "set", &inside, "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                let _ = ip(&["netns", "del", &ns]);
                let _ = ip(&["link", "del", &here_if]);
                return Err(e);
            }
        }
        let path = |name: &str| dir.join(name).display().to_string();
        let opt = |kv: String| ["-o".to_owned(), kv];
        let sshd = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null"])
            .args(opt("Port=22".into()))
            .args(opt(format!("ListenAddress={host_ip}")))
            .args(opt(format!("HostKey={}", path("host_key"))))
            .args(opt(format!("AuthorizedKeysFile={}", path("authorized_keys"))))
            .args(opt(format!("PidFile={}", path(&format!("sshd-{k}.pid")))))
            .args(opt("StrictModes=no".into()))
            .args(opt("UsePAM=no".into()))
            .args(opt("PermitRootLogin=yes".into()))
            .args(opt("PasswordAuthentication=no".into()))
            .stderr(std::fs::File::create(dir.join(format!("sshd-{k}.log"))).unwrap())
            .spawn()
            .map_err(|e| e.to_string())?;
        let host = NsHost { ns, here_if, here_ip, host_ip, sshd };
        let up = (0..600).any(|_| {
            let ok = std::net::TcpStream::connect((host.host_ip.as_str(), 22)).is_ok();
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        match up {
            true => Ok(host),
            false => Err(format!("sshd in {} did not listen within 30 s", host.ns)),
        }
    }

    /// The processes in it running this binary: the workers started there.
    fn workers(&self) -> Vec<u32> {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("ip").args(["netns", "pids", &self.ns]).output();
        let mut pids: Vec<u32> = String::from_utf8_lossy(&out.map(|o| o.stdout).unwrap_or_default())
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == exe))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The pool's host: members started by ssh into it, connecting back
    /// over TLS to this machine's address on the pair.
    fn host(&self, name: &str, key: &std::path::Path) -> Host {
        let key = key.display().to_string();
        let launcher = [
            "ssh", "-i", &key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", &format!("root@{}", self.host_ip), "--",
        ]
        .map(str::to_owned);
        let listen: std::net::SocketAddr = format!("{}:0", self.here_ip).parse().unwrap();
        Host::launched(name, launcher)
            .transport(Transport::tls(listen).connect_to(&self.here_ip))
            .retry_after(Duration::from_secs(60))
    }
}

#[cfg(feature = "tls")]
impl Drop for NsHost {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        // Whatever still runs in it (sessions, workers), then the namespace.
        if let Ok(out) = std::process::Command::new("ip").args(["netns", "pids", &self.ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    kill(pid, Signal::SIGKILL);
                }
            }
        }
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.here_if]);
    }
}


#[cfg(feature = "tls")]
/// Why two namespace hosts with an sshd each cannot be made here, if not.
fn cannot_make_hosts() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root, so no network namespace can be made");
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        return Some("ip (iproute2) is not installed");
    }
    if !std::path::Path::new("/usr/sbin/sshd").exists() {
        return Some("/usr/sbin/sshd is not installed (openssh-server)");
    }
    None
}

#[cfg(feature = "tls")]
/// A pool of four over two hosts (network namespaces, each with an sshd),
/// over TLS, under a steady load of asks; one host's link is cut. Its
/// members are found lost within the heartbeat's bound and replaced on the
/// other host; every ask resolves, answered or with a typed error, and is
/// counted; once the link is back, the workers left on the lost host have
/// exited on their own.
pub fn a_pool_over_two_namespace_hosts_survives_losing_one() {
    if let Some(why) = cannot_make_hosts() {
        skip(why);
        return;
    }
    let dir = std::env::temp_dir().join(format!("aww-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["host_key", "client_key"] {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(name))
            .status()
            .expect("ssh-keygen runs");
        assert!(made.success());
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let made: Result<Vec<NsHost>, String> = (0..2).map(|k| NsHost::make(k, &dir)).collect();
    let ns_hosts = match made {
        Ok(hosts) => hosts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            skip(format!("no namespace host could be made here: {e}"));
            return;
        }
    };
    let key = dir.join("client_key");
    let hosts = vec![ns_hosts[0].host("h0", &key).limit(4), ns_hosts[1].host("h1", &key).limit(4)];
    run(async {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
            .handshake_timeout(Duration::from_secs(30))
            .hosts(hosts)
            .size(4)
            .events(recipient)
            .start()
            .expect("the pool starts");
        pool_online(&mut rx, 4).await;
        let stats = pool.send(Stats).await.unwrap();
        assert_eq!(per_host(&stats), HashMap::from([("h0".into(), 2), ("h1".into(), 2)]));
        // The workers themselves, on h0 (a member's pid is its launcher's,
        // here).
        let on_h0 = ns_hosts[0].workers();
        assert_eq!(on_h0.len(), 2, "the workers on h0: {on_h0:?}");
        // Eight callers asking without pause, counting what comes back.
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                actix_rt::spawn(async move {
                    let (mut asked, mut answered, mut failed) = (0u64, 0u64, 0u64);
                    while !stop.get() {
                        asked += 1;
                        match tokio::time::timeout(WAIT, pool.ask(Sum(vec![asked, 1]))).await {
                            Ok(Ok(sum)) => {
                                assert_eq!(sum, asked + 1);
                                answered += 1;
                            }
                            Ok(Err(WorkerError::Exited(_) | WorkerError::Disconnected)) => failed += 1,
                            Ok(Err(e)) => panic!("an ask failed untyped for a lost host: {e:?}"),
                            Err(_) => panic!("an ask was never resolved"),
                        }
                    }
                    (asked, answered, failed)
                })
            })
            .collect();
        // Load before the cut.
        // (Bounded: asks that all fail would never load it.)
        let until = std::time::Instant::now() + WAIT;
        while pool.send(Stats).await.unwrap().completed < 2_000 {
            assert!(std::time::Instant::now() < until, "no asks answered before the cut");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ip(&["link", "set", &ns_hosts[0].here_if, "down"]).unwrap();
        let cut = std::time::Instant::now();
        // Two replacements, on h1, online.
        let (mut started, mut up) = (0, 0);
        while up < 2 {
            let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("events");
            match ev {
                PoolEvent::Started { host, .. } => {
                    assert_eq!(&*host, "h1", "a replacement went to the host cut off");
                    started += 1;
                }
                PoolEvent::Member { event, .. } if matches!(event.kind, Event::Online) => up += 1,
                _ => {}
            }
        }
        let recovered = cut.elapsed();
        let stats = pool.send(Stats).await.unwrap();
        assert_eq!(per_host(&stats), HashMap::from([("h1".into(), 4)]), "{:?}", stats.members);
        let before = stats.completed;
        let until = std::time::Instant::now() + WAIT;
        while pool.send(Stats).await.unwrap().completed < before + 2_000 {
            assert!(std::time::Instant::now() < until, "no asks answered after the cut");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.set(true);
        let (mut asked, mut answered, mut failed) = (0, 0, 0);
        for caller in join_all(callers).await {
            let (a, ok, err) = caller.expect("a caller");
            (asked, answered, failed) = (asked + a, answered + ok, failed + err);
        }
        assert_eq!(asked, answered + failed);
        println!(
            "HOST_LOSS 4 members on 2 namespace hosts over TLS, heartbeat(100 ms, 1 s): full size again on the other host {recovered:?} after the cut ({started} started); {asked} asks: {answered} answered, {failed} failed typed (in flight on the lost host), 0 unresolved"
        );
        assert!(failed <= 2 * 16, "more failed than the lost members had in flight: {failed}");
        // The link back: the workers left there find their parent gone.
        assert_eq!(ns_hosts[0].workers(), on_h0, "cut off, the workers there still run");
        ip(&["link", "set", &ns_hosts[0].here_if, "up"]).unwrap();
        let back = std::time::Instant::now();
        for pid in on_h0 {
            assert!(wait_gone(pid, Duration::from_secs(90)), "worker {pid} on the lost host stays");
        }
        println!("HOST_LOSS the orphans on the lost host exited {:?} after the link came back", back.elapsed());
        pool.terminate();
        pool.send(Join).await.unwrap();
    });
    drop(ns_hosts);
    let _ = std::fs::remove_dir_all(&dir);
}
