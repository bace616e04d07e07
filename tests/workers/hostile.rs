//! A worker that misbehaves on the wire. These "raw" workers do not use the
//! runtime: they answer the hello by hand, then write something hostile.
//! Each must give a typed error event for that worker only, and the parent
//! and other workers go on.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

use actix_webworker::{Event, Limits, WireError, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        hostile::garbage_bytes,
        hostile::truncated_frame,
        hostile::four_gib_frame,
        hostile::text_frame,
        hostile::unknown_kind,
        hostile::other_protocol_version,
        hostile::batch_with_an_entry_cut_short,
        hostile::batch_inside_a_batch,
        hostile::a_batch_entry_over_the_message_limit,
        hostile::undecodable_payload_leaves_the_connection_up,
        hostile::claimed_descriptors_that_never_came,
        hostile::descriptors_no_message_claims_are_reported_and_closed,
        hostile::more_descriptors_claimed_than_a_message_may_carry,
        hostile::a_batch_larger_than_any_writer_makes,
        hostile::a_hello_that_names_another_process,
        hostile::a_ping_to_the_parent_ends_the_connection,
        hostile::a_terminate_to_the_parent_ends_the_connection,
        hostile::answers_to_requests_never_asked_are_dropped_and_the_connection_goes_on,
    ]
}

/// Reads the parent's hello and answers with the same fields (so the
/// fingerprint matches), or with `version` when given; the pid is ours, or
/// `pid` when given.
pub fn handshake(sock: &mut UnixStream, version: Option<u32>, pid: Option<u32>) {
    let mut hello = read_frame(sock).expect("the parent's hello");
    if let Some(v) = version {
        hello[6..10].copy_from_slice(&v.to_le_bytes());
    }
    // The hello names the process that sends it.
    let pid = pid.unwrap_or_else(std::process::id);
    hello[18..22].copy_from_slice(&pid.to_le_bytes());
    sock.write_all(&ws_frame(2, &hello)).unwrap();
}

/// `sendmsg` of `bytes` with `fds` (SCM_RIGHTS); false once the parent
/// has closed the connection.
fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[i32]) -> bool {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
        Ok(n) => {
            assert_eq!(n, bytes.len());
            true
        }
        Err(_) => false,
    }
}

/// Exit code of a flooding raw worker that the parent stopped reading.
pub const HELD_BACK: i32 = 42;
/// Exit code of a flooding raw worker that wrote all it had.
pub const NEVER_HELD_BACK: i32 = 43;

/// Writes `frame` over and over, never reading. Exits with [`HELD_BACK`]
/// once the socket has taken nothing for 3 s (the parent reads no more),
/// or [`NEVER_HELD_BACK`] after `max` frames.
pub fn flood(sock: &UnixStream, frame: &[u8], max: u64) -> ! {
    sock.set_nonblocking(true).unwrap();
    let (mut off, mut frames) = (0, 0u64);
    loop {
        match (&*sock).write(&frame[off..]) {
            Ok(n) => {
                off += n;
                if off == frame.len() {
                    (off, frames) = (0, frames + 1);
                    if frames == max {
                        std::process::exit(NEVER_HELD_BACK);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd =
                    libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 3000) } == 0 {
                    std::process::exit(HELD_BACK);
                }
            }
            Err(_) => std::process::exit(2),
        }
    }
}

/// [`flood`] with `fds` sent along with each frame.
fn flood_with_fds(sock: &UnixStream, frame: &[u8], fds: &[i32], max: u64) -> ! {
    // Blocking, for at most 3 s a write: longer is being held back.
    sock.set_write_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
    for _ in 0..max {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let iov = [std::io::IoSlice::new(frame)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let sent = match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => std::process::exit(HELD_BACK),
            Err(_) => std::process::exit(2),
        };
        match (&*sock).write_all(&frame[sent..]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::process::exit(HELD_BACK),
            Err(_) => std::process::exit(2),
        }
    }
    // Written all; held back only if the parent then reads no more.
    std::process::exit(NEVER_HELD_BACK)
}

/// A batch of `n` posts of `Reply::Echo(7)`.
fn echo_batch(n: usize) -> Vec<u8> {
    let mut batch = vec![9, 0];
    for _ in 0..n {
        batch.extend_from_slice(&4u32.to_le_bytes());
        batch.extend_from_slice(&[2, 0, 0, 7]);
    }
    batch
}

/// A batch of `n` bare messages of `kind` (a Ping is 13).
fn bare_batch(kind: u8, n: usize) -> Vec<u8> {
    let mut batch = vec![9, 0];
    for _ in 0..n {
        batch.extend_from_slice(&2u32.to_le_bytes());
        batch.extend_from_slice(&[kind, 0]);
    }
    batch
}

/// A memfd of `len` bytes, sealed against writing, shrinking and growing
/// if `sealed`.
fn memfd(len: i64, sealed: bool) -> std::os::fd::OwnedFd {
    // SAFETY: memfd_create, ftruncate and fcntl on the descriptor made here.
    unsafe {
        let fd = libc::memfd_create(c"hostile".as_ptr(), libc::MFD_ALLOW_SEALING);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len), 0);
        if sealed {
            let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            assert_eq!(libc::fcntl(fd, libc::F_ADD_SEALS, seals), 0);
        }
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

/// Reads until the parent closes the connection (or kills us), then exits.
fn drain(mut sock: UnixStream) -> ! {
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
    std::process::exit(0)
}

/// Runs a raw worker when this process was started as one.
pub fn run_if_raw_worker() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else {
        return;
    };
    let Some(scenario) = entry.strip_prefix("raw-") else {
        return;
    };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    handshake(&mut sock, (scenario == "version").then_some(999), (scenario == "liar").then_some(1));
    match scenario {
        "garbage" => sock.write_all(&[0xff; 64]).unwrap(),
        "truncated" => {
            // Claims 100 bytes, sends 10, exits.
            let mut f = vec![0x82, 100];
            f.extend_from_slice(&[2; 10]);
            sock.write_all(&f).unwrap();
            std::process::exit(0);
        }
        "half-16mib" => {
            // A 16 MiB post, of which 1 MiB is written before the worker dies.
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&((16u64 << 20) + 8).to_be_bytes());
            f.extend_from_slice(&[2, 0, 1]);
            f.extend(std::iter::repeat_n(7u8, 1 << 20));
            sock.write_all(&f).unwrap();
            std::process::exit(1);
        }
        "huge" => {
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&(4u64 << 30).to_be_bytes());
            f.extend_from_slice(&[0; 64]);
            sock.write_all(&f).unwrap();
        }
        "text" => sock.write_all(&ws_frame(1, b"hello")).unwrap(),
        "kind" => sock.write_all(&ws_frame(2, &[99, 0])).unwrap(),
        "version" => {}
        "undecodable" => {
            // A post whose payload is no `Reply` (variant 200), then a valid
            // `Reply::Echo(7)`: bincode writes the variant index and the
            // number as one varint byte each.
            sock.write_all(&ws_frame(2, &[2, 0, 200, 1, 2, 3])).unwrap();
            sock.write_all(&ws_frame(2, &[2, 0, 0, 7])).unwrap();
        }
        "batch-cut" => {
            // A batch of two posts whose second entry claims 50 bytes and
            // has 4.
            let mut batch = vec![9, 0];
            batch.extend_from_slice(&4u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 7]);
            batch.extend_from_slice(&50u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 8]);
            sock.write_all(&ws_frame(2, &batch)).unwrap();
        }
        "batch-nested" => {
            // A valid post in a batch, then a batch inside the batch.
            let mut batch = vec![9, 0];
            batch.extend_from_slice(&4u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 7]);
            batch.extend_from_slice(&2u32.to_le_bytes());
            batch.extend_from_slice(&[9, 0]);
            sock.write_all(&ws_frame(2, &batch)).unwrap();
        }
        "batch-fat-entry" => {
            // A valid post, then one of 2,000 bytes, in one batch of 2,012.
            let mut batch = vec![9, 0];
            batch.extend_from_slice(&4u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 7]);
            batch.extend_from_slice(&2000u32.to_le_bytes());
            batch.extend_from_slice(&[2, 0, 0, 8]);
            batch.extend_from_slice(&[0; 1996]);
            sock.write_all(&ws_frame(2, &batch)).unwrap();
        }
        "stray-fds" => sock.write_all(&ws_frame(2, &[2, 1, 0, 7])).unwrap(),
        "extra-fds" => {
            // A valid post that claims no descriptor, sent with one.
            let devnull = std::fs::File::open("/dev/null").unwrap();
            assert!(send_with_fds(&sock, &ws_frame(2, &[2, 0, 0, 7]), &[devnull.as_raw_fd()]));
            sock.write_all(&ws_frame(2, &[2, 0, 0, 8])).unwrap();
            std::process::exit(0);
        }
        "liar" => {}
        "many-fds" => sock.write_all(&ws_frame(2, &[2, 100, 0, 7])).unwrap(),
        "batch-bomb" => sock.write_all(&ws_frame(2, &echo_batch(128 * 1024))).unwrap(),
        "fd-flood" => {
            // A frame that never ends (60 MiB announced), its bytes coming
            // one at a time, each with 253 descriptors.
            let mut header = vec![0x82, 127];
            header.extend_from_slice(&(60u64 << 20).to_be_bytes());
            sock.write_all(&header).unwrap();
            let devnull = std::fs::File::open("/dev/null").unwrap();
            let fds = [devnull.as_raw_fd(); 253];
            for _ in 0..100 {
                if !send_with_fds(&sock, &[0], &fds) {
                    break;
                }
            }
        }
        "fd-burst" => {
            // One sendmsg with 253 descriptors, inside a frame.
            sock.write_all(&[0x82, 126, 1, 0]).unwrap();
            let devnull = std::fs::File::open("/dev/null").unwrap();
            send_with_fds(&sock, &[0], &[devnull.as_raw_fd(); 253]);
        }
        "reply-flood" => {
            // Requests of a type the parent does not serve: each is answered
            // with a failure, which this worker never reads.
            let mut request = vec![3, 0];
            request.extend_from_slice(&0u64.to_le_bytes());
            request.extend_from_slice(&0xdead_u64.to_le_bytes());
            let mut batch = vec![9, 0];
            for _ in 0..2048 {
                batch.extend_from_slice(&(request.len() as u32).to_le_bytes());
                batch.extend_from_slice(&request);
            }
            flood(&sock, &ws_frame(2, &batch), 1000);
        }
        // Pings go parent -> worker only; each one answered would be a
        // Pong queued in the parent for a worker that never reads.
        "ping-flood" => flood(&sock, &ws_frame(2, &bare_batch(13, 11_000)), 2000),
        "terminate" => sock.write_all(&ws_frame(2, &[7, 0])).unwrap(),
        "big-post-flood" => {
            // Posts of `Reply::Blob` (variant 1) of 8 MiB: few events, many
            // bytes. 48 of them are 384 MiB.
            let len = 8u32 << 20;
            let mut post = vec![2, 0, 1, 252];
            post.extend_from_slice(&len.to_le_bytes());
            post.resize(post.len() + len as usize, 7);
            flood(&sock, &ws_frame(2, &post), 48)
        }
        "big-ask-flood" => {
            // Requests `GetConfig` of 8 MiB each to a served actor that
            // takes its time: each request is held until it is answered.
            let mut fnv = 0xcbf2_9ce4_8422_2325_u64;
            for b in actix_webworker::request_name::<GetConfig>().bytes() {
                fnv = (fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            // Each under an id of its own: one under an id still being
            // answered is refused, not held.
            let len = 8u32 << 20;
            let requests: Vec<u8> = (1..=48u64)
                .flat_map(|id| {
                    let mut request = vec![3, 0];
                    request.extend_from_slice(&id.to_le_bytes());
                    request.extend_from_slice(&fnv.to_le_bytes());
                    request.push(252);
                    request.extend_from_slice(&len.to_le_bytes());
                    request.resize(request.len() + len as usize, b'x');
                    ws_frame(2, &request)
                })
                .collect();
            flood(&sock, &requests, 1)
        }
        "fd-post-flood" => {
            // Posts of `Reply::Echo(7)` claiming 64 descriptors each, sent
            // with them: few bytes, many descriptors (the socket's queue
            // takes hundreds of such posts).
            let devnull = std::fs::File::open("/dev/null").unwrap();
            flood_with_fds(&sock, &ws_frame(2, &[2, 64, 0, 7]), &[devnull.as_raw_fd(); 64], 2000)
        }
        "shared-amplify" => {
            // One sealed memfd of 16 MiB, written, named 64 times in each
            // of 4 posts (`Reply::Shared`, variant 16, with 64 buffers,
            // each `Descriptor(i, 16 MiB)`), each with 64 duplicates of it.
            let len = 16usize << 20;
            let memfd = memfd(0, false);
            let bytes = vec![9u8; len];
            (&std::fs::File::from(memfd.try_clone().unwrap())).write_all(&bytes).unwrap();
            let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            // SAFETY: fcntl on the descriptor made here.
            assert_eq!(unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) }, 0);
            let mut post = vec![2, 64, 16, 64];
            for i in 0..64u8 {
                post.extend_from_slice(&[1, i, 252]);
                post.extend_from_slice(&(len as u32).to_le_bytes());
            }
            for _ in 0..4 {
                assert!(send_with_fds(&sock, &ws_frame(2, &post), &[memfd.as_raw_fd(); 64]));
            }
        }
        "cancel-flood" => {
            // Cancels (kind 11) of requests the parent never sent: each
            // costs the parent a look-up, and must cost it nothing kept.
            let mut batch = vec![9, 0];
            for id in 0..4_900u64 {
                batch.extend_from_slice(&10u32.to_le_bytes());
                batch.extend_from_slice(&[11, 0]);
                batch.extend_from_slice(&id.to_le_bytes());
            }
            flood(&sock, &ws_frame(2, &batch), 2_000)
        }
        "stray-answers" => {
            // Answers (4) and failures (5) for requests never asked, each
            // twice, then a post that must still arrive.
            for id in [0u64, 1, 2, 3, 1 << 40, u64::MAX] {
                for kind in [4u8, 5, 4, 5] {
                    let mut answer = vec![kind, 0];
                    answer.extend_from_slice(&id.to_le_bytes());
                    answer.extend_from_slice(&[0, 7]);
                    sock.write_all(&ws_frame(2, &answer)).unwrap();
                }
            }
            sock.write_all(&ws_frame(2, &[2, 0, 0, 7])).unwrap();
        }
        "event-flood" => flood(&sock, &ws_frame(2, &echo_batch(4096)), 2000),
        "shared-unsealed" | "shared-short" => {
            // A post of `Reply::Shared` (variant 16) with one buffer
            // (`SharedBytes::Descriptor`, variant 1) claiming descriptor 0
            // and 4096 or 8192 bytes (bincode varints: 251, then a u16);
            // the memfd sent has 4096 bytes, unsealed or sealed.
            let memfd = memfd(4096, scenario == "shared-short");
            let claimed: u8 = if scenario == "shared-short" { 0x20 } else { 0x10 };
            let post = [2, 1, 16, 1, 1, 0, 251, 0, claimed];
            assert!(send_with_fds(&sock, &ws_frame(2, &post), &[memfd.as_raw_fd()]));
            sock.write_all(&ws_frame(2, &[2, 0, 0, 7])).unwrap();
        }
        other => panic!("unknown raw scenario {other}"),
    }
    drain(sock)
}

/// Starts raw worker `scenario` beside a well-behaved one, checks the error
/// event with `check`, the exit, and that the good worker still answers.
fn hostile(scenario: &str, check: impl Fn(&WireError) -> bool) {
    run(async {
        let (good, mut good_events) = start();
        let (rec, mut events) = events::<Test>();
        let _bad = builder(rec).by_exec().entry(format!("raw-{scenario}")).start().unwrap();
        loop {
            match events.next().await {
                Event::WireError(e) if check(&e) => break,
                Event::WireError(e) => panic!("{scenario}: unexpected wire error {e:?}"),
                Event::Exit(s) => panic!("{scenario}: exited ({s}) with no wire error"),
                _ => continue,
            }
        }
        events.exit().await;
        good.post(Cmd::Echo(0));
        assert_eq!(good_events.message().await.data, Reply::Echo(0));
        good.terminate();
        assert!(good_events.exit().await.success());
    });
}

pub fn garbage_bytes() {
    hostile("garbage", |e| matches!(e, WireError::Transport(_)));
}

pub fn truncated_frame() {
    hostile("truncated", |e| matches!(e, WireError::CutOff));
}

pub fn four_gib_frame() {
    hostile("huge", |e| matches!(e, WireError::TooLarge { size, .. } if *size == 4 << 30));
}

pub fn text_frame() {
    hostile("text", |e| matches!(e, WireError::TextFrame));
}

pub fn unknown_kind() {
    hostile("kind", |e| matches!(e, WireError::UnknownKind(99)));
}

pub fn other_protocol_version() {
    hostile("version", |e| matches!(e, WireError::VersionMismatch { theirs: 999, .. }));
}

/// The messages of a batch before a bad entry arrive; the bad entry is a
/// typed error.
fn hostile_batch(scenario: &str, check: impl Fn(&WireError) -> bool) {
    hostile_batch_within(scenario, Limits::default(), check)
}

/// [`hostile_batch`], the parent's limits `limits`.
fn hostile_batch_within(scenario: &str, limits: Limits, check: impl Fn(&WireError) -> bool) {
    run(async {
        let (rec, mut events) = events::<Test>();
        let bad = builder(rec).by_exec().limits(limits).entry(format!("raw-{scenario}"));
        let _bad = bad.start().unwrap();
        let mut before = Vec::new();
        loop {
            match events.next().await {
                Event::Message(m) => before.push(m.data),
                Event::WireError(e) if check(&e) => break,
                Event::WireError(e) => panic!("{scenario}: unexpected wire error {e:?}"),
                Event::Exit(s) => panic!("{scenario}: exited ({s}) with no wire error"),
                _ => continue,
            }
        }
        assert_eq!(before, [Reply::Echo(7)], "{scenario}");
        events.exit().await;
    });
}

pub fn batch_with_an_entry_cut_short() {
    hostile_batch("batch-cut", |e| matches!(e, WireError::Truncated { needed: 54, got: 8 }));
}

pub fn batch_inside_a_batch() {
    hostile_batch("batch-nested", |e| matches!(e, WireError::Unexpected(_)));
}

/// A batch is taken whatever the message limit (a writer of a larger
/// limit batches small messages past ours), each message in it held to
/// the limit: the post before the fat entry arrives, the entry is refused.
pub fn a_batch_entry_over_the_message_limit() {
    let limits = Limits::default().max_message_size(1000);
    let too_large = |e: &WireError| matches!(e, WireError::TooLarge { size: 2000, limit: 1000 });
    hostile_batch_within("batch-fat-entry", limits, too_large);
}

pub fn claimed_descriptors_that_never_came() {
    hostile("stray-fds", |e| matches!(e, WireError::MissingFds { claimed: 1, available: 0 }));
}

pub fn descriptors_no_message_claims_are_reported_and_closed() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let _worker = builder(rec).by_exec().entry("raw-extra-fds").start().unwrap();
        let mut got = Vec::new();
        let mut unclaimed = None;
        loop {
            match events.next().await {
                Event::Message(m) => {
                    assert!(m.fds.is_empty(), "a message got a descriptor it did not claim");
                    got.push(m.data);
                }
                Event::WireError(WireError::UnclaimedFds { count }) => unclaimed = Some(count),
                Event::Exit(_) => break,
                Event::Online => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, [Reply::Echo(7), Reply::Echo(8)]);
        assert_eq!(unclaimed, Some(1));
    });
}

pub fn undecodable_payload_leaves_the_connection_up() {
    run(async {
        let (rec, mut events) = events::<Test>();
        // A raw worker ignores the terminate: a short grace period.
        let grace = std::time::Duration::from_millis(100);
        let worker = builder(rec).by_exec().entry("raw-undecodable").grace_period(grace).start().unwrap();
        loop {
            match events.next().await {
                Event::Online => continue,
                Event::WireError(WireError::Decode(_)) => break,
                other => panic!("expected a decode error, got {other:?}"),
            }
        }
        // The next, valid message still arrives.
        assert_eq!(events.message().await.data, Reply::Echo(7));
        worker.terminate();
        events.exit().await;
    });
}

pub fn more_descriptors_claimed_than_a_message_may_carry() {
    hostile("many-fds", |e| matches!(e, WireError::TooManyFds { count: 100, limit: 64 }));
}

pub fn a_batch_larger_than_any_writer_makes() {
    hostile(
        "batch-bomb",
        |e| matches!(e, WireError::BatchTooLarge { size, .. } if *size == 2 + 128 * 1024 * 8),
    );
}

pub fn a_hello_that_names_another_process() {
    hostile("liar", |e| matches!(e, WireError::WrongPeer { theirs: 1, .. }));
}

/// A worker that sends Pings (which only the parent sends) is ended at the
/// first: before, each was answered with a Pong queued past every bound,
/// and a worker that never read grew the parent by 80 MiB/s.
pub fn a_ping_to_the_parent_ends_the_connection() {
    hostile("ping-flood", |e| matches!(e, WireError::Unexpected("ping")));
}

pub fn a_terminate_to_the_parent_ends_the_connection() {
    hostile("terminate", |e| matches!(e, WireError::Unexpected("terminate")));
}

/// Answers and failures for ids the parent never asked (0 to 3, 2^40,
/// `u64::MAX`, each twice) are dropped, and the post after them arrives.
pub fn answers_to_requests_never_asked_are_dropped_and_the_connection_goes_on() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let grace = std::time::Duration::from_millis(100);
        let worker = builder(rec).by_exec().entry("raw-stray-answers").grace_period(grace).start().unwrap();
        loop {
            match events.next().await {
                Event::Online => {}
                Event::Message(m) => {
                    assert_eq!(m.data, Reply::Echo(7));
                    break;
                }
                other => panic!("expected the post after the stray answers, got {other:?}"),
            }
        }
        worker.terminate();
        events.exit().await;
    });
}
