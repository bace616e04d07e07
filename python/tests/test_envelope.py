"""The envelope, batches and the hello (PROTOCOL.md, sections 3 and 4),
checked against bytes written by hand from the document."""

from __future__ import annotations

import struct

import pytest

from actix_webworker import PROTOCOL_VERSION
from actix_webworker import _envelope as env
from actix_webworker._envelope import ProtocolError


# The limit of each message (64 MiB + 64), as a worker's default.
LIMIT = (64 << 20) + 64


def entry(message: bytes) -> bytes:
    """One message of a batch: its u32 length (little endian), then it."""
    return struct.pack("<I", len(message)) + message


def test_the_header_is_kind_then_nfds() -> None:
    assert env.envelope(env.POST, 2, payload=b'"x"') == b'\x02\x02"x"'
    assert env.envelope(env.PONG) == b"\x0e\x00"


def test_a_message_that_is_not_a_batch_is_itself() -> None:
    assert env.split(b"\x02\x01{}", LIMIT) == [(env.POST, 1, b"{}")]


def test_a_batchs_messages_in_order() -> None:
    batch = b"\x09\x00" + entry(b"\x0d\x00") + entry(b"\x02\x00[1,2]") + entry(b"\x07\x00")
    assert env.split(batch, LIMIT) == [(env.PING, 0, b""), (env.POST, 0, b"[1,2]"), (env.TERMINATE, 0, b"")]
    assert env.split(b"\x09\x00", LIMIT) == []


def test_a_batchs_lengths_are_little_endian() -> None:
    message = b"\x02\x00" + b"7" * 300
    batch = b"\x09\x00" + b"\x2e\x01\x00\x00" + message
    assert env.split(batch, LIMIT) == [(env.POST, 0, b"7" * 300)]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"", "shorter than its header"),
        (b"\x02", "shorter than its header"),
        (b"\x09\x01", "descriptors of its own"),
        (b"\x09\x00\x05\x00", "inside a length"),
        (b"\x09\x00" + struct.pack("<I", 9) + b"\x02\x00", "inside a message of 9 bytes"),
        (b"\x09\x00" + entry(b"\x02"), "1 bytes in a batch"),
        (b"\x09\x00" + entry(b"\x09\x00"), "a batch inside a batch"),
        (b"\x09\x00" + entry(b"\x02\x00" + b"x" * env.MAX_BATCH), "over"),
    ],
)
def test_a_broken_batch(message: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        env.split(message, LIMIT)


def test_the_largest_batch_a_writer_makes_is_read() -> None:
    # 2 + 64 KiB + 4 + 4 KiB: the batch's header, then one message filling
    # the rest.
    body = b"\x02\x00" + b"x" * (env.MAX_BATCH - 2 - 4 - 2)
    batch = b"\x09\x00" + entry(body)
    assert len(batch) == env.MAX_BATCH == 2 + 64 * 1024 + 4 + 4 * 1024
    assert env.split(batch, LIMIT) == [(env.POST, 0, body[2:])]


def test_requests_and_answers() -> None:
    fields = env.request_fields(7, 0x0102030405060708)
    assert fields == bytes([7, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1])
    assert env.split_request(fields + b"[6,7]") == (7, 0x0102030405060708, b"[6,7]")
    assert env.id_fields(258) == b"\x02\x01\x00\x00\x00\x00\x00\x00"
    assert env.id_of(env.id_fields(258) + b"null") == 258
    with pytest.raises(ProtocolError):
        env.split_request(b"\x00" * 15)
    with pytest.raises(ProtocolError):
        env.id_of(b"\x00" * 7)


def test_the_frames_of_streamed_answers() -> None:
    # PROTOCOL.md, section 9: a Stream request's fields, a Credit's.
    fields = struct.pack("<QQQ", 5, 7, 65536)
    assert env.split_stream(fields + b"[1]") == (5, 7, 65536, b"[1]")
    credit = bytes.fromhex("050000000000000000100000000000 00".replace(" ", ""))
    assert env.split_credit(credit) == (5, 4096)
    assert env.envelope(env.END, 0, env.id_fields(5)) == bytes([17, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ProtocolError):
        env.split_stream(fields[:23])
    with pytest.raises(ProtocolError):
        env.split_credit(credit[:15])


def test_our_hello() -> None:
    ours = env.hello(fingerprint=0x1122334455667788, pid=4242)
    assert ours == (
        b"\x01\x00"  # Hello, no descriptors
        + b"AWW\x01"  # magic
        + struct.pack("<I", PROTOCOL_VERSION)
        + bytes.fromhex("8877665544332211")  # the fingerprint, little endian
        + struct.pack("<I", 4242)
        + b"\x01"  # JSON
        + b"\x00"  # flags: a worker's are 0
    )
    assert PROTOCOL_VERSION == 8


def test_the_parents_hello_is_read_as_far_as_its_version() -> None:
    v8 = env.read_hello(env.hello(99, 1234, codec=env.CODEC_BINCODE))
    assert v8 == env.Hello(version=8, fingerprint=99, pid=1234, codec=env.CODEC_BINCODE)
    data_follows = b"\x01\x00AWW\x01" + struct.pack("<IQI", 6, 99, 1234) + bytes([1, 1])
    assert env.read_hello(data_follows).flags == env.HELLO_DATA_FOLLOWS
    # Version 5 ended after the codec: no flags.
    v5 = b"\x01\x00AWW\x01" + struct.pack("<IQI", 5, 99, 1234) + bytes([1])
    assert env.read_hello(v5) == env.Hello(version=5, fingerprint=99, pid=1234, codec=1)
    # Version 4 ended after the pid: no codec.
    v4 = b"\x01\x00AWW\x01" + struct.pack("<IQI", 4, 99, 1234)
    assert env.read_hello(v4) == env.Hello(version=4, fingerprint=99, pid=1234, codec=None)


def test_the_data_after_the_hellos() -> None:
    message = bytes([15, 0]) + struct.pack("<Q", 0xABCD) + b'{"n":1}'
    assert env.read_data(message) == b'{"n":1}'
    with pytest.raises(ProtocolError, match="data follows"):
        env.read_data(bytes([2, 0]) + b"{}")


@pytest.mark.parametrize(
    "message",
    [b"", b"\x02\x00AWW\x01" + bytes(17), b"\x01\x00AWX\x01" + bytes(17), b"\x01\x00AWW\x01" + bytes(15)],
)
def test_what_is_not_a_hello(message: bytes) -> None:
    with pytest.raises(ProtocolError, match="not a hello"):
        env.read_hello(message)
