//! The stream's tests: a parked write woken, descriptors travelling with
//! the bytes, and TLS inside the stream over a real TCP connection.

use super::*;
#[cfg(feature = "tls")]
use crate::wire::wsframe::binary_frame;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (r.into(), w.into())
}

/// Counts its wake-ups.
struct Count(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A write parked for room is woken when another write (a pong the
/// reading task has tungstenite write) goes through whole and the
/// watching stops: else it could wait for ever, the room it needs
/// having come without the edge that would wake it.
#[test]
fn a_write_parked_for_room_is_woken_when_another_goes_through() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut a, _reading) = FdStream::new(a, None).unwrap();
        let parked = Arc::new(Count(Default::default()));
        let parked_waker = Waker::from(parked.clone());
        let chunk = vec![0u8; 4096];
        // Small writes until the socket is full and the writer parks.
        loop {
            let mut cx = Context::from_waker(&parked_waker);
            match Pin::new(&mut a).poll_write(&mut cx, &chunk) {
                Poll::Ready(res) => assert_eq!(res.unwrap(), chunk.len()),
                Poll::Pending => break,
            }
        }
        // The peer reads a little: room, but short of the socket's
        // wake-up mark.
        let mut buf = vec![0u8; 16 << 10];
        b.read_exact(&mut buf).unwrap();
        let other = Waker::from(Arc::new(Count(Default::default())));
        let mut cx = Context::from_waker(&other);
        let res = Pin::new(&mut a).poll_write(&mut cx, b"\x8a\x00");
        assert!(matches!(res, Poll::Ready(Ok(2))), "{res:?}");
        assert_eq!(parked.0.load(Ordering::SeqCst), 1, "the parked write was not woken");
    });
}

#[test]
fn descriptors_travel_with_the_bytes() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut a, _) = FdStream::new(a, None).unwrap();
        let (_, mut b) = FdStream::new(b, None).unwrap();
        let (r, w) = pipe();
        a.fds.push_outgoing(vec![w]);
        a.write_all(b"hello").await.unwrap();
        a.flush().await.unwrap();
        let mut buf = bytes::BytesMut::with_capacity(64);
        while buf.len() < 5 {
            std::future::poll_fn(|cx| b.poll_recv(cx, &mut buf)).await.unwrap();
        }
        assert_eq!(&buf[..], b"hello");
        assert_eq!(b.queues().unclaimed(), 1);
        let w = b.queues().take_incoming(1).unwrap().pop().unwrap();
        std::fs::File::from(w).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        std::fs::File::from(r).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert!(b.queues().take_incoming(1).is_none());
    });
}

/// Both ends of a loopback TCP connection, speaking TLS (the handshake
/// made in memory first).
#[cfg(feature = "tls")]
fn tls_pair() -> ((FdStream, FdReader), (FdStream, FdReader)) {
    use tokio_rustls::rustls;
    let tls = crate::wire::tls::TlsServer::self_signed().unwrap();
    let mut server = rustls::ServerConnection::new(tls.acceptor.config().clone()).unwrap();
    let mut client = crate::wire::tls::client(&tls.pin).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        let mut flight = Vec::new();
        client.write_tls(&mut flight).unwrap();
        server.read_tls(&mut &flight[..]).unwrap();
        server.process_new_packets().unwrap();
        flight.clear();
        server.write_tls(&mut flight).unwrap();
        client.read_tls(&mut &flight[..]).unwrap();
        client.process_new_packets().unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    let a = FdStream::new(a, Some(client.into())).unwrap();
    let b = FdStream::new(b, Some(server.into())).unwrap();
    (a, b)
}

/// Reads until `want` bytes, or the end, taking at most `room` bytes a
/// read (plaintext decrypted beyond it waits for the next).
#[cfg(feature = "tls")]
async fn read_tls_bytes(reader: &mut FdReader, want: usize, room: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let mut buf = bytes::BytesMut::with_capacity(room);
        let n = std::future::poll_fn(|cx| reader.poll_recv(cx, &mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf);
    }
    got
}

/// Over TLS: 4 MiB of frames one way while the socket fills (read in
/// small steps), an answer the other way, a last frame written
/// without a writer (as a farewell is), then the ends: `close_notify`,
/// and a bare TCP end, each read as the end.
#[cfg(feature = "tls")]
#[test]
fn tls_in_the_stream_carries_frames_both_ways_and_ends() {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ((mut a, mut a_reading), (mut b_writing, mut b)) = tls_pair();
        let frames: Vec<Vec<u8>> = (0..512u32)
            .map(|i| {
                let payload: Vec<u8> = (0..8 << 10).map(|j| (i + j) as u8).collect();
                binary_frame(&payload)
            })
            .collect();
        let total: usize = frames.iter().map(Vec::len).sum();
        let expected = frames.concat();
        let writing = tokio::spawn(async move {
            for frame in &frames {
                a.write_all(frame).await.unwrap();
            }
            a.flush().await.unwrap();
            a
        });
        // Small reads: most of what is decrypted waits for the next.
        let got = read_tls_bytes(&mut b, total, 1000).await;
        assert!(got == expected, "the bytes came changed");
        let mut a = writing.await.unwrap();
        assert!(a_reading.queues().ledger().started() >= 512, "the ledger heard of every frame");

        b_writing.write_all(&binary_frame(b"pong")).await.unwrap();
        b_writing.flush().await.unwrap();
        let pong = read_tls_bytes(&mut a_reading, 6, 64 << 10).await;
        assert_eq!(&pong[2..], b"pong");

        let last = binary_frame(b"last word");
        assert!(a_reading.queues().send_whole_now(&last), "a frame written without the writer");
        assert_eq!(read_tls_bytes(&mut b, last.len(), 64 << 10).await, last);

        a.shutdown().await.unwrap();
        assert!(read_tls_bytes(&mut b, 1, 64).await.is_empty(), "close_notify is the end");

        let ((a, a_reading), (_, mut b)) = tls_pair();
        drop((a, a_reading));
        assert!(read_tls_bytes(&mut b, 1, 64).await.is_empty(), "a TCP end is the end");
    });
}
