//! The WebSocket over a connected socket: opening it, and the hellos
//! that start a session. Reading is ours ([`frames`], then [`reader`],
//! which turns WebSocket messages into [`Inbound`](reader::Inbound)
//! messages); writing is tungstenite's ([`sink`], which the writer task,
//! `writer.rs`, drains an outbox into). The frame format itself is
//! `wsframe.rs`.
//!
//! No HTTP upgrade happens on a socketpair (`from_raw_socket`), and both ends
//! play the server role with unmasked frames accepted: a socketpair has no
//! proxy to confuse, so masking would only cost a pass over every byte.

mod frames;
pub(crate) mod reader;
pub(crate) mod sink;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use self::frames::{Frames, HEADER_SLACK};
use self::reader::{next_inbound, Reader};
use self::sink::SinkHalf;
use super::codec;
use super::envelope::{self, Kind, PROTOCOL_VERSION};
use super::stream::queues::FdQueues;
use super::stream::secure::Tls;
use super::stream::FdStream;
use super::wsframe;
use crate::error::WireError;
use crate::protocol::Codec;
use crate::report::cut;

/// An open connection, before it is split into reader and writer.
pub(crate) struct Connection {
    sink: SinkHalf,
    frames: Frames,
    fds: Arc<FdQueues>,
}

/// A connected stream socket (UNIX, or TCP for a remote worker), and the
/// TLS it speaks, its handshake done, if any.
pub(crate) struct Socket {
    pub fd: OwnedFd,
    pub tls: Option<Tls>,
}

impl Socket {
    /// A TCP socket that speaks `tls`.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(fd: impl Into<OwnedFd>, tls: impl Into<Tls>) -> Self {
        Socket { fd: fd.into(), tls: Some(tls.into()) }
    }
}

impl From<OwnedFd> for Socket {
    fn from(fd: OwnedFd) -> Self {
        Socket { fd, tls: None }
    }
}

impl From<std::os::unix::net::UnixStream> for Socket {
    fn from(sock: std::os::unix::net::UnixStream) -> Self {
        OwnedFd::from(sock).into()
    }
}

/// The largest WebSocket message either side takes, for messages of up
/// to `max_message_size` bytes: room for the envelope's header.
pub(crate) fn max_ws_message(max_message_size: usize) -> usize {
    max_message_size.saturating_add(HEADER_SLACK)
}

/// Opens the WebSocket over a connected socket. Must run inside a tokio
/// runtime.
pub(crate) async fn open(
    sock: impl Into<Socket>,
    max_message_size: usize,
) -> Result<Connection, WireError> {
    let Socket { fd, tls } = sock.into();
    let (stream, reader) =
        FdStream::new(fd, tls).map_err(|e| WireError::Transport(e.to_string()))?;
    let fds = reader.queues();
    let max = max_ws_message(max_message_size);
    let sink = SinkHalf::open(stream, fds.clone(), max).await;
    let frames = Frames::new(reader, max);
    Ok(Connection { sink, frames, fds })
}

impl Connection {
    /// Sends one message now (used for the hello, before the writer runs).
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), WireError> {
        self.sink.send(bytes).await
    }

    /// Receives the peer's hello and checks it against our protocol
    /// version and `fingerprint`; `Err(None)` when the peer went away first.
    /// A worker that refuses writes its refusal with `codec`, the one our
    /// hello named.
    pub(crate) async fn recv_hello(
        &mut self,
        fingerprint: u64,
        codec: Codec,
    ) -> Result<envelope::Hello, Option<WireError>> {
        let first = match next_inbound(&mut self.frames, &self.fds).await {
            None | Some(Err(WireError::CutOff)) => return Err(None),
            Some(r) => r.map_err(Some)?,
        };
        if first.header.kind == Kind::Refused {
            let envelope::EntryRefusal { entry, known, unanswered } =
                read_refusal(codec, first.payload()).map_err(Some)?;
            return Err(Some(match unanswered.is_empty() {
                true => WireError::UnknownEntry { entry, known },
                false => WireError::Unanswered { entry, requests: unanswered },
            }));
        }
        if first.header.kind != Kind::Hello {
            return Err(Some(WireError::NotAHello));
        }
        let hello = envelope::read_hello(first.payload()).map_err(Some)?;
        if hello.version != PROTOCOL_VERSION {
            return Err(Some(WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            }));
        }
        if hello.fingerprint != fingerprint {
            return Err(Some(WireError::FingerprintMismatch {
                ours: fingerprint,
                theirs: hello.fingerprint,
            }));
        }
        Ok(hello)
    }

    /// Receives the worker's data, which the parent's hello said would
    /// follow it: its shape and its payload. Anything else breaks the
    /// handshake.
    pub(crate) async fn recv_data(&mut self) -> Result<(u64, Vec<u8>), Option<WireError>> {
        let data = match next_inbound(&mut self.frames, &self.fds).await {
            None | Some(Err(WireError::CutOff)) => return Err(None),
            Some(r) => r.map_err(Some)?,
        };
        if data.header.kind != Kind::Data || data.header.nfds != 0 {
            return Err(Some(WireError::Unexpected(data.header.kind.name())));
        }
        Ok((data.header.tag, data.payload().to_vec()))
    }

    /// Splits into the reading half and the writing half.
    pub(crate) fn split(self) -> (Reader, SinkHalf) {
        (Reader::new(self.frames, self.fds), self.sink)
    }
}

/// The refusal of a worker of version 5 or earlier (bincode has no
/// missing fields).
#[derive(serde::Deserialize)]
struct EntryRefusalV5 {
    entry: String,
    known: Vec<String>,
}

/// Reads a refusal written with `codec`, of this version or an earlier;
/// its names cut to what the parent keeps of them (the error is cloned to
/// every request it fails, and a pool keeps it): at most 64 names of at
/// most 1 KiB each, and how many more there were.
fn read_refusal(codec: Codec, payload: &[u8]) -> Result<envelope::EntryRefusal, WireError> {
    let refusal = codec::decode_as::<envelope::EntryRefusal>(codec, payload).or_else(|e| {
        let EntryRefusalV5 { entry, known } = codec::decode_as(codec, payload).map_err(|_| e)?;
        Ok(envelope::EntryRefusal { entry, known, unanswered: Vec::new() })
    })?;
    let names = |names: Vec<String>| -> Vec<String> {
        let more = names.len().saturating_sub(REFUSAL_NAMES);
        let mut kept: Vec<String> =
            names.into_iter().take(REFUSAL_NAMES).map(|n| cut(n, REFUSAL_NAME_MAX)).collect();
        if more > 0 {
            kept.push(format!("\u{2026} ({more} more)"));
        }
        kept
    };
    Ok(envelope::EntryRefusal {
        entry: cut(refusal.entry, REFUSAL_NAME_MAX),
        known: names(refusal.known),
        unanswered: names(refusal.unanswered),
    })
}

/// The most names of a refusal kept, and the most bytes of each.
const REFUSAL_NAMES: usize = 64;
const REFUSAL_NAME_MAX: usize = 1 << 10;

/// The codec named by a parent's hello as read raw off the socket (one
/// unfragmented WebSocket frame); bincode if it cannot be read. For a
/// worker that refuses before it runs a session.
pub(crate) fn codec_of_hello(raw: &[u8]) -> Codec {
    // Unmasked, its length in the header's short form (a hello is far
    // under 126 bytes).
    let hello = match wsframe::read(raw) {
        Some(head) if head.len == 2 => raw.get(2..2 + head.payload as usize),
        _ => None,
    };
    let Some(hello) = hello else { return Codec::default() };
    envelope::decode(hello)
        .ok()
        .filter(|(header, _)| header.kind == Kind::Hello)
        .and_then(|(_, fields)| envelope::read_hello(fields).ok())
        .map_or(Codec::default(), |hello| hello.codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Old {
        entry: String,
        known: Vec<String>,
    }

    /// From a review of 446e15e: a refusal's names were kept whole, and
    /// cloned into every request the refusal failed (5 MiB each here).
    #[test]
    fn a_refusals_names_are_cut() {
        let big = envelope::EntryRefusal {
            entry: "e".repeat(1 << 20),
            known: vec!["k".repeat(1 << 20); 100],
            unanswered: vec!["u".repeat(1 << 20); 3],
        };
        let mut buf = Vec::new();
        codec::encode_into(&big, &mut buf).unwrap();
        let refusal = read_refusal(Codec::Bincode, &buf).unwrap();
        assert!(refusal.entry.len() <= 1024 && refusal.entry.starts_with("eee"));
        assert_eq!((refusal.known.len(), refusal.unanswered.len()), (65, 3));
        assert_eq!(refusal.known[64], "\u{2026} (36 more)");
        assert!(refusal.known.iter().chain(&refusal.unanswered).all(|n| n.len() <= 1024));
        let e = WireError::UnknownEntry { entry: refusal.entry, known: refusal.known };
        assert!(e.to_string().len() <= 70 << 10, "{} bytes", e.to_string().len());
    }

    #[test]
    fn a_refusal_reads_from_this_version_and_from_version_5_and_json_without_unanswered() {
        let old = Old { entry: "calc".into(), known: vec!["echo".into()] };
        let mut v5 = Vec::new();
        codec::encode_into(&old, &mut v5).unwrap();
        let json = serde_json::to_vec(&old).unwrap();
        let (from_v5, from_json) =
            (read_refusal(Codec::Bincode, &v5).unwrap(), read_refusal(Codec::Json, &json).unwrap());
        for refusal in [from_v5, from_json] {
            assert_eq!((refusal.entry.as_str(), refusal.known.len()), ("calc", 1));
            assert!(refusal.unanswered.is_empty());
        }
        let now = envelope::EntryRefusal {
            entry: "calc".into(),
            known: vec![],
            unanswered: vec!["my::Mul".into()],
        };
        let mut v6 = Vec::new();
        codec::encode_into(&now, &mut v6).unwrap();
        assert_eq!(read_refusal(Codec::Bincode, &v6).unwrap().unanswered, ["my::Mul"]);
    }
}
