//! The `link` target: a worker's bytes, descriptors along, against the
//! parent's whole side of a connection.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::wire::ws;

use serde::{Deserialize, Serialize};

use super::sample::Sample;

/// A protocol for the parent's side: samples both ways.
struct FuzzProtocol;

impl crate::protocol::Protocol for FuzzProtocol {
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

impl actix::Handler<crate::parent::events::WorkerEvent<FuzzProtocol>> for Counter {
    type Result = ();

    fn handle(
        &mut self,
        _: crate::parent::events::WorkerEvent<FuzzProtocol>,
        _: &mut Self::Context,
    ) {
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

/// The records of a `link` input: bytes to send, each time with
/// descriptors: up to 253 copies of `/dev/null` (the count byte), or, for
/// 254 and 255, one and eight copies of a sealed 4 KiB memfd that a shared
/// buffer may take.
/// What the peer writes: each record's bytes and the descriptors it sends
/// along.
type Script = Vec<(Vec<u8>, Attached)>;

fn records(data: &[u8]) -> Script {
    let mut out = Vec::new();
    let mut rest = data;
    while let [nfds, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        // Descriptors ride on at least one byte.
        let bytes = if bytes.is_empty() { vec![0] } else { bytes.to_vec() };
        let attached = match nfds {
            254 => Attached::Memfd(1),
            255 => Attached::Memfd(8),
            n => Attached::DevNull(usize::from(*n)),
        };
        out.push((bytes, attached));
        rest = next;
    }
    out
}

/// What rides on one record's bytes.
#[derive(Clone, Copy)]
enum Attached {
    DevNull(usize),
    Memfd(usize),
}

/// How many descriptors of this process point to `/dev/null` or to the
/// peer's memfd: what the peer of `link` sends (counted apart from any
/// other test's descriptors).
fn peer_fds() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|p| {
                p == std::path::Path::new("/dev/null")
                    || p.to_string_lossy().starts_with("/memfd:fuzz-peer")
            })
        })
        .count()
}

/// A sealed memfd of 4 KiB, written: a shared buffer the parent takes.
fn sealed_memfd() -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"fuzz-peer", MFdFlags::MFD_ALLOW_SEALING).ok()?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, &[7u8; 4096]).ok()?;
    let fd = std::os::fd::OwnedFd::from(file);
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).ok().map(|_| fd)
}

/// Plays a worker that sends `data` (records: a descriptor count, a
/// little-endian `u16` length, the bytes; the stream after the hello)
/// against the parent's side of a connection: its reader, its dispatch of
/// posts, errors, requests (one type answered) and answers, the events
/// window towards a counting recipient, and the writer of its answers. At
/// the end, every descriptor received must have been closed.
pub fn link(data: &[u8]) {
    let before = peer_fds();
    let script = records(&data[..data.len().min(1 << 20)]);
    let Ok((peer, ours)) = std::os::unix::net::UnixStream::pair() else { return };
    let Ok(devnull) = std::fs::File::open("/dev/null") else { return };
    let Some(memfd) = sealed_memfd() else { return };
    let (Ok(peer_reads), devnull_fd, memfd_fd) =
        (peer.try_clone(), devnull.as_raw_fd(), memfd.as_raw_fd())
    else {
        return;
    };
    // The peer writes its script, and reads (and drops) what it is sent.
    let writes = std::thread::spawn(move || play(peer, script, devnull_fd, memfd_fd));
    let reads = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64 * 1024];
        while matches!((&peer_reads).read(&mut buf), Ok(n) if n > 0) {}
    });
    let system = actix::System::new();
    system.block_on(serve(ours));
    drop(system);
    let _ = writes.join();
    let _ = reads.join();
    drop(devnull);
    drop(memfd);
    let after = peer_fds();
    assert!(after <= before, "descriptors leaked: {after} open, {before} before");
}

/// The peer's side: writes `script`, its descriptors along (`devnull` or
/// `memfd`, as each record says), then ends its writing half.
fn play(peer: std::os::unix::net::UnixStream, script: Script, devnull: RawFd, memfd: RawFd) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut budget = 5_000;
    for (bytes, attached) in script {
        let (fd, nfds) = match attached {
            Attached::DevNull(n) => (devnull, n.min(253)),
            Attached::Memfd(n) => (memfd, n),
        };
        let nfds = nfds.min(budget);
        budget -= nfds;
        let fds = vec![fd; nfds];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let cmsg: &[ControlMessage<'_>] = if nfds > 0 { &cmsg } else { &[] };
        let iov = [std::io::IoSlice::new(&bytes)];
        if sendmsg::<()>(peer.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None).is_err() {
            break;
        }
    }
    // The end of the script: the parent reads to here, then EOF.
    let _ = peer.shutdown(std::net::Shutdown::Write);
}

/// The parent's side of one connection over `ours`, as its link runs it,
/// until the peer's script ends; every descriptor it took must be closed.
async fn serve(ours: std::os::unix::net::UnixStream) {
    use actix::Actor;
    let counter = Counter(0).start();
    let Ok(conn) = ws::open(ours, 1 << 20).await else { return };
    let (reader, sink) = conn.split();
    let outbox = Arc::new(crate::wire::outbox::Outbox::new(1024, 1 << 20));
    let mut handlers = crate::session::answers::Handlers::new(|| None);
    handlers.insert::<Double>(crate::protocol::tag_of::<Double>(), |req, reply| {
        reply.answer(&(req.0.wrapping_mul(2)))
    });
    let encoding = crate::session::sender::Encoding {
        codec: crate::protocol::Codec::Bincode,
        max_message_size: 1 << 20,
        descriptors: true,
    };
    let common = crate::session::Common {
        sender: crate::session::sender::Sender::new(outbox.clone(), encoding),
        handlers: std::rc::Rc::new(handlers),
        max_shared_bytes: 1 << 20,
        span: tracing::Span::none(),
    };
    let events = crate::parent::sink::Events::new(
        crate::parent::sink::EventSink::Recipient(counter.clone().recipient()),
        crate::parent::sink::Window {
            events: 64,
            bytes: 1 << 20,
            fds: 64,
            total: crate::held::Holds { bytes: 4 << 20, fds: 256 },
        },
    );
    let side = crate::parent::side::ParentSide::<FuzzProtocol>::new(
        "fuzz".into(),
        0,
        events,
        Box::new(|| {}),
        outbox,
    );
    let writer = crate::wire::writer::Writer::new(sink);
    let mut session = crate::session::Session::start(reader, writer, common, side);
    let mut never: std::pin::Pin<Box<dyn std::future::Future<Output = crate::error::ExitStatus>>> =
        Box::pin(std::future::pending());
    let mut status = None;
    crate::parent::link::read(&mut session, &mut never, &mut status, None, &mut None).await;
    let finished = session.finish(crate::session::Finish::Now).await;
    let unclaimed = finished.unclaimed_fds;
    assert!(
        unclaimed <= crate::wire::stream::queues::MAX_UNCLAIMED_FDS + 253,
        "{unclaimed} unclaimed descriptors held"
    );
    let _ = counter.send(Settled).await;
}

#[cfg(test)]
mod tests {
    use super::super::sample::ws_binary;
    use super::super::seeds::seeds;
    use super::link;

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
        let mut stray = record(3, &ws_binary(&[2, 0, 0]));
        stray.extend(record(0, &ws_binary(&[2, 1, 0])));
        let mut bomb = vec![9, 0];
        for _ in 0..20_000 {
            bomb.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0]);
        }
        let bomb = ws_binary(&bomb);
        let bomb: Vec<u8> = bomb.chunks(60_000).flat_map(|c| record(0, c)).collect();
        for data in [&[][..], b"\xff\xff\xff\xff\xff", &flood, &stray, &bomb] {
            link(data);
        }
        for (_, _, seed) in seeds().iter().filter(|s| s.0 == "link") {
            link(seed);
        }
    }
}
