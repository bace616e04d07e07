"""Streamed answers (PROTOCOL.md, section 9) against a parent played by
the test, live: the worker's loop runs on a thread of its own over an
in-process socketpair, and the test reads its items as they come and
sends credits and cancels, as a Rust parent does."""

from __future__ import annotations

import select
import struct
import socket
import threading
from typing import Any, Iterator, List, Tuple

import actix_webworker as aww
from actix_webworker import _envelope as env
from actix_webworker._frames import Connection
from actix_webworker._payload import decode, encode, tag_of
from actix_webworker._worker import _Runtime

ROWS, FAIL, MUL, TRACED = "app.rows", "app.fail", "app.mul", "app.traced"

closed: List[str] = []
"""The generators whose `finally` ran."""


class Echo(aww.Worker):
    def on_message(self, data: aww.Json, fds: List[int]) -> None:
        self.parent.post({"Echoed": data})


def rows(worker: Echo, n: aww.Json) -> Iterator[aww.Json]:
    try:
        i = 0
        while n is None or i < n:
            yield {"n": i}
            i += 1
    finally:
        closed.append(f"rows {n}")


def fail(worker: Echo, n: aww.Json) -> Iterator[aww.Json]:
    yield 0
    raise ValueError(f"row {n} is bad")


def traced(worker: Echo, n: aww.Json) -> Iterator[aww.Json]:
    """`n` items, each the context of the stream's request as its W3C
    header (None when it came without one)."""
    for _ in range(n):
        trace = worker.parent.trace
        yield trace.traceparent if trace is not None else None


class Parent:
    """The test's side: a worker running on a thread, and its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        theirs.settimeout(30)
        self.conn = Connection(theirs, 1 << 20)
        self.sock = theirs
        answers = {MUL: lambda w, r: r[0] * r[1]}
        streams = {ROWS: rows, FAIL: fail, TRACED: traced}
        self.runtime = _Runtime(Connection(ours, 1 << 20), Echo, answers, None, streams)
        self.thread = threading.Thread(target=self.runtime.serve)
        self.thread.start()
        self.ours = ours

    def send(self, message: bytes) -> None:
        self.conn.send(message)

    def ask_stream(self, rid: int, name: str, value: aww.Json, window: int) -> None:
        fields = struct.pack("<QQQ", rid, tag_of(name), window)
        self.send(env.envelope(env.STREAM, 0, fields, encode(value)))

    def ask_traced_stream(self, rid: int, name: str, value: aww.Json, window: int, context: bytes) -> None:
        fields = struct.pack("<QQQ", rid, tag_of(name), window) + context
        self.send(env.envelope(env.TRACED_STREAM, 0, fields, encode(value)))

    def credit(self, rid: int, more: int) -> None:
        self.send(env.envelope(env.CREDIT, 0, struct.pack("<QQ", rid, more)))

    def next(self) -> Tuple[int, int, Any, int]:
        """The next message: kind, id, value, and its length."""
        message = self.conn.read_message()
        ((kind, _, rest),) = env.split(message, self.conn.max_frame)
        if kind == env.POST:
            return kind, -1, decode(rest), len(message)
        value = decode(rest[8:]) if len(rest) > 8 else None
        return kind, env.id_of(rest), value, len(message)

    def quiet(self) -> bool:
        """Whether the worker sends nothing more for a fifth of a second."""
        if self.conn.buf:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0.2)
        return not readable

    def end(self) -> None:
        self.send(env.envelope(env.TERMINATE))
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.ours.close()
        self.sock.close()


def test_items_come_within_the_window_then_more_with_credit_then_the_end() -> None:
    parent = Parent()
    item = len(env.envelope(env.ITEM, 0, env.id_fields(1), encode({"n": 0})))
    # Room for three items: three come, and no more until a credit.
    parent.ask_stream(1, ROWS, 10, 3 * item)
    got = [parent.next() for _ in range(3)]
    assert [(k, i, v) for k, i, v, _ in got] == [(env.ITEM, 1, {"n": n}) for n in range(3)]
    assert all(length == item for *_, length in got)
    assert parent.quiet(), "nothing past the window"
    parent.credit(1, 100 * item)
    rest = [parent.next() for _ in range(8)]
    assert [v for _, _, v, _ in rest[:7]] == [{"n": n} for n in range(3, 10)]
    assert rest[7][:2] == (env.END, 1)
    parent.end()
    assert "rows 10" in closed


def test_a_cancel_closes_the_generator_and_the_worker_goes_on() -> None:
    parent = Parent()
    parent.ask_stream(2, ROWS, None, 64)
    assert parent.next()[:3] == (env.ITEM, 2, {"n": 0})
    parent.send(env.envelope(env.CANCEL, 0, env.id_fields(2)))
    parent.send(env.envelope(env.POST, payload=encode("after")))
    # What was sent before the cancel was read, then the post's echo.
    while True:
        kind, _, value, _ = parent.next()
        if kind == env.POST:
            break
        assert kind == env.ITEM
    assert value == {"Echoed": "after"}
    assert "rows None" in closed
    parent.end()


def test_an_exception_in_the_generator_ends_the_stream_raised() -> None:
    parent = Parent()
    parent.ask_stream(3, FAIL, 5, 1 << 16)
    assert parent.next()[:3] == (env.ITEM, 3, 0)
    assert parent.next()[:3] == (env.FAILED, 3, {"Raised": "row 5 is bad"})
    parent.end()


def test_a_request_asked_in_the_other_form_fails_wire() -> None:
    parent = Parent()
    parent.send(env.envelope(env.REQUEST, 0, env.request_fields(4, tag_of(ROWS)), encode(1)))
    kind, rid, failure, _ = parent.next()
    assert (kind, rid) == (env.FAILED, 4)
    assert "answered by a stream" in failure["Wire"]
    parent.ask_stream(5, MUL, [2, 3], 64)
    kind, rid, failure, _ = parent.next()
    assert (kind, rid) == (env.FAILED, 5)
    assert "answered once" in failure["Wire"]
    parent.end()


def test_what_comes_in_one_batch_with_the_cancel_is_kept() -> None:
    parent = Parent()
    parent.ask_stream(6, ROWS, None, 16)
    assert parent.next()[:3] == (env.ITEM, 6, {"n": 0})
    cancel = env.envelope(env.CANCEL, 0, env.id_fields(6))
    mul = env.envelope(env.REQUEST, 0, env.request_fields(7, tag_of(MUL)), encode([6, 7]))
    parent.send(b"\x09\x00" + b"".join(len(m).to_bytes(4, "little") + m for m in (cancel, mul)))
    while True:
        kind, rid, value, _ = parent.next()
        if kind != env.ITEM:
            break
    assert (kind, rid, value) == (env.ANSWER, 7, 42)
    parent.end()


def test_a_traced_stream_request_is_streamed_and_its_context_seen_by_its_generator() -> None:
    trace_id, span_id = bytes(range(1, 17)), bytes(range(17, 25))
    parent = Parent()
    parent.ask_traced_stream(8, TRACED, 3, 1 << 16, trace_id + span_id + b"\x01")
    header = f"00-{trace_id.hex()}-{span_id.hex()}-01"
    assert [parent.next()[:3] for _ in range(4)] == [(env.ITEM, 8, header)] * 3 + [(env.END, 8, None)]
    # A malformed context fails that stream only; a plain one after it has none.
    parent.ask_traced_stream(9, TRACED, 1, 1 << 16, bytes(16) + span_id + b"\x01")
    assert parent.next()[:3] == (env.FAILED, 9, {"Wire": "bad trace context: a trace id of zeros"})
    parent.ask_stream(10, TRACED, 1, 1 << 16)
    assert [parent.next()[:3] for _ in range(2)] == [(env.ITEM, 10, None), (env.END, 10, None)]
    parent.end()
