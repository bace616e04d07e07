//! Text a worker chooses that the parent keeps: its error reports and what
//! a decoder's error quotes of its posts. Raw workers (entries "tf-...")
//! answer the hello by hand, then flood; each role runs in a process of its
//! own and measures the parent's peak RSS (from a review, 2026-12-07: the
//! parent held 48 reports of 32 MiB, 1.53 GiB, and 48 decode errors of
//! 8 MiB, outside every bound in bytes).

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use actix_webworker::{Codec, Event, ExitStatus, Limits, RestartPolicy, Worker, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;
use crate::hostile::{flood, handshake, HELD_BACK};

pub fn trials() -> Vec<Trial> {
    crate::trials![
        text_floods::error_reports_are_cut_and_held_to_the_window,
        text_floods::a_decoders_error_quotes_at_most_a_kilobyte,
        text_floods::error_reports_count_in_the_all_workers_total,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![
        text_floods::error_flood_role,
        text_floods::json_decode_flood_role,
        text_floods::error_total_role,
    ]
}

/// Runs a flooding raw worker when this process was started as one.
pub fn run_if_text_flooder() {
    let Ok(entry) = std::env::var("ACTIX_WEBWORKER_ENTRY") else { return };
    let Some(scenario) = entry.strip_prefix("tf-") else { return };
    let fd: i32 = std::env::var("ACTIX_WEBWORKER_FD").unwrap().parse().unwrap();
    // SAFETY: the parent gave us this socket.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    handshake(&mut sock, None, None);
    let len = if scenario.ends_with("-32m") { 32usize << 20 } else { 8usize << 20 };
    match scenario {
        "error-flood" | "error-flood-32m" => {
            // Error (kind 6) of an ErrorReport whose message is 8 MiB:
            // bincode: varint length (252 + u32), the bytes, then four
            // `None`s (file, line, column, backtrace). 48 are 384 MiB.
            let mut msg = vec![6, 0, 252];
            msg.extend_from_slice(&(len as u32).to_le_bytes());
            msg.resize(msg.len() + len, b'x');
            msg.extend_from_slice(&[0, 0, 0, 0]);
            flood(&sock, &ws_frame(2, &msg), 48)
        }
        "json-decode-flood" => {
            // A post (kind 2) whose JSON payload is a string of 8 MiB: no
            // variant of `Reply` has that name, and serde_json's error
            // quotes it whole ("unknown variant `xxx…`").
            let mut msg = vec![2, 0, b'"'];
            msg.resize(msg.len() + len, b'x');
            msg.push(b'"');
            flood(&sock, &ws_frame(2, &msg), 48)
        }
        other => panic!("no such flood: {other}"),
    }
}

fn raw_builder(entry: &str) -> actix_webworker::WorkerBuilder<Test> {
    Worker::<Test>::builder()
        .entry(entry)
        .env("RUST_BACKTRACE", "0")
        .restart(RestartPolicy::never())
        .by_exec()
}

/// A flood of large events under `limits`, its event stream not read
/// until the worker has gone: the parent's peak growth (KiB), how the
/// worker ended, the events it made, and the most text one of them held.
async fn flood_into_an_unread_stream(
    entry: &str,
    codec: Codec,
    limits: Limits,
) -> (u64, ExitStatus, usize, usize) {
    let (good, mut good_events) = start();
    assert_eq!(good.ask(Sum(vec![20, 22])).await.unwrap(), 42);
    good.terminate();
    good_events.exit().await;
    let before = status_kib("VmRSS:");
    let (_worker, mut events) =
        raw_builder(entry).codec(codec).limits(limits).start_with_events().unwrap();
    let online = events.next().await.unwrap();
    assert!(matches!(online.kind, Event::Online), "{:?}", online.kind);
    let pid = online.pid;
    let gone = tokio::task::spawn_blocking(move || wait_gone(pid, WAIT)).await.unwrap();
    assert!(gone, "the flood never ended");
    let grew = status_kib("VmHWM:").saturating_sub(before);
    let (mut made, mut longest) = (0, 0);
    let status = loop {
        match events.next().await.unwrap().kind {
            Event::Error(r) => (made, longest) = (made + 1, longest.max(r.message.len())),
            Event::WireError(e) => (made, longest) = (made + 1, longest.max(e.to_string().len())),
            Event::Exit(status) => break status,
            other => panic!("unexpected {other:?}"),
        }
    };
    (grew, status, made, longest)
}

/// Run alone by `error_reports_are_cut_and_held_to_the_window`.
pub fn error_flood_role() {
    run(async {
        for (entry, limits, window) in [
            ("tf-error-flood", Limits::default().event_window_bytes(16 << 20), "16 MiB"),
            ("tf-error-flood-32m", Limits::default(), "64 MiB"),
        ] {
            let (grew, status, reports, longest) =
                flood_into_an_unread_stream(entry, Codec::Bincode, limits).await;
            println!(
                "{reports} reports of {} MiB, a window of {window}: the parent's peak +{grew} \
                 KiB, the longest message {longest} bytes; worker {status}",
                if entry.ends_with("32m") { 32 } else { 8 }
            );
            assert!(longest <= 16 << 10, "a report's message of {longest} bytes kept");
            // Each frame of 8 or 32 MiB is read whole before it is cut.
            assert!(grew < 160 << 10, "the parent grew by {grew} KiB");
        }
    });
}

/// A worker's 48 error reports, each of an 8 MiB message (then 32 MiB),
/// never handled by the parent: each is cut to 16 KiB, its text counted in
/// the worker's window; the parent grows by what reading a frame takes
/// (before: +401,280 KiB and +1,605,812 KiB, all held).
pub fn error_reports_are_cut_and_held_to_the_window() {
    print!("{}", isolated("text_floods::error_flood_role"));
}

/// Run alone by `a_decoders_error_quotes_at_most_a_kilobyte`.
pub fn json_decode_flood_role() {
    run(async {
        let limits = Limits::default().event_window_bytes(16 << 20);
        let (grew, status, errors, longest) =
            flood_into_an_unread_stream("tf-json-decode-flood", Codec::Json, limits).await;
        println!(
            "{errors} decode errors of JSON posts of 8 MiB: the parent's peak +{grew} KiB, the \
             longest {longest} bytes; worker {status}"
        );
        assert!(longest <= 1200, "an error of {longest} bytes kept");
        // A post of 8 MiB and the error quoting it are made whole, then
        // let go: what one of them takes, a few times over.
        assert!(grew < 64 << 10, "the parent grew by {grew} KiB");
    });
}

/// 48 posts whose JSON payload is a string of 8 MiB, no variant's name:
/// serde_json's error quotes it whole; the event keeps at most 1 KiB of
/// it (before: 48 errors of 8,388,856 bytes held, +418,388 KiB).
pub fn a_decoders_error_quotes_at_most_a_kilobyte() {
    print!("{}", isolated("text_floods::json_decode_flood_role"));
}

/// Run alone by `error_reports_count_in_the_all_workers_total`.
pub fn error_total_role() {
    run(async {
        // A window of its own far above what 48 cut reports hold (each
        // 16 KiB of text: 768 KiB); a total of all workers' events of
        // 128 KiB, which eight of them fill.
        let limits = Limits::default().events_total_bytes(128 << 10);
        let (grew, status, reports, _) =
            flood_into_an_unread_stream("tf-error-flood", Codec::Bincode, limits).await;
        println!(
            "48 reports of 8 MiB under a total of 128 KiB: {reports} read, the parent's peak \
             +{grew} KiB; worker {status}"
        );
        assert_eq!(status.code, Some(HELD_BACK), "reports never held back: {status}");
        assert!(reports < 48, "all {reports} reports read");
    });
}

/// Error reports count in the total of all workers' events
/// (`events_total_bytes`), as posts do: a worker's reports unhandled fill
/// it, and the worker is read no further (before: only its own window
/// counted them, and all 48 were read under a total of 128 KiB).
pub fn error_reports_count_in_the_all_workers_total() {
    print!("{}", isolated("text_floods::error_total_role"));
}
