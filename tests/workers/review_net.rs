//! Findings of a review of the surfaces a network peer or another local
//! user can reach (a remote launch's port, its token check, TLS, the
//! launchers): each test shows the bad outcome with a figure.

#[cfg(feature = "tcp")]
use std::io::Write;
#[cfg(feature = "tcp")]
use std::time::{Duration, Instant};

use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    let mut tests = crate::trials![
        review_net::a_worker_that_talks_and_never_reads_is_not_pinged_without_bound,
        review_net::a_worker_that_cancels_its_asks_and_never_reads_is_not_pinged_without_bound,
    ];
    tests.extend(crate::with_feature!(
        "tcp",
        trials![
            review_net::a_late_worker_serves_no_one_but_the_parent_that_launched_it,
            review_net::max_rss_does_not_recycle_a_remote_member_for_its_launchers_memory,
            review_net::strangers_at_many_ports_hold_a_bounded_share_of_the_parents_descriptors,
        ]
    ));
    tests
}

pub fn roles() -> Vec<Trial> {
    crate::with_feature!("tcp", inner![review_net::crowded_ports_role])
}

/// A launcher that appends the address its worker is told to
/// `$AWW_NOTE`, then runs it.
#[cfg(feature = "tcp")]
const NOTE_ADDRESS: &str = r#"for a; do case "$a" in ACTIX_WEBWORKER_CONNECT=*) printf '%s\n' "${a#*=}" >> "$AWW_NOTE";; esac; done; exec "$@""#;

/// Ports crowded in [`crowded_ports_role`].
#[cfg(feature = "tcp")]
const PORTS: usize = 8;

#[cfg(feature = "tcp")]
/// Run alone by `strangers_at_many_ports_hold_a_bounded_share_of_the_parents_descriptors`:
/// its descriptor limit is lowered to 300 above what it holds at rest.
pub fn crowded_ports_role() {
    use actix_webworker::WorkerAddrExt;
    run(async {
        let (warm, mut warm_events) = start();
        assert_eq!(warm.ask(Sum(vec![1])).await.unwrap(), 1);
        warm.terminate();
        warm_events.successful_exit().await;
        let note = std::env::temp_dir().join(format!("aww-review-ports-{}", std::process::id()));
        let _ = std::fs::remove_file(&note);
        let mut workers = Vec::new();
        for _ in 0..PORTS {
            let (rec, events) = events::<Test>();
            let worker = builder(rec)
                .transport(loopback())
                .launcher(["sh", "-c", NOTE_ADDRESS, "launcher"])
                .env("AWW_NOTE", &note)
                .start()
                .unwrap();
            assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
            workers.push((worker, events));
        }
        let addresses = std::fs::read_to_string(&note).unwrap();
        let _ = std::fs::remove_file(&note);
        // Counted through a directory opened now: at the limit, opening
        // /proc/self/fd would fail.
        // SAFETY: a path that is a C string.
        let fds = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
        assert!(!fds.is_null());
        let open_now = || {
            // SAFETY: `fds` is an open directory stream, never closed
            // before the process ends.
            unsafe {
                libc::rewinddir(fds);
                let mut n = 0usize;
                while !libc::readdir(fds).is_null() {
                    n += 1;
                }
                // Less ".", ".." and the stream's own.
                n - 3
            }
        };
        let baseline = open_now();
        set_nofile(baseline as u64 + 300);
        // A stranger: 64 silent connections to each port (from processes
        // of its own), as many as a port checks at once.
        let mut helpers = Vec::new();
        for address in addresses.lines() {
            helpers.push(crate::remote::crowd_at(address, 64).0);
        }
        // What the parent takes of them (all it can, before the fix).
        let mut peak = 0;
        within(Duration::from_secs(10), || {
            peak = peak.max(open_now().saturating_sub(baseline));
            peak >= 250
        })
        .await;
        // Another worker, local, started meanwhile.
        let (rec, mut events) = events::<Test>();
        let started = builder(rec).start();
        let answer = match &started {
            Ok(worker) => Some(tokio::time::timeout(WAIT, worker.ask(Sum(vec![2, 3]))).await),
            Err(_) => None,
        };
        println!(
            "PORTS {PORTS} ports, 64 silent connections at each: the parent held {peak} \
             descriptors above its baseline (limit: 300 above); a new local worker: start \
             {:?}, answer {answer:?}",
            started.as_ref().map(|_| "ok")
        );
        for mut helper in helpers {
            drop(helper.stdin.take());
            let _ = helper.wait();
        }
        assert!(matches!(answer, Some(Ok(Ok(5)))), "a new worker could not start");
        assert!(peak <= 150, "strangers held {peak} descriptors of the parent's");
        if let Ok(worker) = started {
            worker.terminate();
            events.successful_exit().await;
        }
        for (worker, mut events) in workers {
            worker.terminate();
            events.successful_exit().await;
        }
    });
}

#[cfg(feature = "tcp")]
/// RELIABILITY, Remote workers: "silent connections hold at most 64
/// descriptors of a port". Of each port: a stranger who can reach 8 ports
/// (8 remote workers, or a pool of 8 remote members) made the parent
/// hold 8 x 64, with no bound over all ports, up to the parent's
/// descriptor limit, and then nothing else could open one: a worker
/// started then failed. All ports together must keep the parent's
/// descriptors for the worker's own use.
pub fn strangers_at_many_ports_hold_a_bounded_share_of_the_parents_descriptors() {
    let out = isolated("review_net::crowded_ports_role");
    for line in out.lines().filter_map(|l| l.find("PORTS").map(|at| &l[at..])) {
        println!("{line}");
    }
}

/// The entry of the raw worker of
/// [`a_worker_that_talks_and_never_reads_is_not_pinged_without_bound`].
const TALKER: &str = "review-talker";

/// The entry of the raw worker of
/// [`a_worker_that_cancels_its_asks_and_never_reads_is_not_pinged_without_bound`]:
/// the talker, but what it sends is a request cancelled at once.
const CANCELLER: &str = "review-canceller";

/// Pongs the raw talker sends, one every 5 ms, before it reads.
const TALKS: u32 = 2_000;

/// A raw worker (PROTOCOL.md by hand) when the entry says so: after the
/// hellos it sends a Pong every 5 ms ([`TALKS`] of them) and reads
/// nothing; then it reads what waits for it until 500 ms pass without a
/// byte, and writes how many Pings it found to `$AWW_NOTE`.
pub fn run_if_raw() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let entry = std::env::var("ACTIX_WEBWORKER_ENTRY");
    if entry.as_deref() != Ok(TALKER) && entry.as_deref() != Ok(CANCELLER) {
        return;
    }
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    crate::hostile::handshake(&mut sock, None, None);
    let pong = ws_frame(2, &[14, 0]);
    for id in 1..=u64::from(TALKS) {
        if entry.as_deref() == Ok(TALKER) {
            sock.write_all(&pong).unwrap();
        } else {
            // `GetConfig("k")` asked of the parent, and cancelled at once.
            let mut request = vec![3, 0];
            request.extend_from_slice(&id.to_le_bytes());
            request.extend_from_slice(&tag_of(actix_webworker::request_name::<GetConfig>()));
            request.extend_from_slice(&[1, b'k']);
            let mut cancel = vec![11, 0];
            cancel.extend_from_slice(&id.to_le_bytes());
            let mut both = ws_frame(2, &request);
            both.extend_from_slice(&ws_frame(2, &cancel));
            sock.write_all(&both).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let mut pings = 0u64;
    while let Some(frame) = read_frame(&mut sock) {
        pings += messages(&frame).iter().filter(|m| m.first() == Some(&13)).count() as u64;
    }
    std::fs::write(std::env::var("AWW_NOTE").unwrap(), pings.to_string()).unwrap();
    std::process::exit(0);
}

/// A raw worker made by `make` of the builder, heartbeats every 2 ms
/// (lost after 10 s), that writes how many Pings it found waiting in the
/// file `$AWW_NOTE` before it exits: that count, and its exit.
async fn pings_waiting(
    name: &str,
    make: impl FnOnce(actix_webworker::WorkerBuilder<Test>) -> actix_webworker::WorkerBuilder<Test>,
) -> (u64, actix_webworker::ExitStatus) {
    let note = std::env::temp_dir().join(format!("aww-review-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&note);
    let (rec, mut events) = events::<Test>();
    let _worker = make(builder(rec).by_exec())
        .heartbeat(std::time::Duration::from_millis(2), std::time::Duration::from_secs(10))
        .env("AWW_NOTE", &note)
        .start()
        .unwrap();
    let status = events.exit().await;
    let pings: u64 = std::fs::read_to_string(&note).unwrap().parse().unwrap();
    let _ = std::fs::remove_file(&note);
    (pings, status)
}

/// Heartbeats (`every` 1 ms): a worker that sends something more seldom
/// than `every` (a Pong every 2 ms: it is never silent for `lost_after`)
/// and never reads. After each of its messages the parent queued another
/// Ping, past every bound of the outbox (`push_unbounded`), for as long as
/// the worker went on: 3,000 Pongs sent over about 6 s found thousands of
/// Pings waiting, one per gap, in the parent's outbox beyond what its
/// socket holds. One Ping waiting is enough: a worker that does not read
/// the first will not read the second.
pub fn a_worker_that_talks_and_never_reads_is_not_pinged_without_bound() {
    run(async {
        let (pings, status) = pings_waiting("talker", |b| b.entry(TALKER)).await;
        println!("PINGS waiting for a worker that sent {TALKS} Pongs and read nothing: {pings} ({status})");
        assert!(status.success(), "{status}");
        // What the socket itself holds (a few hundred small writes), and one.
        assert!(pings <= 1_000, "{pings} Pings queued for a worker that reads none");
    });
}

/// A launcher that plays `ssh` to a slow host: the worker it starts is out
/// of the reach of the parent's signals (a session of its own, as on the
/// other host), and starts late, once `$AWW_DIR/go` exists (or gives up
/// after a minute). It keeps the
/// secrets block it was given (for the test, which plays the parent's
/// first visitor) in `$AWW_DIR/secrets`, then writes the address it was
/// told in `$AWW_DIR/address`, and its pid (the worker's, which it
/// becomes) in `$AWW_DIR/pid`.
#[cfg(feature = "tcp")]
const SLOW_HOST: &str = r#"cat > "$AWW_DIR/secrets"; for a; do case "$a" in ACTIX_WEBWORKER_CONNECT=*) printf %s "${a#*=}" > "$AWW_DIR/address.tmp"; mv "$AWW_DIR/address.tmp" "$AWW_DIR/address";; esac; done; i=0; while [ ! -e "$AWW_DIR/go" ]; do i=$((i+1)); [ $i -lt 6000 ] || exit 9; sleep 0.01; done; echo $$ > "$AWW_DIR/pid"; exec "$@" < "$AWW_DIR/secrets""#;

/// The token frame a worker sends first (PROTOCOL.md, section 1).
#[cfg(feature = "tcp")]
fn auth(token: &str) -> Vec<u8> {
    let mut auth = vec![12u8, 0];
    auth.extend_from_slice(token.as_bytes());
    ws_frame(2, &auth)
}

/// Accepts one connection on `listener` within `limit` (blocking).
#[cfg(feature = "tcp")]
fn accept_within(listener: &std::net::TcpListener, limit: Duration) -> Option<std::net::TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok((sock, _)) = listener.accept() {
            sock.set_nonblocking(false).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            return Some(sock);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Runs blocking `f` on a thread of its own (the System's thread runs
/// the parent), and waits for it.
#[cfg(feature = "tcp")]
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let thread = std::thread::spawn(f);
    assert!(within(WAIT * 2, || thread.is_finished()).await, "a blocking step ended");
    thread.join().expect("the blocking step did not panic")
}

#[cfg(feature = "tcp")]
/// Over plain TCP the worker does not know its parent: it presents its
/// token to whoever holds the port it was told, and serves them. A
/// launch its parent gave up on (the worker slow to start on its host,
/// `ssh` killed: the command on the other host goes on) closes its port;
/// another local user of the parent's host who saw the address in `ps`
/// binds it, and the worker, once up, connects there and hands over its
/// token (worth nothing now: the parent has let it go). Before, it took
/// that user for its parent (its hello, its pongs, to the parent's hello
/// replayed, as this one is, or computed from the program). Now it asks
/// its parent to prove itself with a second secret of its secrets block
/// (PROTOCOL.md, section 1), and this one cannot: the worker serves
/// nothing, and exits.
pub fn a_late_worker_serves_no_one_but_the_parent_that_launched_it() {
    run(async {
        let dir = std::env::temp_dir().join(format!("aww-review-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .transport(loopback())
            .launcher(["setsid", "-w", "sh", "-c", SLOW_HOST, "launcher"])
            .env("AWW_DIR", &dir)
            .start()
            .unwrap();
        assert!(within(WAIT, || dir.join("address").exists()).await, "the launcher ran");
        let address = std::fs::read_to_string(dir.join("address")).unwrap();
        let secrets = std::fs::read_to_string(dir.join("secrets")).unwrap();
        let token = crate::remote::secret(&secrets, "ACTIX_WEBWORKER_TOKEN").unwrap();
        // A hello of this program's parent, to replay: whoever may run the
        // program can get one.
        let hello = off_thread({
            let (address, token) = (address.clone(), token.clone());
            move || {
                let mut visitor = std::net::TcpStream::connect(&address).unwrap();
                visitor.set_read_timeout(Some(WAIT)).unwrap();
                visitor.write_all(&auth(&token)).unwrap();
                read_frame(&mut visitor).expect("the parent's hello")
            }
        })
        .await;
        // The parent gives this launch up: its port closes.
        let status = events.exit().await;
        let listener = loop {
            if let Ok(listener) = std::net::TcpListener::bind(&address) {
                break listener;
            }
            assert!(within(WAIT, || std::net::TcpListener::bind(&address).is_ok()).await);
        };
        let impostor = off_thread(move || {
            let mut told = Vec::new();
            let (mut asked, mut served) = (false, false);
            let Some(mut sock) = accept_within(&listener, Duration::from_secs(20)) else {
                return (told, asked, served);
            };
            told.push("connected".to_owned());
            if let Some(first) = read_frame(&mut sock) {
                // Its token, asking for the parent's proof (bit 0).
                asked = first.len() == 66 && first[..2] == [12, 1] && first[2..] == *token.as_bytes();
                told.push(format!("first frame: kind {} ({} bytes)", first[0], first.len()));
            }
            // The parent's hello, replayed, and a ping: no proof.
            let _ = sock.write_all(&ws_frame(2, &hello));
            let _ = sock.write_all(&ws_frame(2, &[13, 0]));
            // Whatever comes back until the worker ends the connection.
            while let Some(frame) = read_frame(&mut sock) {
                told.push(format!("then: kind {}", frame[0]));
                served |= frame[0] == 1 || messages(&frame).iter().any(|m| m.first() == Some(&14));
            }
            (told, asked, served)
        });
        // The worker comes up, late.
        std::fs::write(dir.join("go"), b"").unwrap();
        let (told, asked, served) = impostor.await;
        println!(
            "LATE worker of a launch given up ({status}), port {address} bound by another: \
             {told:?}; asked for the parent's proof: {asked}; served: {served}"
        );
        assert!(within(WAIT, || dir.join("pid").exists()).await, "the worker started");
        let pid: u32 = std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap();
        let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
        drop(worker);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(gone, "the late worker {pid} is still there");
        assert!(told.iter().any(|t| t == "connected"), "the worker never came: {told:?}");
        assert!(asked, "the worker did not ask its parent to prove itself: {told:?}");
        assert!(!served, "the worker served the port's next holder as its parent: {told:?}");
    });
}

/// A launcher as `kubectl exec` is to its worker: a process of its own on
/// this host, fat (`kubectl` holds tens of MiB; this one 96 MiB), the
/// worker (on the pod) its child, its stdin passed on.
#[cfg(feature = "tcp")]
const FAT_LAUNCHER: &str = "import subprocess, sys\n\
held = b'x' * (96 << 20)\n\
sys.exit(subprocess.call(sys.argv[1:]))";

/// The resident memory of process `pid`, in bytes (0 if gone).
#[cfg(feature = "tcp")]
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// The children of process `pid`.
#[cfg(feature = "tcp")]
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

#[cfg(feature = "tcp")]
/// README, Pools: `max_rss(bytes)` retires a member whose resident memory
/// passes it. A member on another host is started through a launcher,
/// and the pid the pool has is the launcher's: its memory is what was
/// looked at. A worker of 10-odd MiB under `max_rss(64 MiB)`, launched
/// through a 96 MiB `kubectl`-like launcher, was recycled for the
/// launcher's memory, again and again (each replacement has its own
/// fat launcher): a churn with nothing over the limit. What the pool
/// cannot see (memory on another host) must not be taken for the
/// member's.
pub fn max_rss_does_not_recycle_a_remote_member_for_its_launchers_memory() {
    use actix_webworker::{Event, Host, PoolEvent, WorkerAddrExt, WorkerPool};
    if std::process::Command::new("python3").arg("-c").arg("").status().is_err() {
        return skip("no python3 to play a fat launcher");
    }
    run(async {
        let (recipient, mut rx) = pool_events();
        let pool = WorkerPool::<Test>::builder()
            .entry("test")
            .transport(loopback())
            .hosts([Host::launched("pod", ["python3", "-c", FAT_LAUNCHER])])
            .size(1)
            .max_rss(64 << 20)
            .events(recipient)
            .start()
            .unwrap();
        let online = |ev: &PoolEvent<Test>| {
            matches!(ev, PoolEvent::Member { event, .. } if matches!(event.kind, Event::Online))
        };
        let launcher = match pool_until(&mut rx, online).await {
            PoolEvent::Member { event, .. } => event.pid,
            _ => unreachable!(),
        };
        let workers = children_of(launcher);
        let (launcher_rss, worker_rss) =
            (rss_of(launcher), workers.iter().map(|&w| rss_of(w)).max().unwrap_or(0));
        // The pool looks once a second: five looks, each recycling counted.
        let (mut recycled, until) = (Vec::new(), Instant::now() + Duration::from_secs(5));
        while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            if let PoolEvent::Recycled { reason, .. } = ev {
                recycled.push(reason);
            }
        }
        println!(
            "RSS launcher {} KiB, its worker {} KiB, max_rss 65536 KiB: recycled {} times in 5 s: {recycled:?}",
            launcher_rss >> 10,
            worker_rss >> 10,
            recycled.len()
        );
        pool.terminate();
        pool.send(actix_webworker::Join).await.unwrap();
        assert!(worker_rss > 0 && worker_rss < 64 << 20, "the worker is under the limit");
        assert!(recycled.is_empty(), "recycled for its launcher's memory: {recycled:?}");
    });
}

/// Serves `GetConfig` 20 ms after it is asked.
struct SlowConfig;

impl actix::Actor for SlowConfig {
    type Context = actix::Context<Self>;
}

impl actix::Handler<GetConfig> for SlowConfig {
    type Result = actix::ResponseFuture<String>;

    fn handle(&mut self, msg: GetConfig, _: &mut actix::Context<Self>) -> Self::Result {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            msg.0
        })
    }
}

/// As [`a_worker_that_talks_and_never_reads_is_not_pinged_without_bound`],
/// but the worker's messages are requests to the parent it cancels at
/// once: each answer the parent then drops gives back the request's room
/// in the outbox (`Outbox::forgive_reply` moves the room epoch), which
/// the heartbeat took for the writer having taken its last Ping, and
/// queued another per silence, without end.
pub fn a_worker_that_cancels_its_asks_and_never_reads_is_not_pinged_without_bound() {
    run(async {
        let served = actix::Actor::start(SlowConfig);
        let serve = |b: actix_webworker::WorkerBuilder<Test>| b.entry(CANCELLER).serve(served.recipient::<GetConfig>());
        let (pings, status) = pings_waiting("canceller", serve).await;
        println!("PINGS waiting for a worker that asked and cancelled {TALKS} requests and read nothing: {pings} ({status})");
        assert!(status.success(), "{status}");
        assert!(pings <= 1_000, "{pings} Pings queued for a worker that reads none");
    });
}
