//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! They run the decoding a peer's bytes go through, on arbitrary input:
//! the envelope header, the hello, the payload codec, the whole reading
//! path (WebSocket framing over the fd-aware socket, then the envelope),
//! and the parent's whole side of a connection (reader, dispatch, answers,
//! events to a recipient) with descriptors sent along. Any panic, hang,
//! unbounded allocation or leaked descriptor they find is a bug.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorReport, WireError};
use crate::wire::{codec, frame, socket};

/// A message type with the shapes users send: enums, strings, byte
/// blocks, sequences, options, nesting.
#[derive(Serialize, Deserialize, Debug)]
enum Sample {
    Unit,
    Text(String),
    Bytes(#[serde(with = "serde_bytes_like")] Vec<u8>),
    Numbers(Vec<u64>),
    Nested { name: Option<String>, inner: Vec<(u32, String)> },
}

/// `serde_bytes` without the dependency: a `Vec<u8>` as one byte block.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Decodes one message as the receiving side does after the WebSocket
/// layer: header, then the payload as the kind says.
pub fn envelope(data: &[u8]) {
    let Ok((header, payload)) = frame::decode(data) else { return };
    if header.kind == frame::Kind::Batch {
        // Each entry as the reader hands it on (nested batches it refuses).
        let mut pos = 2;
        while let Ok(Some(range)) = frame::batch_entry(data, pos) {
            pos = range.end;
            if data[range.clone()].first() != Some(&(frame::Kind::Batch as u8)) {
                envelope(&data[range]);
            }
        }
        return;
    }
    let _ = match header.kind {
        frame::Kind::Hello => frame::read_hello(payload).map(drop),
        frame::Kind::Error => codec::decode::<ErrorReport>(payload).map(drop),
        frame::Kind::Failed => {
            codec::decode::<crate::session::requests::Failure>(payload).map(drop)
        }
        _ => codec::decode::<Sample>(payload).map(drop),
    };
}

/// Feeds `data` as raw bytes from a peer into the reading side (WebSocket
/// framing, size limits, the envelope) until it ends or fails.
pub fn stream(data: &[u8]) {
    let Ok((mut ours, theirs)) = std::os::unix::net::UnixStream::pair() else { return };
    // The whole input fits a socket buffer for the sizes fuzzers use; the
    // peer's end is then closed, so the reader sees EOF after the data.
    if ours.write_all(&data[..data.len().min(100_000)]).is_err() {
        return;
    }
    drop(ours);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async move {
        let Ok(conn) = socket::open(theirs, 1 << 20).await else { return };
        let (mut reader, _writer) = conn.split();
        while let Some(item) = reader.next().await {
            match item {
                Ok(inbound) => envelope(&reconstruct(&inbound)),
                Err(WireError::Decode(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

/// A protocol for the parent's side: samples both ways.
struct FuzzProtocol;

impl crate::Protocol for FuzzProtocol {
    type ToWorker = Sample;
    type FromWorker = Sample;
}

/// A request the fuzzed parent answers.
#[derive(Serialize, Deserialize)]
struct Double(u64);

impl actix::Message for Double {
    type Result = u64;
}

/// Counts the events it is sent, and drops them (closing any descriptors).
struct Counter(u64);

impl actix::Actor for Counter {
    type Context = actix::Context<Self>;
}

impl actix::Handler<crate::WorkerEvent<FuzzProtocol>> for Counter {
    type Result = ();

    fn handle(&mut self, _: crate::WorkerEvent<FuzzProtocol>, _: &mut Self::Context) {
        self.0 += 1;
    }
}

/// Answered once the events before it are handled.
struct Settled;

impl actix::Message for Settled {
    type Result = u64;
}

impl actix::Handler<Settled> for Counter {
    type Result = u64;

    fn handle(&mut self, _: Settled, _: &mut Self::Context) -> u64 {
        self.0
    }
}

/// The records of a `link` input: bytes to send, each time with this many
/// descriptors (copies of `/dev/null`).
fn records(data: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [nfds, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        // Descriptors ride on at least one byte.
        let bytes = if bytes.is_empty() { vec![0] } else { bytes.to_vec() };
        out.push((bytes, usize::from(*nfds).min(253)));
        rest = next;
    }
    out
}

/// How many descriptors of this process point to `/dev/null`: what the
/// peer of `link` sends (counted apart from any other test's descriptors).
fn devnull_fds() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|p| p == std::path::Path::new("/dev/null"))
        })
        .count()
}

/// Plays a worker that sends `data` (records: a descriptor count, a
/// little-endian `u16` length, the bytes; the stream after the hello)
/// against the parent's side of a connection: its reader, its dispatch of
/// posts, errors, requests (one type answered) and answers, the events
/// window towards a counting recipient, and the writer of its answers. At
/// the end, every descriptor received must have been closed.
pub fn link(data: &[u8]) {
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    let before = devnull_fds();
    let script = records(&data[..data.len().min(1 << 20)]);
    let Ok((peer, ours)) = std::os::unix::net::UnixStream::pair() else { return };
    let Ok(devnull) = std::fs::File::open("/dev/null") else { return };
    let (Ok(peer_reads), Ok(devnull_fd)) = (peer.try_clone(), Ok::<_, ()>(devnull.as_raw_fd()))
    else {
        return;
    };
    // The peer writes its script, and reads (and drops) what it is sent.
    let writes = std::thread::spawn(move || {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let mut budget = 5_000;
        for (bytes, nfds) in script {
            let nfds = nfds.min(budget);
            budget -= nfds;
            let fds = vec![devnull_fd; nfds];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let cmsg: &[ControlMessage<'_>] = if nfds > 0 { &cmsg } else { &[] };
            let iov = [std::io::IoSlice::new(&bytes)];
            if sendmsg::<()>(peer.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None).is_err() {
                break;
            }
        }
        // The end of the script: the parent reads to here, then EOF.
        let _ = peer.shutdown(std::net::Shutdown::Write);
    });
    let reads = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64 * 1024];
        while matches!((&peer_reads).read(&mut buf), Ok(n) if n > 0) {}
    });
    let system = actix::System::new();
    system.block_on(async move {
        use actix::Actor;
        let counter = Counter(0).start();
        let Ok(conn) = socket::open(ours, 1 << 20).await else { return };
        let (reader, sink) = conn.split();
        let outbox = Arc::new(crate::wire::outbox::Outbox::new(1024, 1 << 20));
        let mut handlers = crate::session::requests::Handlers::new(|| None);
        handlers.insert::<Double>(|req, reply| reply.answer(&(req.0.wrapping_mul(2))));
        let shared = crate::session::Shared {
            outbox: outbox.clone(),
            pending: Arc::default(),
            handlers: std::rc::Rc::new(handlers),
            max_message_size: 1 << 20,
        };
        let events = crate::parent::sink::Events::new(
            crate::parent::sink::EventSink::Recipient(counter.clone().recipient()),
            64,
        );
        let side = crate::parent::link::ParentSide::<FuzzProtocol>::new(
            "fuzz".into(),
            0,
            events,
            Box::new(|| {}),
            outbox,
        );
        let writer = crate::wire::writer::Writer::new(sink);
        let mut session = crate::session::Session::start(reader, writer, shared, side);
        let mut never: std::pin::Pin<Box<dyn std::future::Future<Output = crate::ExitStatus>>> =
            Box::pin(std::future::pending());
        let mut status = None;
        crate::parent::link::read(&mut session, &mut never, &mut status).await;
        let unclaimed = session.reader().unclaimed_fds();
        assert!(
            unclaimed <= crate::wire::fd::MAX_UNCLAIMED_FDS + 253,
            "{unclaimed} unclaimed descriptors held"
        );
        drop(session.finish(crate::session::Finish::Now).await);
        let _ = counter.send(Settled).await;
    });
    drop(system);
    let _ = writes.join();
    let _ = reads.join();
    drop(devnull);
    let after = devnull_fds();
    assert!(after <= before, "descriptors leaked: {after} open, {before} before");
}

/// Valid inputs for the two targets, to start their corpora from: every
/// kind of envelope with payloads of each shape, and the same messages
/// framed as a peer sends them, alone and several to a stream.
/// `(target, name, bytes)`; `fuzz/seeds/` holds them, written by
/// `AWW_WRITE_SEEDS=fuzz/seeds cargo test --lib fuzzing`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let report = ErrorReport {
        message: "boom".into(),
        file: Some("src/main.rs".into()),
        line: Some(7),
        column: Some(9),
        backtrace: None,
    };
    let samples = [
        ("unit", Sample::Unit),
        ("text", Sample::Text("this is a test".into())),
        ("bytes", Sample::Bytes((0..=255).collect())),
        ("numbers", Sample::Numbers(vec![0, 1, 300, 70_000, u64::MAX])),
        (
            "nested",
            Sample::Nested {
                name: Some("n".into()),
                inner: vec![(1, "a".into()), (2, "b".into())],
            },
        ),
    ];
    let mut envelopes: Vec<(String, Vec<u8>)> = vec![("hello".into(), frame::hello(0x1234))];
    let message = |kind, nfds, id, tag, payload: &dyn erased::Encode| {
        let mut buf = Vec::new();
        frame::begin(&mut buf, frame::Header { kind, nfds, id, tag });
        payload.encode(&mut buf);
        buf
    };
    for (name, sample) in &samples {
        envelopes.push((format!("post_{name}"), message(frame::Kind::Post, 0, 0, 0, sample)));
    }
    envelopes.push(("post_fds".into(), message(frame::Kind::Post, 2, 0, 0, &samples[1].1)));
    envelopes.push(("request".into(), message(frame::Kind::Request, 0, 42, 7, &samples[3].1)));
    envelopes.push(("answer".into(), message(frame::Kind::Answer, 0, 42, 0, &samples[0].1)));
    envelopes.push(("error".into(), message(frame::Kind::Error, 0, 0, 0, &report)));
    for (name, failure) in [
        ("failed_panicked", crate::session::requests::Failure::Panicked(report.clone())),
        ("failed_unhandled", crate::session::requests::Failure::Unhandled("x::Y".into())),
        ("failed_gone", crate::session::requests::Failure::Gone),
    ] {
        envelopes.push((name.into(), message(frame::Kind::Failed, 0, 42, 0, &failure)));
    }
    let mut batch = bytes::BytesMut::new();
    frame::begin(&mut batch, frame::Header::bare(frame::Kind::Batch));
    for (_, msg) in &envelopes[1..4] {
        frame::push_batch_entry(&mut batch, msg);
    }
    envelopes.push(("batch".into(), batch.to_vec()));
    envelopes.push(("terminate".into(), frame::bare(frame::Kind::Terminate).to_vec()));
    envelopes.push(("closing".into(), frame::bare(frame::Kind::Closing).to_vec()));

    let mut out: Vec<_> =
        envelopes.iter().map(|(name, bytes)| ("envelope", name.clone(), bytes.clone())).collect();
    for (name, bytes) in &envelopes {
        out.push(("stream", name.clone(), ws_binary(bytes)));
    }
    let mut conversation = ws_binary(&envelopes[0].1);
    // Not the one that claims descriptors: none come with a fuzzer's bytes.
    for (_, bytes) in envelopes[1..].iter().filter(|(name, _)| name != "post_fds") {
        conversation.extend(ws_binary(bytes));
    }
    conversation.extend_from_slice(&[0x89, 0x01, 0x00]); // a ping
    conversation.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]); // close, 1000
                                                               // The same conversation for the parent's side, in records of 1 KiB,
                                                               // and a post whose descriptors come with it.
    let as_records = |bytes: &[u8], nfds: u8| {
        bytes.chunks(1024).fold(Vec::new(), |mut out, chunk| {
            out.push(nfds);
            out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            out.extend_from_slice(chunk);
            out
        })
    };
    out.push(("link", "conversation".into(), as_records(&conversation[..], 0)));
    let with_fds = envelopes.iter().find(|(name, _)| name == "post_fds").map(|(_, b)| b);
    if let Some(bytes) = with_fds {
        out.push(("link", "post_fds".into(), as_records(&ws_binary(bytes), 2)));
    }
    out.push(("stream", "conversation".into(), conversation));
    out.push(("stream", "large_length".into(), ws_binary(&vec![2; 70_000])));
    out
}

/// One unmasked WebSocket frame with FIN set, as either side sends it
/// (`opcode` 2: binary); also the hostile-input tests' raw frames.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    socket::frame(opcode, payload)
}

fn ws_binary(payload: &[u8]) -> Vec<u8> {
    ws_frame(2, payload)
}

/// Encoding values of different types through one closure.
mod erased {
    pub trait Encode {
        fn encode(&self, buf: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self, buf: &mut Vec<u8>) {
            crate::wire::codec::encode_into(self, buf).expect("a seed encodes");
        }
    }
}

/// The message bytes again, header included, for [`envelope`].
fn reconstruct(inbound: &socket::Inbound) -> Vec<u8> {
    let mut buf = Vec::new();
    frame::begin(&mut buf, inbound.header);
    buf.extend_from_slice(inbound.payload());
    buf
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::socket;

    #[test]
    fn the_entry_points_take_garbage() {
        for data in
            [&b""[..], b"\x02\x00\xff\xff", b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", b"\x01"]
        {
            super::envelope(data);
            super::stream(data);
        }
    }

    /// The parent's side takes what the fuzz target gives it, descriptors
    /// included, and closes every one: a flood inside a frame that never
    /// ends, descriptors no message claims, a batch bomb, garbage.
    #[test]
    fn the_parent_side_takes_floods_and_garbage() {
        let record = |nfds: u8, bytes: &[u8]| {
            let mut out = vec![nfds];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
            out
        };
        let mut flood = record(0, &[0x82, 127, 0, 0, 0, 0, 3, 192, 0, 0]);
        for _ in 0..10 {
            flood.extend(record(253, &[0]));
        }
        let mut stray = record(3, &super::ws_binary(&[2, 0, 0]));
        stray.extend(record(0, &super::ws_binary(&[2, 1, 0])));
        let mut bomb = vec![9, 0];
        for _ in 0..20_000 {
            bomb.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0]);
        }
        let bomb = super::ws_binary(&bomb);
        let bomb: Vec<u8> = bomb.chunks(60_000).flat_map(|c| record(0, c)).collect();
        for data in [&[][..], b"\xff\xff\xff\xff\xff", &flood, &stray, &bomb] {
            super::link(data);
        }
        for (_, _, seed) in super::seeds().iter().filter(|s| s.0 == "link") {
            super::link(seed);
        }
    }

    /// The seeds are valid: every envelope decodes whole, every stream
    /// yields its messages; with `AWW_WRITE_SEEDS=dir` they are written
    /// there, one directory per target.
    #[test]
    fn the_seeds_decode() {
        use super::*;
        let seeds = seeds();
        for (target, name, bytes) in &seeds {
            if *target == "envelope" {
                let (header, payload) = frame::decode(bytes).expect(name);
                let decoded = match header.kind {
                    frame::Kind::Hello => frame::read_hello(payload).map(drop),
                    frame::Kind::Error => codec::decode::<ErrorReport>(payload).map(drop),
                    frame::Kind::Failed => {
                        codec::decode::<crate::session::requests::Failure>(payload).map(drop)
                    }
                    frame::Kind::Terminate | frame::Kind::Closing => Ok(()),
                    frame::Kind::Batch => {
                        let mut pos = 2;
                        let mut n = 0;
                        while let Some(range) = frame::batch_entry(bytes, pos).expect(name) {
                            pos = range.end;
                            codec::decode::<Sample>(frame::decode(&bytes[range]).unwrap().1)
                                .expect(name);
                            n += 1;
                        }
                        assert_eq!(n, 3);
                        Ok(())
                    }
                    _ => codec::decode::<Sample>(payload).map(drop),
                };
                decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        let conversation =
            &seeds.iter().find(|s| s.0 == "stream" && s.1 == "conversation").unwrap().2;
        assert_eq!(
            messages_in(conversation),
            // The batch holds three.
            seeds.iter().filter(|s| s.0 == "envelope" && s.1 != "post_fds").count() + 2
        );
        if let Ok(dir) = std::env::var("AWW_WRITE_SEEDS") {
            for (target, name, bytes) in &seeds {
                let dir = std::path::Path::new(&dir).join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    /// How many messages the reading path yields from `data`.
    fn messages_in(data: &[u8]) -> usize {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.write_all(data).unwrap();
        drop(ours);
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        rt.block_on(async move {
            let (mut reader, _writer) = socket::open(theirs, 1 << 20).await.unwrap().split();
            let mut n = 0;
            while let Some(Ok(_)) = reader.next().await {
                n += 1;
            }
            n
        })
    }
}
