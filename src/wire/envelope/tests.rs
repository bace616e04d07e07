//! The envelope's header, hello and batches, byte by byte.
use super::*;

#[test]
fn request_header_round_trips() {
    let mut buf = Vec::new();
    begin(&mut buf, Header { nfds: 3, ..Header::request(42, 7) });
    buf.extend_from_slice(b"payload");
    let (h, payload) = decode(&buf).unwrap();
    assert_eq!(h, Header { kind: Kind::Request, nfds: 3, id: 42, tag: 7, credit: 0 });
    assert_eq!(payload, b"payload");
}

#[test]
fn stream_headers_round_trip_byte_for_byte() {
    let mut buf = Vec::new();
    begin(&mut buf, Header::stream(5, 7, 65536));
    buf.extend_from_slice(b"req");
    assert_eq!(&buf[..2], &[19, 0]);
    assert_eq!(buf.len(), 2 + 24 + 3);
    let (h, payload) = decode(&buf).unwrap();
    assert_eq!((h.kind, h.id, h.tag, h.credit, payload), (Kind::Stream, 5, 7, 65536, &b"req"[..]));
    let credit = credit(5, 4096);
    assert_eq!(&credit[..], &[18, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0]);
    let (h, _) = decode(&credit).unwrap();
    assert_eq!((h.kind, h.id, h.credit), (Kind::Credit, 5, 4096));
    let end = end(5);
    assert_eq!(&end[..], &[17, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    let mut item = Vec::new();
    begin(&mut item, Header::item(5));
    assert_eq!(item, [16, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    // Cut short: an error, never a short read.
    assert!(matches!(decode(&credit[..17]), Err(WireError::Truncated { .. })));
    assert!(matches!(decode(&buf[..25]), Err(WireError::Truncated { .. })));
}

#[test]
fn hello_round_trips() {
    for (codec, flags) in [(Codec::Bincode, 0), (Codec::Json, HELLO_DATA_FOLLOWS)] {
        let msg = hello(0xfeed, codec, flags);
        let (h, fields) = decode(&msg).unwrap();
        assert_eq!(h.kind, Kind::Hello);
        let hello = read_hello(fields).unwrap();
        assert_eq!(hello.version, PROTOCOL_VERSION);
        assert_eq!(hello.fingerprint, 0xfeed);
        assert_eq!(hello.pid, std::process::id());
        assert_eq!((hello.codec, hello.flags), (codec, flags));
    }
}

#[test]
fn hellos_of_versions_4_and_5_read_as_far_as_their_version() {
    let mut msg = hello(0xfeed, Codec::Json, HELLO_DATA_FOLLOWS);
    msg.pop();
    let mut five = msg.clone();
    five[6..10].copy_from_slice(&5u32.to_le_bytes());
    let hello = read_hello(decode(&five).unwrap().1).unwrap();
    assert_eq!((hello.version, hello.codec, hello.flags), (5, Codec::Json, 0));
    msg.pop();
    msg[6..10].copy_from_slice(&4u32.to_le_bytes());
    let hello = read_hello(decode(&msg).unwrap().1).unwrap();
    assert_eq!((hello.version, hello.codec), (4, Codec::Bincode));
    // Ours without its flags, or with an unknown codec, is broken.
    let mut short = super::hello(1, Codec::Bincode, 0);
    short.pop();
    assert!(matches!(read_hello(decode(&short).unwrap().1), Err(WireError::NotAHello)));
    let mut odd = super::hello(1, Codec::Bincode, 0);
    let at = odd.len() - 2;
    odd[at] = 9;
    assert!(matches!(read_hello(decode(&odd).unwrap().1), Err(WireError::UnknownCodec(9))));
}

#[test]
fn batch_entries_are_read_in_order_and_checked() {
    let mut batch = bytes::BytesMut::new();
    begin(&mut batch, Header::bare(Kind::Batch));
    push_batch_entry(&mut batch, &[2, 0, 1]);
    push_batch_entry(&mut batch, &[4, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    let first = batch_entry(&batch, 2).unwrap().unwrap();
    assert_eq!(&batch[first.clone()], &[2, 0, 1]);
    let second = batch_entry(&batch, first.end).unwrap().unwrap();
    assert_eq!(decode(&batch[second.clone()]).unwrap().0.id, 9);
    assert_eq!(batch_entry(&batch, second.end).unwrap(), None);
    // Cut anywhere inside an entry: an error, never a short message.
    for cut in (first.end + 1)..batch.len() {
        assert!(matches!(batch_entry(&batch[..cut], first.end), Err(WireError::Truncated { .. })));
    }
}

#[test]
fn bad_headers_are_errors() {
    assert!(matches!(decode(&[]), Err(WireError::Truncated { .. })));
    assert!(matches!(decode(&[99, 0]), Err(WireError::UnknownKind(99))));
    assert!(matches!(decode(&[3, 0, 1, 2]), Err(WireError::Truncated { .. })));
    assert!(matches!(read_hello(b"nope"), Err(WireError::NotAHello)));
}
