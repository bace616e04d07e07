"""A channel's end is the channel's, not the worker's: what its other end
sends, or its going, never ends the worker's connection to its parent
(from a review of 0ae476a, where each of these did)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any, Callable, List, Tuple

from actix_webworker import Channel, take_channel
import actix_webworker as aww
from actix_webworker import _envelope as env
from actix_webworker._frames import Closed, Connection, frame
from actix_webworker._payload import decode, encode
from actix_webworker._worker import _Runtime

FP = 0x1234_5678_9ABC_DEF0


def pair() -> Tuple[Channel, Channel]:
    a, b = socket.socketpair()
    second: List[Channel] = []
    t = threading.Thread(target=lambda: second.append(Channel(b.detach(), False, FP)))
    t.start()
    first = Channel(a.detach(), True, FP)
    t.join(10)
    return first, second[0]


def run_worker(on_first: Callable[[aww.Worker], object]) -> List[Tuple[int, Any]]:
    """A worker whose first post runs `on_first`, whose second ("after")
    is echoed; then Terminate. What the worker said: (kind, value)."""

    class W(aww.Worker):
        def on_message(self, data: Any, fds: List[int]) -> None:
            if data == "first":
                on_first(self)
            else:
                self.parent.post({"Echoed": data})

    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    theirs.settimeout(10)
    posts = [env.envelope(env.POST, payload=encode(v)) for v in ["first", "after"]]
    theirs.sendall(b"".join(frame(m) for m in posts + [env.envelope(env.TERMINATE)]))
    try:
        _Runtime(Connection(ours, 1 << 20), W, {}).serve()
    except env.ProtocolError as e:
        # What _start._serve does with it: "the parent broke the protocol".
        return [(-1, f"serve raised ProtocolError: {e}")]
    ours.shutdown(socket.SHUT_WR)
    back = Connection(theirs, 1 << 20)
    said: List[Tuple[int, Any]] = []
    try:
        while True:
            said.extend((kind, decode(rest)) for kind, _, rest in back.read_messages())
    except Closed:
        pass
    return said


def assert_reported_and_went_on(said: List[Tuple[int, Any]], text: str) -> None:
    kinds = [k for k, _ in said]
    assert env.ERROR in kinds and (env.POST, {"Echoed": "after"}) in said, said
    report = next(v for k, v in said if k == env.ERROR)
    assert text in report["message"], report


def hello_of(fingerprint: int) -> bytes:
    fields = env.MAGIC + struct.pack("<IQI", env.PROTOCOL_VERSION, fingerprint, 1) + bytes([env.CODEC_JSON, 0])
    return frame(env.envelope(env.HELLO, 0, fields))


# ---- (1) take_channel inside on_message ---------------------------------


def test_a_bad_channel_hello_in_on_message_is_reported_and_the_worker_goes_on() -> None:
    a, b = socket.socketpair()
    a.sendall(hello_of(FP + 1))  # the wrong fingerprint
    fd = b.detach()
    said = run_worker(lambda w: take_channel({"Descriptor": [0, False, FP]}, [fd]) and None)
    a.close()
    assert_reported_and_went_on(said, "fingerprint")


def test_a_value_that_is_not_a_channel_end_in_on_message_is_reported() -> None:
    said = run_worker(lambda w: take_channel({"Other": 1}, []) and None)
    assert_reported_and_went_on(said, "not a channel end")


def test_a_channel_whose_peer_went_during_its_hello_is_reported() -> None:
    a, b = socket.socketpair()
    # The other end closes before its hello (a close frame; its socket
    # still open, as a Rust end dropped while its process lives on).
    a.sendall(frame(b"\x03\xe8", 8))
    fd = b.detach()
    said = run_worker(lambda w: take_channel({"Descriptor": [0, False, FP]}, [fd]) and None)
    a.close()
    assert_reported_and_went_on(said, "Closed")


def test_a_post_on_a_channel_that_ended_does_not_end_the_worker() -> None:
    one, two = pair()
    two.conn.sock.close()  # the other end's process went

    def first(w: aww.Worker) -> None:
        assert one.recv() is None and one.why == "PeerGone"
        one.post("late")  # raises Closed: the runtime takes it as the parent's

    said = run_worker(first)
    assert_reported_and_went_on(said, "Closed")


# ---- (1) recv: what the other end may not send, still raised ------------


def recv_after(raw: bytes) -> Tuple[Any, Any, Any]:
    one, two = pair()
    one.conn.sock.sendall(frame(raw))
    got = two.recv()
    return got, two.why, two.error


def test_a_request_shorter_than_its_id_and_tag_breaks_the_channel() -> None:
    got, why, error = recv_after(env.envelope(env.REQUEST, 0, b"\x01\x02"))
    assert (got, why) == (None, "Broken"), (got, why)
    assert isinstance(error, env.ProtocolError)


def test_an_answer_shorter_than_its_id_breaks_the_channel() -> None:
    got, why, error = recv_after(env.envelope(env.ANSWER, 0, b"\x01"))
    assert (got, why) == (None, "Broken"), (got, why)


def test_a_post_claiming_descriptors_that_never_came_breaks_the_channel() -> None:
    got, why, error = recv_after(env.envelope(env.POST, 3, payload=b"1"))
    assert (got, why) == (None, "Broken"), (got, why)


def test_a_short_request_on_a_channel_in_on_message_does_not_end_the_worker() -> None:
    one, two = pair()
    one.conn.sock.sendall(frame(env.envelope(env.REQUEST, 0, b"\x01\x02")))

    def first(w: aww.Worker) -> None:
        w.parent.post({"Got": two.recv() or two.why})

    said = run_worker(first)
    assert (env.POST, {"Got": "Broken"}) in said and (env.POST, {"Echoed": "after"}) in said, said


# ---- descriptors of a broken channel ------------------------------------


def test_a_broken_channel_closes_the_descriptors_that_came_with_it() -> None:
    one, two = pair()
    r, w = os.pipe()
    before = len(os.listdir("/proc/self/fd"))
    batch = [env.envelope(env.PING), env.envelope(env.POST, 1, payload=b"1")]
    entries = b"".join(struct.pack("<I", len(m)) + m for m in batch)
    one.conn.send(b"\x09\x00" + entries, [r])
    os.close(r)
    os.close(w)
    assert two.recv() is None and two.why == "Broken"
    # r and w closed here, two's socket by recv (-3): the copy of r that
    # came with the post is left open in two.conn.fds.
    after = len(os.listdir("/proc/self/fd"))
    assert after == before - 3, (before, after, two.conn.fds)


# ---- close() -------------------------------------------------------------


def test_close_after_the_other_end_sent_garbage_returns() -> None:
    one, two = pair()
    one.conn.sock.sendall(frame(b"text", 1))  # a text frame: not allowed
    t = threading.Thread(target=two.close)
    t.start()
    t.join(5)
    assert not t.is_alive() and two.why == "Closed"


def test_close_when_the_other_end_is_gone_returns_as_documented() -> None:
    # "returns once it has closed too (or gone)"
    one, two = pair()
    one.conn.sock.close()
    two.close()
    assert two.why == "Closed"
