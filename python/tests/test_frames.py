"""WebSocket frames and descriptors (PROTOCOL.md, sections 2 and 6), over
an in-process socketpair: no parent, no other process."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Iterator, Tuple

import pytest

from actix_webworker import _envelope as env
from actix_webworker._envelope import ProtocolError
from actix_webworker._frames import OP_PING, Closed, Connection, frame, unmask

Pair = Tuple[Connection, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A connection (the worker's end, a 1 KiB message limit) and the raw
    socket of the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(30)  # a test that would hang fails instead
    yield Connection(ours, max_message=1024), theirs
    ours.close()
    theirs.close()


def test_a_frame_is_binary_with_fin_and_unmasked() -> None:
    assert frame(b"hi") == b"\x82\x02hi"
    assert frame(b"") == b"\x82\x00"


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_extended_lengths_are_big_endian(n: int, header: bytes) -> None:
    assert frame(b"x" * n) == header + b"x" * n


def test_unmask_is_rfc_6455s_example() -> None:
    # RFC 6455, 5.7: "Hello", masked with 37 fa 21 3d.
    assert unmask(bytes.fromhex("7f9f4d5158"), bytes.fromhex("37fa213d")) == b"Hello"
    assert unmask(b"", b"abcd") == b""


def test_reads_a_frame(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(frame(b"one") + frame(b"two"))
    assert conn.read_message() == b"one"
    assert conn.read_message() == b"two"


def test_reads_a_masked_frame(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(bytes.fromhex("8285" "37fa213d" "7f9f4d5158"))
    assert conn.read_message() == b"Hello"


def test_reads_extended_lengths(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(b"\x82\x7e" + struct.pack(">H", 300) + b"a" * 300)
    theirs.sendall(b"\x82\x7f" + struct.pack(">Q", 500) + b"b" * 500)
    assert conn.read_message() == b"a" * 300
    assert conn.read_message() == b"b" * 500


def test_joins_fragments_and_skips_pings_and_pongs(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(
        b"\x02\x03Hel"  # binary, no FIN
        + b"\x89\x01p"  # a ping between fragments
        + b"\x00\x01l"  # continuation, no FIN
        + b"\x8a\x00"  # a pong
        + b"\x80\x01o"  # continuation, FIN
    )
    assert conn.read_message() == b"Hello"


def test_a_close_frame_or_the_end_of_the_stream_is_closed(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(frame(b"last") + b"\x88\x02\x03\xe8")
    assert conn.read_message() == b"last"
    with pytest.raises(Closed):
        conn.read_message()
    ours, other = socket.socketpair()
    other.close()
    with pytest.raises(Closed):
        Connection(ours, 1024).read_message()
    ours.close()


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\x82\x05ab", "ended inside a frame"),
        (b"\x81\x01a", "a text frame"),
        (b"\xc2\x01a", "reserved bits"),
        (b"\x80\x01a", "continuation frame with no message"),
        (b"\x02\x01a\x82\x01b", "a new message inside a fragmented one"),
        (b"\x83\x01a", "unknown opcode 3"),
        # Over the largest batch (a batch is taken whatever the limit):
        # refused before its payload is read.
        (b"\x82\x7f" + struct.pack(">Q", env.MAX_BATCH + 1), "over the limit"),
        # Over the limit (1 KiB + 64) and no batch (its first byte says):
        # refused before the rest of it is read.
        (frame(b"\x02\x00" + b"m" * 1087), "over the limit"),
    ],
)
def test_what_the_protocol_does_not_allow(pair: Pair, wire: bytes, why: str) -> None:
    conn, theirs = pair
    theirs.sendall(wire)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match=why):
        conn.read_message()


def test_a_message_at_the_limit_is_read(pair: Pair) -> None:
    conn, theirs = pair
    theirs.sendall(frame(b"m" * 1088))
    assert conn.read_message() == b"m" * 1088


def test_a_batch_over_the_limit_is_read_each_message_held_to_it(pair: Pair) -> None:
    # A writer of a larger limit batches small messages past ours (1 KiB
    # + 64): the batch is read, each message in it held to our limit.
    conn, theirs = pair
    small = b"\x02\x00" + b"s" * 100
    batch = b"\x09\x00" + (struct.pack("<I", len(small)) + small) * 30
    theirs.sendall(frame(batch))
    assert env.split(conn.read_message(), conn.max_frame) == [(env.POST, 0, b"s" * 100)] * 30
    fat = b"\x02\x00" + b"f" * 1087
    theirs.sendall(frame(b"\x09\x00" + struct.pack("<I", len(fat)) + fat))
    with pytest.raises(ProtocolError, match="1089 bytes in a batch, over the limit of 1088"):
        env.split(conn.read_message(), conn.max_frame)


def test_the_messages_ahead_of_a_broken_one_in_a_batch_come_first(pair: Pair) -> None:
    # As the Rust reader: the post ahead of a message over the limit is
    # read; the error comes at the next read (found by a review: before,
    # the whole batch was lost).
    conn, theirs = pair
    good = b"\x02\x00" + b"1"
    fat = b"\x02\x00" + b"f" * 1087
    entries = b"".join(struct.pack("<I", len(m)) + m for m in [good, fat])
    theirs.sendall(frame(b"\x09\x00" + entries))
    assert conn.read_messages() == [(env.POST, 0, b"1")]
    with pytest.raises(ProtocolError, match="1089 bytes in a batch, over the limit of 1088"):
        conn.read_messages()
    with pytest.raises(ProtocolError, match="over the limit"):
        conn.read_messages()


def test_sends_whole_frames(pair: Pair) -> None:
    conn, theirs = pair
    sizes = (0, 5, 200, 70000, 300000)
    # Sent from a thread: the larger ones do not fit in the socket's buffer.
    def send_all() -> None:
        for n in sizes:
            conn.send(b"z" * n)

    sender = threading.Thread(target=send_all)
    sender.start()
    other = Connection(theirs, max_message=1 << 20)
    for n in sizes:
        assert other.read_message() == b"z" * n
    sender.join(timeout=30)
    assert not sender.is_alive()


def test_descriptors_travel_with_their_message(pair: Pair) -> None:
    conn, theirs = pair
    read, write = os.pipe()
    try:
        sender = Connection(theirs, 1024)
        sender.send(b"with a pipe", fds=[write])
        assert conn.read_message() == b"with a pipe"
        (received,) = conn.take_fds(1)
        # The descriptor received is another of the same pipe.
        assert received != write
        os.write(received, b"through")
        os.close(received)
        assert os.read(read, 100) == b"through"
    finally:
        os.close(read)
        os.close(write)


def test_a_message_claims_no_more_descriptors_than_came(pair: Pair) -> None:
    conn, _ = pair
    with pytest.raises(ProtocolError, match="claims 1 descriptors, 0 came"):
        conn.take_fds(1)
    with pytest.raises(ProtocolError, match="over 64"):
        conn.take_fds(65)
    assert conn.take_fds(0) == []


def test_no_descriptors_to_a_remote_parent(pair: Pair) -> None:
    conn, _ = pair
    conn.remote = True
    with pytest.raises(ValueError, match="remote"):
        conn.send(b"x", fds=[0])


def test_close_sends_a_close_frame_and_shuts_the_write_side(pair: Pair) -> None:
    conn, theirs = pair
    conn.close()
    # Code 1000, "read 0": nothing of ours was taken.
    assert theirs.recv(64) == b"\x88\x08\x03\xe8read 0"
    assert theirs.recv(10) == b""


def test_the_close_frame_says_how_much_was_taken_in_whole_frames(pair: Pair) -> None:
    conn, theirs = pair
    sent = frame(b"x" * 300) + frame(b"", OP_PING) + frame(b"y")
    theirs.sendall(sent + frame(b"z")[:2])
    assert conn.read_message() == b"x" * 300
    assert conn.read_message() == b"y"
    conn.close()
    # The ping counts; the frame begun and not whole does not.
    reason = f"read {len(sent)}".encode()
    assert theirs.recv(64) == bytes([0x88, 2 + len(reason)]) + b"\x03\xe8" + reason
