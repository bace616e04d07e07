"""Channel ends (PROTOCOL.md, section 10): two Python ends over a
socketpair, each run as a worker would run it; and hand-written bytes
where an end expects a hello."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any, List, Optional, Tuple

import pytest

import actix_webworker as aww
from actix_webworker import Channel, take_channel
from actix_webworker import _envelope as env
from actix_webworker._frames import Closed, Connection, frame
from actix_webworker._payload import decode, encode
from actix_webworker._worker import _Runtime

FP = 0x1234_5678_9ABC_DEF0


def pair(second_max: int = 64 << 20) -> Tuple[Channel, Channel]:
    """Both ends of a new channel, their hellos done (the second one's on a
    thread: each waits for the other), the second's largest message
    `second_max`."""
    a, b = socket.socketpair()
    second: List[Channel] = []
    t = threading.Thread(target=lambda: second.append(Channel(b.detach(), False, FP, second_max)))
    t.start()
    first = Channel(a.detach(), True, FP)
    t.join(10)
    return first, second[0]


def test_posts_go_both_ways_in_order_with_descriptors() -> None:
    one, two = pair()
    r, w = os.pipe()
    os.write(w, b"through the channel")
    os.close(w)
    for n in range(100):
        one.post({"n": n}, [r] if n == 50 else [])
    os.close(r)
    for n in range(100):
        got = two.recv()
        assert got is not None
        value, fds = got
        assert value == {"n": n}
        if n == 50:
            assert len(fds) == 1
            assert os.read(fds[0], 100) == b"through the channel"
            os.close(fds[0])
        else:
            assert fds == []
    two.post("back")
    assert one.recv() == ("back", [])
    assert (one.sent, two.received) == (100, 100)


def test_a_close_is_told_to_the_other_end_after_what_was_posted() -> None:
    one, two = pair()
    one.post(1)
    closing = threading.Thread(target=one.close)
    closing.start()
    assert two.recv() == (1, [])
    assert two.recv() is None
    closing.join(10)
    assert (one.why, two.why) == ("Closed", "PeerClosed")


def test_an_end_whose_process_went_is_told() -> None:
    one, two = pair()
    one.conn.sock.close()
    assert two.recv() is None
    assert two.why == "PeerGone"


def test_an_end_is_taken_from_a_payload_by_its_index() -> None:
    a, b = socket.socketpair()
    other = os.open("/dev/null", os.O_RDONLY)
    fds = [b.detach(), other]
    result: List[Optional[Channel]] = [None]
    t = threading.Thread(target=lambda: result.__setitem__(0, Channel(a.detach(), True, FP)))
    t.start()
    end = take_channel({"Descriptor": [0, False, FP]}, fds)
    t.join(10)
    assert result[0] is not None
    assert fds[1] == other, "the message's own descriptor stays the caller's"
    os.close(other)
    end.post("hi")
    assert result[0].recv() == ("hi", [])
    for bad in ({"Descriptor": [5, True, FP]}, {"Other": 1}, {"Descriptor": [0xFFFFFFFF, True, 0]}):
        with pytest.raises(env.ProtocolError):
            take_channel(bad, [])


def hello_of(version: int, fingerprint: int, codec: int) -> bytes:
    fields = env.MAGIC + struct.pack("<IQI", version, fingerprint, 1) + bytes([codec, 0])
    return frame(env.envelope(env.HELLO, 0, fields))


@pytest.mark.parametrize(
    "first_bytes, why",
    [
        (frame(b"\xde\xad\xbe\xef"), "not a hello"),
        (hello_of(env.PROTOCOL_VERSION, FP + 1, env.CODEC_JSON), "fingerprint"),
        (hello_of(env.PROTOCOL_VERSION, FP, env.CODEC_BINCODE), "not JSON"),
        (hello_of(999, FP, env.CODEC_JSON), "version 999"),
    ],
)
def test_a_wrong_hello_is_refused_naming_what_is_wrong(first_bytes: bytes, why: str) -> None:
    a, b = socket.socketpair()
    a.sendall(first_bytes)
    with pytest.raises(env.ProtocolError, match=why):
        Channel(b.detach(), False, FP)
    a.close()


def test_a_kind_no_channel_carries_breaks_it() -> None:
    one, two = pair()
    one.conn.send(env.envelope(env.PING))
    assert two.recv() is None
    assert two.why == "Broken"
    assert "kind 13" in str(two.error)


def a_post_then_one_of_2000_bytes() -> bytes:
    """A batch, as a frame: the post `1`, then a post of 2,000 bytes."""
    post = env.envelope(env.POST, payload=b"1")
    fat = env.envelope(env.POST, payload=b"2" * 1998)
    entries = b"".join(struct.pack("<I", len(m)) + m for m in [post, fat])
    return frame(b"\x09\x00" + entries)


def test_an_end_of_a_smaller_limit_takes_the_posts_ahead_of_one_over_it() -> None:
    # The second end takes messages of up to 1,000 bytes; a batch from the
    # first holds a post, then one of 2,000 bytes: the post is received,
    # then the channel breaks (before, from a review: the post was lost).
    one, two = pair(1000)
    one.conn.sock.sendall(a_post_then_one_of_2000_bytes())
    assert two.recv() == (1, [])
    # The channel ends as broken; the error is kept, not raised (a
    # handler's ProtocolError would end the worker's own connection).
    assert two.recv() is None
    assert two.why == "Broken"
    assert isinstance(two.error, env.ProtocolError)
    assert "2000 bytes in a batch" in str(two.error)
    assert two.recv() is None


def test_a_broken_channel_ends_the_channel_not_the_workers_connection() -> None:
    # A handler reads a channel that breaks: the worker goes on with the
    # parent's next post (from a review: the channel's ProtocolError went
    # up through on_message and ended the worker's connection to its
    # parent, with exit 0 and no restart).
    one, two = pair(1000)
    one.conn.sock.sendall(a_post_then_one_of_2000_bytes())

    class Reader(aww.Worker):
        def on_message(self, data: Any, fds: List[int]) -> None:
            if data == "Recv":
                got = two.recv()
                self.parent.post({"Got": got[0] if got else two.why})
            else:
                self.parent.post({"Echoed": data})

    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    theirs.settimeout(10)
    posts = [env.envelope(env.POST, payload=encode(v)) for v in ["Recv", "Recv", "after"]]
    theirs.sendall(b"".join(frame(m) for m in posts + [env.envelope(env.TERMINATE)]))
    _Runtime(Connection(ours, 1 << 20), Reader, {}).serve()
    ours.shutdown(socket.SHUT_WR)
    back = Connection(theirs, 1 << 20)
    said: List[Any] = []
    try:
        while True:
            said.extend(decode(rest) for kind, _, rest in back.read_messages() if kind == env.POST)
    except Closed:
        pass
    assert said[:3] == [{"Got": 1}, {"Got": "Broken"}, {"Echoed": "after"}], said
