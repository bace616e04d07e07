//! Valid inputs to start the fuzz corpora from.

use super::sample::{ws_binary, Sample};
use crate::error::ErrorReport;
use crate::protocol::Codec;
use crate::wire::envelope;

/// Valid inputs for the two targets, to start their corpora from: every
/// kind of envelope with payloads of each shape, and the same messages
/// framed as a peer sends them, alone and several to a stream.
/// `(target, name, bytes)`; `fuzz/seeds/` holds them, written by
/// `AWW_WRITE_SEEDS=fuzz/seeds cargo test --lib fuzzing`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let envelopes = envelopes();
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
    out.extend(link_seeds(&envelopes, &conversation));
    #[cfg(feature = "tls")]
    out.extend(auth_seeds());
    out.push(("stream", "conversation".into(), conversation));
    out.push(("stream", "large_length".into(), ws_binary(&vec![2; 70_000])));
    out
}

/// Every kind of envelope, with payloads of each shape: `(name, bytes)`,
/// the hello first.
fn envelopes() -> Vec<(String, Vec<u8>)> {
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
    let mut envelopes: Vec<(String, Vec<u8>)> =
        vec![("hello".into(), envelope::hello(0x1234, Codec::Bincode, 0))];
    let message = |kind, nfds, id, tag, payload: &dyn erased::Encode| {
        let mut buf = Vec::new();
        envelope::begin(&mut buf, envelope::Header { kind, nfds, id, tag, credit: 0 });
        payload.encode(&mut buf);
        buf
    };
    for (name, sample) in &samples {
        envelopes.push((format!("post_{name}"), message(envelope::Kind::Post, 0, 0, 0, sample)));
    }
    envelopes.push(("post_fds".into(), message(envelope::Kind::Post, 2, 0, 0, &samples[1].1)));
    envelopes.push(("request".into(), message(envelope::Kind::Request, 0, 42, 7, &samples[3].1)));
    let context = crate::wire::trace::TraceContext::new([7; 16], [9; 8], 1).to_bytes();
    for (name, header) in [
        ("traced_request", crate::wire::trace::traced_request(42, 7)),
        ("traced_stream", crate::wire::trace::traced_stream(43, 7, 65536)),
    ] {
        let mut traced = Vec::new();
        crate::wire::trace::begin_traced(&mut traced, header, Some(&context));
        erased::Encode::encode(&samples[3].1, &mut traced);
        envelopes.push((name.into(), traced));
    }
    envelopes.push(("answer".into(), message(envelope::Kind::Answer, 0, 42, 0, &samples[0].1)));
    envelopes.push(("error".into(), message(envelope::Kind::Error, 0, 0, 0, &report)));
    for (name, failure) in [
        ("failed_panicked", crate::session::requests::Failure::Panicked(report.clone())),
        ("failed_unhandled", crate::session::requests::Failure::Unhandled("x::Y".into())),
        ("failed_gone", crate::session::requests::Failure::Gone),
    ] {
        envelopes.push((name.into(), message(envelope::Kind::Failed, 0, 42, 0, &failure)));
    }
    let mut batch = bytes::BytesMut::new();
    envelope::begin(&mut batch, envelope::Header::bare(envelope::Kind::Batch));
    for (_, msg) in &envelopes[1..4] {
        envelope::push_batch_entry(&mut batch, msg);
    }
    envelopes.push(("batch".into(), batch.to_vec()));
    envelopes.push(("terminate".into(), envelope::bare(envelope::Kind::Terminate).to_vec()));
    envelopes.push(("closing".into(), envelope::bare(envelope::Kind::Closing).to_vec()));
    envelopes.push(("cancel".into(), envelope::cancel(42).to_vec()));

    envelopes
}

/// Records for the link target: `bytes` cut into records of 1 KiB, each
/// with `nfds` descriptors sent along.
fn as_records(bytes: &[u8], nfds: u8) -> Vec<u8> {
    bytes.chunks(1024).fold(Vec::new(), |mut out, chunk| {
        out.push(nfds);
        out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
        out.extend_from_slice(chunk);
        out
    })
}

/// The link target's seeds: the whole conversation, descriptors and
/// shared buffers along, and a flood of what a worker may not send.
fn link_seeds(
    envelopes: &[(String, Vec<u8>)],
    conversation: &[u8],
) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    out.push(("link", "conversation".into(), as_records(conversation, 0)));
    let with_fds = envelopes.iter().find(|(name, _)| name == "post_fds").map(|(_, b)| b);
    if let Some(bytes) = with_fds {
        out.push(("link", "post_fds".into(), as_records(&ws_binary(bytes), 2)));
    }
    // Posts of `Sample::Shared` (variant 6) naming the memfd the link
    // target's peer sends for a count of 254 (one copy) or 255 (eight):
    // each buffer `Descriptor(i, 4096)`.
    for (name, n, record) in [("post_shared", 1u8, 254u8), ("post_shared_named_8", 8, 255)] {
        let mut post = vec![envelope::Kind::Post as u8, n, 6, n];
        for i in 0..n {
            post.extend_from_slice(&[1, i, 251, 0, 16]);
        }
        out.push(("link", name.into(), as_records(&ws_binary(&post), record)));
    }
    // A flood of what only the parent may send (Pings): the first ends it.
    let mut pings = vec![envelope::Kind::Batch as u8, 0];
    for _ in 0..1000 {
        pings.extend_from_slice(&2u32.to_le_bytes());
        pings.extend_from_slice(&[envelope::Kind::Ping as u8, 0]);
    }
    out.push(("link", "ping_flood".into(), as_records(&ws_binary(&pings), 0)));
    out
}

/// The auth target's seeds: a token frame as a worker sends it, masked and
/// not, and a secrets block as a worker reads it.
#[cfg(feature = "tls")]
fn auth_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let token = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut auth = vec![envelope::Kind::Auth as u8, 0];
    auth.extend_from_slice(token);
    out.push(("auth", "token".into(), ws_binary(&auth)));
    let mut masked = vec![0x82, 0x80 | auth.len() as u8, 1, 2, 3, 4];
    masked.extend(auth.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
    out.push(("auth", "token_masked".into(), masked));
    let block =
        crate::handoff::secrets_block(std::str::from_utf8(token).unwrap_or(""), Some("ab"), None);
    out.push(("auth", "secrets".into(), block.into_bytes()));
    out
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::sample::Sample;
    use super::seeds;
    use crate::error::ErrorReport;
    use crate::wire::{codec, envelope, ws};

    /// The seeds are valid: every envelope decodes whole, every stream
    /// yields its messages; with `AWW_WRITE_SEEDS=dir` they are written
    /// there, one directory per target.
    #[test]
    fn the_seeds_decode() {
        let seeds = seeds();
        for (target, name, bytes) in &seeds {
            if *target == "envelope" {
                let (header, payload) = envelope::decode(bytes).expect(name);
                let decoded = match header.kind {
                    envelope::Kind::Hello => envelope::read_hello(payload).map(drop),
                    envelope::Kind::Error => codec::decode::<ErrorReport>(payload).map(drop),
                    envelope::Kind::Failed => {
                        codec::decode::<crate::session::requests::Failure>(payload).map(drop)
                    }
                    envelope::Kind::Terminate
                    | envelope::Kind::Closing
                    | envelope::Kind::Cancel => Ok(()),
                    envelope::Kind::Batch => {
                        let mut pos = 2;
                        let mut n = 0;
                        while let Some(range) = envelope::batch_entry(bytes, pos).expect(name) {
                            pos = range.end;
                            codec::decode::<Sample>(envelope::decode(&bytes[range]).unwrap().1)
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
            #[cfg(feature = "tls")]
            if *target == "auth" {
                let secrets = crate::handoff::parse_secrets(&String::from_utf8_lossy(bytes));
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let token = rt.block_on(crate::parent::remote::token::read_token(&mut &bytes[..]));
                // Each seed is a token frame or a secrets block, whole.
                assert!(token.is_ok() || secrets.token.len() == 64, "{name}: {token:?}");
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
            let (mut reader, _writer) = ws::open(theirs, 1 << 20).await.unwrap().split();
            let mut n = 0;
            while let Some(Ok(_)) = reader.next().await {
                n += 1;
            }
            n
        })
    }
}
