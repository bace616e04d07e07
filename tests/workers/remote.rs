//! Remote workers: `Transport::plain_tcp`, over loopback. The worker
//! connects back and presents its launch's token; launchers start it the
//! way `ssh host --` would (the test binary itself plays launchers that
//! pass no environment, or that first try the port as a stranger would).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use actix_webworker::{
    Event, Lost, Post, Restart, RestartPolicy, SharedBytes, Transport, WireError, WorkerAddrExt,
    WorkerError,
};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        remote::a_worker_over_loopback_tcp_works_as_a_local_one,
        remote::launchers_that_pass_no_environment_still_start_it,
        remote::a_wrong_or_silent_connection_is_refused_and_the_worker_still_gets_in,
        remote::the_token_is_good_for_one_connection,
        remote::a_worker_that_never_connects_times_out,
        remote::a_connection_cut_mid_message_is_reported,
        remote::through_a_launcher_an_end_without_the_workers_close_is_lost,
        remote::a_worker_gone_silent_is_found_by_its_heartbeat,
        remote::a_worker_launched_through_a_real_ssh,
        remote::a_worker_over_tls_and_strangers_to_it,
        remote::over_tls_full_sockets_both_ways_lose_nothing_and_keep_order,
        remote::a_worker_given_another_pin_will_not_talk,
        remote::tls_with_a_certificate_from_files,
        remote::a_worker_over_tls_without_the_entry_says_which_it_has,
    ]
}

fn loopback() -> Transport {
    Transport::plain_tcp("127.0.0.1:0".parse().unwrap())
}

pub fn a_worker_over_loopback_tcp_works_as_a_local_one() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let builder = builder(rec).transport(loopback()).restart(fast(Restart::Always));
        let worker = builder.start().unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        assert_eq!(worker.ask(Sum(vec![1, 2, 3])).await.unwrap(), 6);
        // Shared buffers cross as bytes, both ways.
        let three = SharedBytes::copy_from_slice(&vec![3u8; 3 << 20]).unwrap();
        let (sum, mapped) = worker.ask(Checksum(three)).await.unwrap();
        assert_eq!((sum, mapped), (3 * (3 << 20), false));
        let made = worker.ask(MakeShared(1 << 20, 9)).await.unwrap();
        assert!(!made.is_mapped() && made.len() == 1 << 20 && made.iter().all(|&b| b == 9));
        // Descriptors cannot cross: refused at post time.
        let with_fd = worker.send(Post::with_fds(Cmd::ReadFd, vec![pipe_holding(1)])).await;
        assert!(matches!(with_fd, Ok(Err(WorkerError::NoDescriptors))), "{with_fd:?}");
        // The worker's own requests to the parent, and its errors.
        worker.post(Cmd::Panic("over tcp".into()));
        assert_eq!(events.error().await.message, "over tcp");
        // Killed: requests in flight fail with the exit, and the restart
        // comes back on a port and token of its own.
        let pid = worker.ask(WhichPid).await.unwrap();
        let held = worker.ask(Never);
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        // SAFETY: signalling the worker we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(matches!(held.await, Err(WorkerError::Exited(s)) if s.signal == Some(9)));
        assert_eq!(events.exit().await.signal, Some(libc::SIGKILL));
        events.online().await;
        assert_ne!(worker.ask(WhichPid).await.unwrap(), pid);
        // Terminate: `on_close` runs, a clean exit, no restart.
        worker.terminate();
        events.successful_exit().await;
    });
}

fn tls() -> Transport {
    Transport::tls("127.0.0.1:0".parse().unwrap())
}

/// Over TLS, the same as in the clear; a stranger who does not speak TLS
/// (it sends a token in the clear) is refused, and the worker still gets
/// in.
pub fn a_worker_over_tls_and_strangers_to_it() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).transport(tls()).start().unwrap();
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        let many: Vec<_> = (0..500u64).map(|n| worker.ask(Sum(vec![n, 1]))).collect();
        for (n, sum) in futures_util::future::join_all(many).await.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), n as u64 + 1);
        }
        let big = SharedBytes::copy_from_slice(&vec![1u8; 4 << 20]).unwrap();
        assert_eq!(worker.ask(Checksum(big)).await.unwrap(), (4 << 20, false));
        // `on_close` runs and its last words come through.
        worker.post(Cmd::BlobBack(3 << 20));
        let Reply::Blob(blob) = events.message().await.data else { panic!("expected a blob") };
        assert_eq!(blob.len(), 3 << 20);
        worker.terminate();
        assert!(events.exit().await.success());

        let (rec, mut told) = crate::common::events::<Test>();
        let stranger = launched(rec, "wrong-token").transport(tls()).start().unwrap();
        match told.next().await {
            Event::WireError(WireError::AuthRefused { why, .. }) => {
                assert!(why.contains("TLS"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(stranger.ask(Sum(vec![3])).await.unwrap(), 3);
        stranger.terminate();
        assert!(told.exit().await.success());
    });
}

/// TLS is spoken by the stream itself: records written while the socket
/// is full wait, and their messages after them. A worker asleep while
/// posts pile up (the parent's socket fills), then echoing them all and
/// flooding back (the worker's fills): every message arrives, in order,
/// its bytes intact.
pub fn over_tls_full_sockets_both_ways_lose_nothing_and_keep_order() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).transport(tls()).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        worker.post(Cmd::Block(300));
        const N: u64 = 1_000;
        let blob = |i: u64| (0..8 << 10).map(|j| (i as usize * 31 + j) as u8).collect::<Vec<u8>>();
        for i in 0..N {
            worker.post(Cmd::Blob(blob(i)));
            worker.post(Cmd::Echo(i));
        }
        worker.post(Cmd::Flood(100_000));
        for i in 0..N {
            match events.message().await.data {
                Reply::Blob(b) => assert!(b == blob(i), "blob {i} came back changed"),
                other => panic!("blob {i}: got {other:?}"),
            }
            assert_eq!(events.message().await.data, Reply::Echo(i));
        }
        for i in 0..100_000 {
            assert_eq!(events.message().await.data, Reply::Seq(i));
        }
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

/// A worker told to trust another certificate refuses the parent's: it
/// never sends its token, and exits; the parent reports the failed TLS
/// handshake.
pub fn a_worker_given_another_pin_will_not_talk() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = launched(rec, "wrong-pin")
            .transport(tls())
            .restart(RestartPolicy::never())
            .start()
            .unwrap();
        let (mut refused, mut online) = (false, false);
        loop {
            match events.next().await {
                Event::WireError(WireError::AuthRefused { why, .. }) => {
                    assert!(why.contains("TLS"), "{why}");
                    refused = true;
                }
                Event::Online => online = true,
                Event::Exit(status) => {
                    assert_eq!(status.code, Some(64), "not a worker: it could not connect");
                    break;
                }
                _ => {}
            }
        }
        assert!(refused && !online, "refused {refused}, online {online}");
        drop(worker);
    });
}

/// The parent's certificate and key from PEM files.
pub fn tls_with_a_certificate_from_files() {
    let dir = std::env::temp_dir().join(format!("aww-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["parent.example".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    run(async {
        let (rec, mut events) = events::<Test>();
        let transport = Transport::tls_with_cert("127.0.0.1:0".parse().unwrap(), &cert, &key);
        let worker = builder(rec).transport(transport).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![4, 5])).await.unwrap(), 9);
        worker.terminate();
        assert!(events.exit().await.success());
        // Files that do not hold a certificate: `start()` says so.
        let (rec, _told) = crate::common::events::<Test>();
        let wrong = Transport::tls_with_cert("127.0.0.1:0".parse().unwrap(), &key, &key);
        let worker = builder(rec).transport(wrong).restart(RestartPolicy::never()).start().unwrap();
        assert!(matches!(worker.ask(Sum(vec![1])).await, Err(WorkerError::Exited(_))));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Started over TLS for an entry it does not have, the worker connects,
/// refuses, and names the entries it has, as over a socketpair.
pub fn a_worker_over_tls_without_the_entry_says_which_it_has() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec).entry("nope").transport(tls()).start().unwrap();
        let mut told = None;
        loop {
            match events.next().await {
                Event::WireError(WireError::UnknownEntry { entry, known }) => {
                    told = Some((entry, known))
                }
                Event::Exit(status) => {
                    assert_eq!(status.code, Some(64));
                    break;
                }
                _ => {}
            }
        }
        let (entry, known) = told.expect("the refusal came through TLS");
        assert_eq!(entry, "nope");
        assert!(known.contains(&"test".to_owned()), "{known:?}");
        drop(worker);
    });
}

/// The scenarios of the test binary as a launcher (see `run_if_launcher`).
const LAUNCHER: &str = "AWW_LAUNCHER";

/// The test worker over loopback TCP, launched by this test binary playing
/// launcher `scenario`.
fn launched(
    events: actix::Recipient<actix_webworker::WorkerEvent<Test>>,
    scenario: &str,
) -> actix_webworker::WorkerBuilder<Test> {
    let exe = std::env::current_exe().unwrap();
    builder(events).transport(loopback()).launcher([exe]).env(LAUNCHER, scenario)
}

pub fn launchers_that_pass_no_environment_still_start_it() {
    run(async {
        // `env -i`: nothing of the parent's environment reaches the worker,
        // which gets its variables as arguments; `sh -c 'exec "$@"'`: a
        // shell in between, as `ssh` has on the other side.
        let launchers: [&[&str]; 2] = [&["env", "-i"], &["sh", "-c", "exec \"$@\"", "launcher"]];
        for launcher in launchers {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec).transport(loopback()).launcher(launcher).start().unwrap();
            assert_eq!(worker.ask(Sum(vec![40, 2])).await.unwrap(), 42, "{launcher:?}");
            worker.post(Cmd::Env);
            let Reply::Lines(env) = events.message().await.data else { panic!("expected Lines") };
            assert!(
                !env.iter().any(|l| l.starts_with("ACTIX_WEBWORKER_")),
                "the worker cleared its variables: {env:?}"
            );
            // The launcher's exit is the worker's.
            worker.post(Cmd::Exit(7));
            assert_eq!(events.exit().await.code, Some(7), "{launcher:?}");
        }
    });
}

pub fn a_wrong_or_silent_connection_is_refused_and_the_worker_still_gets_in() {
    run(async {
        for (scenario, why) in [("wrong-token", "another token"), ("silent", "no token within")] {
            let (rec, mut events) = events::<Test>();
            let worker =
                launched(rec, scenario).handshake_timeout(Duration::from_secs(12)).start().unwrap();
            // The launcher's stranger is refused and reported first; then
            // the worker it starts gets in.
            match events.next().await {
                Event::WireError(WireError::AuthRefused { why: said, .. }) => {
                    assert!(said.contains(why), "{scenario}: {said}")
                }
                other => panic!("{scenario}: expected a refusal, got {other:?}"),
            }
            assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1, "{scenario}");
            worker.terminate();
            assert!(events.exit().await.success());
        }
    });
}

pub fn the_token_is_good_for_one_connection() {
    run(async {
        let note = std::env::temp_dir().join(format!("aww-token-{}", std::process::id()));
        let (rec, mut events) = events::<Test>();
        let worker = launched(rec, "note").env("AWW_NOTE", &note).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![2])).await.unwrap(), 2);
        let noted = std::fs::read_to_string(&note).unwrap();
        let _ = std::fs::remove_file(&note);
        let (address, token) = noted.split_once(' ').unwrap();
        // The worker got in: the same token, presented again, is refused
        // and told of; the worker goes on.
        let mut again = std::net::TcpStream::connect(address).unwrap();
        again.write_all(&auth_frame(token)).unwrap();
        loop {
            match events.next().await {
                Event::WireError(WireError::AuthRefused { why, .. }) => {
                    assert!(why.contains("used already"), "{why}");
                    break;
                }
                Event::Exit(s) => panic!("exited with {s} before the refusal was told"),
                _ => {}
            }
        }
        let mut buf = [0u8; 16];
        assert!(matches!(again.read(&mut buf), Ok(0) | Err(_)), "the second connection closed");
        assert_eq!(worker.ask(Sum(vec![3])).await.unwrap(), 3);
        worker.terminate();
        assert!(events.exit().await.success());
    });
}

pub fn a_worker_that_never_connects_times_out() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = launched(rec, "never")
            .handshake_timeout(Duration::from_millis(500))
            .restart(RestartPolicy::never())
            .start()
            .unwrap();
        let mut timed_out = false;
        loop {
            match events.next().await {
                Event::WireError(WireError::HandshakeTimeout(_)) => timed_out = true,
                Event::Exit(status) => {
                    assert_eq!(status.signal, Some(libc::SIGKILL), "the launcher is killed");
                    break;
                }
                _ => {}
            }
        }
        assert!(timed_out);
        drop(worker);
    });
}

pub fn a_connection_cut_mid_message_is_reported() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = launched(rec, "cut").restart(RestartPolicy::never()).start().unwrap();
        let (mut online, mut cut) = (false, false);
        loop {
            match events.next().await {
                Event::Online => online = true,
                Event::WireError(WireError::CutOff) => cut = true,
                Event::WireError(e) => panic!("expected CutOff, got {e}"),
                Event::Exit(_) => break,
                _ => {}
            }
        }
        assert!(online && cut, "online {online}, cut off {cut}");
        drop(worker);
    });
}

/// Through a launcher, the exit status seen is the launcher's. A worker
/// whose connection ends without its close (it died, or the connection
/// was cut) is lost, whatever the launcher says; a worker that closed is
/// not; a launcher that stays up after it is ended. Without a launcher
/// the status is the worker's own, close or none.
pub fn through_a_launcher_an_end_without_the_workers_close_is_lost() {
    run(async {
        // A launcher that hides the worker's status: it runs the worker,
        // then exits with 0 whatever became of it.
        let hiding = || ["sh", "-c", "\"$@\"; exit 0", "launcher"];
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .transport(loopback())
            .launcher(hiding())
            .restart(fast(Restart::OnFailure))
            .start()
            .unwrap();
        assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
        worker.post(Cmd::Exit(7));
        let status = events.exit().await;
        assert_eq!((status.code, status.lost), (Some(0), Some(Lost::Disconnected)), "{status:?}");
        assert!(!status.success());
        assert!(status.to_string().starts_with("lost"), "{status}");
        // Not known to have succeeded: restarted on failure.
        events.online().await;
        assert_eq!(worker.ask(Sum(vec![2])).await.unwrap(), 2);
        // Closed by the worker itself: its close came.
        worker.post(Cmd::Close);
        let status = events.exit().await;
        assert_eq!((status.code, status.lost), (Some(0), None), "{status:?}");

        // A launcher that stays up after its worker: it gets the time to
        // exit that a closing worker gets, then SIGTERM.
        let (rec, mut events) = crate::common::events::<Test>();
        let lingering = ["sh", "-c", "\"$@\"; sleep 600", "launcher"];
        let worker = builder(rec)
            .transport(loopback())
            .launcher(lingering)
            .restart(RestartPolicy::never())
            .shutdown_timeout(Duration::from_millis(300))
            .kill_delay(Duration::from_millis(300))
            .start()
            .unwrap();
        assert_eq!(worker.ask(Sum(vec![4])).await.unwrap(), 4);
        worker.post(Cmd::Exit(7));
        let status = events.exit().await;
        let (signal, lost) = (Some(libc::SIGTERM), Some(Lost::Disconnected));
        assert_eq!((status.signal, status.lost), (signal, lost), "{status:?}");

        // No launcher: the worker is our child, and its status its own.
        let (rec, mut events) = crate::common::events::<Test>();
        let never = RestartPolicy::never();
        let worker = builder(rec).transport(loopback()).restart(never).start().unwrap();
        assert_eq!(worker.ask(Sum(vec![3])).await.unwrap(), 3);
        worker.post(Cmd::Exit(7));
        let status = events.exit().await;
        assert_eq!((status.code, status.lost), (Some(7), None), "{status:?}");
    });
}

/// When this test binary is started as a launcher (`AWW_LAUNCHER` set):
/// does what its scenario says, then execs the rest of its arguments (the
/// worker, as `env K=V... program args...`). It knows the connection's
/// address and token from its own environment, as any launcher has them.
pub fn run_if_launcher() {
    let Ok(scenario) = std::env::var(LAUNCHER) else { return };
    // SAFETY: nothing else runs yet; the worker must not be a launcher too.
    unsafe { std::env::remove_var(LAUNCHER) };
    let address = std::env::var("ACTIX_WEBWORKER_CONNECT").unwrap();
    let token = std::env::var("ACTIX_WEBWORKER_TOKEN").unwrap();
    let connect = || std::net::TcpStream::connect(&address).unwrap();
    let closed = |mut s: std::net::TcpStream| {
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    };
    match scenario.as_str() {
        "wrong-token" => {
            let mut stranger = connect();
            stranger.write_all(&auth_frame(&"f".repeat(64))).unwrap();
            closed(stranger);
        }
        "silent" => closed(connect()),
        "note" => {
            std::fs::write(std::env::var("AWW_NOTE").unwrap(), format!("{address} {token}"))
                .unwrap();
        }
        "never" => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        "cut" => {
            // The worker's side by hand: the token, the parent's hello sent
            // back, then a frame that claims 100 bytes and brings 10.
            let mut sock = connect();
            sock.write_all(&auth_frame(&token)).unwrap();
            let mut head = [0u8; 2];
            sock.read_exact(&mut head).unwrap();
            let mut hello = vec![0u8; usize::from(head[1] & 0x7f)];
            sock.read_exact(&mut hello).unwrap();
            sock.write_all(&ws_frame(2, &hello)).unwrap();
            let mut cut = vec![0x82, 100];
            cut.extend_from_slice(&[2; 10]);
            sock.write_all(&cut).unwrap();
            std::process::exit(0);
        }
        "wrong-pin" => {}
        other => panic!("no launcher scenario {other}"),
    }
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if scenario == "wrong-pin" {
        // The worker is told to trust another certificate.
        for arg in &mut args {
            if arg.to_string_lossy().starts_with("ACTIX_WEBWORKER_TLS_PIN=") {
                *arg = format!("ACTIX_WEBWORKER_TLS_PIN={}", "0".repeat(64)).into();
            }
        }
    }
    let mut args = args.into_iter();
    let program = args.next().expect("what to launch");
    let e = std::process::Command::new(program).args(args).exec();
    panic!("could not exec the worker: {e}");
}

/// The token message, in its WebSocket frame.
fn auth_frame(token: &str) -> Vec<u8> {
    let mut auth = vec![12u8, 0];
    auth.extend_from_slice(token.as_bytes());
    ws_frame(2, &auth)
}

/// A worker that stops answering without closing its connection (here:
/// stopped with SIGSTOP, as a host that froze) is taken for lost once its
/// heartbeat goes unanswered, killed, and restarted; one that is merely
/// idle is not.
pub fn a_worker_gone_silent_is_found_by_its_heartbeat() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let lost_after = Duration::from_secs(3);
        let worker = builder(rec)
            .transport(loopback())
            .heartbeat(Duration::from_millis(100), lost_after)
            .restart(fast(Restart::Always))
            .start()
            .unwrap();
        let pid = worker.ask(WhichPid).await.unwrap();
        // Idle for ten pings: answered, so nothing is said.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(worker.ask(Sum(vec![5])).await.unwrap(), 5);
        let said = events.rest().await;
        assert!(!said.iter().any(|e| matches!(e, Event::WireError(_))), "{said:?}");
        // SAFETY: signalling the worker we started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let t0 = std::time::Instant::now();
        let held = worker.ask(Sum(vec![6]));
        let mut silent = false;
        loop {
            match events.next().await {
                Event::WireError(WireError::Silent(after)) => {
                    assert_eq!(after, lost_after);
                    silent = true;
                }
                Event::Exit(status) => {
                    assert_eq!(status.signal, Some(libc::SIGKILL));
                    assert_eq!(status.lost, Some(Lost::Silent), "{status:?}");
                    assert!(status.to_string().starts_with("lost"), "{status}");
                    break;
                }
                _ => {}
            }
        }
        assert!(silent, "the exit came without the silence being told");
        println!("HEARTBEAT lost after {:?} (limit {lost_after:?})", t0.elapsed());
        assert!(matches!(held.await, Err(WorkerError::Exited(_))));
        events.online().await;
        assert_eq!(worker.ask(Sum(vec![7])).await.unwrap(), 7);
        worker.terminate();
        events.successful_exit().await;
    });
}

/// A real `sshd` on 127.0.0.1 (a port, keys and configuration of the
/// test's own), and a worker launched through `ssh`, as on another host:
/// it connects back over TCP, answers, and its exit code comes back
/// through `ssh`. Skipped, saying so, where `sshd` is not installed (CI
/// installs it).
pub fn a_worker_launched_through_a_real_ssh() {
    let sshd = std::path::Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        println!("SKIPPED: /usr/sbin/sshd is not installed (openssh-server), so ssh was not tried");
        return;
    }
    let dir = std::env::temp_dir().join(format!("aww-sshd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keygen = |name: &str| {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(name))
            .status()
            .expect("ssh-keygen runs");
        assert!(made.success());
    };
    keygen("host_key");
    keygen("client_key");
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    // sshd as root wants its privilege separation directory.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opt = |kv: String| ["-o".to_owned(), kv];
    let path = |name: &str| dir.join(name).display().to_string();
    let mut daemon = std::process::Command::new(sshd)
        .args(["-D", "-e", "-f", "/dev/null"])
        .args(opt(format!("Port={port}")))
        .args(opt("ListenAddress=127.0.0.1".into()))
        .args(opt(format!("HostKey={}", path("host_key"))))
        .args(opt(format!("AuthorizedKeysFile={}", path("authorized_keys"))))
        .args(opt(format!("PidFile={}", path("sshd.pid"))))
        .args(opt("StrictModes=no".into()))
        .args(opt("UsePAM=no".into()))
        .args(opt("PermitRootLogin=yes".into()))
        .args(opt("PasswordAuthentication=no".into()))
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("sshd starts");
    let up = (0..600).any(|_| {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(
        up,
        "sshd did not listen within 30 s: {:?}",
        std::fs::read_to_string(dir.join("sshd.log"))
    );
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let launcher = [
        "ssh".to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-i".to_owned(),
        path("client_key"),
        "-o".to_owned(),
        "StrictHostKeyChecking=no".to_owned(),
        "-o".to_owned(),
        "UserKnownHostsFile=/dev/null".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        "LogLevel=ERROR".to_owned(),
        format!("{user}@127.0.0.1"),
        "--".to_owned(),
    ];
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .transport(loopback())
            .launcher(launcher)
            .handshake_timeout(Duration::from_secs(30))
            .start()
            .unwrap();
        assert_eq!(worker.ask(Sum(vec![20, 22])).await.unwrap(), 42);
        // Started by sshd, not by us: its parent is a process of sshd's.
        let pid = worker.ask(WhichPid).await.unwrap();
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default();
        assert_ne!(ppid, std::process::id().to_string(), "the worker is sshd's child, not ours");
        worker.post(Cmd::Echo(0));
        assert_eq!(events.message().await.data, Reply::Echo(0));
        // Its exit code, through ssh; but it ended without its close, and
        // ssh's status may or may not be the worker's: lost.
        worker.post(Cmd::Exit(7));
        let status = events.exit().await;
        assert_eq!((status.code, status.lost), (Some(7), Some(Lost::Disconnected)), "{status:?}");
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
