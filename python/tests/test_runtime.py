"""The dispatch loop against a parent played by the test, over an
in-process socketpair: what the parent sends is written before the loop
runs (ending with a Terminate), and what the worker said is read after
it returns."""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Mapping, Tuple

import pytest

import actix_webworker as aww
from actix_webworker import _envelope as env
from actix_webworker._frames import Closed, Connection, frame
from actix_webworker._payload import decode, encode, tag_of
from actix_webworker._worker import Answer, _Runtime

MUL, GREET = "app::Mul", "app::Greet"

Said = Tuple[int, Any]
"""A message the worker sent: its kind, and the id and value or the
value."""


class Calc(aww.Worker):
    def on_message(self, data: aww.Json, fds: List[int]) -> None:
        if data == "Ask":
            self.parent.post({"Answered": self.parent.ask(GREET, "py")})
        elif data == "Raise":
            raise KeyError("no such thing")
        elif data == "Close":
            self.parent.close()
        else:
            self.parent.post({"Echoed": data})

    def on_close(self) -> None:
        self.parent.post("Closing")


def mul(worker: Calc, request: aww.Json) -> aww.Json:
    a, b = request
    return a * b


ANSWERS: Dict[str, Answer] = {
    MUL: mul,
    "app::Boom": lambda w, r: 1 // 0,
    "app::NaN": lambda w, r: float("nan"),
}


def post(value: aww.Json) -> bytes:
    return env.envelope(env.POST, payload=encode(value))


def request(rid: int, name: str, value: aww.Json) -> bytes:
    return env.envelope(env.REQUEST, 0, env.request_fields(rid, tag_of(name)), encode(value))


def batch(*messages: bytes) -> bytes:
    return b"\x09\x00" + b"".join(len(m).to_bytes(4, "little") + m for m in messages)


TERMINATE = env.envelope(env.TERMINATE)


def converse(*messages: bytes, answers: Mapping[str, Answer] = ANSWERS) -> List[Said]:
    """Runs a worker on `messages` from the parent (each one frame); what
    it sent back, in order."""
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    theirs.settimeout(30)
    with ours, theirs:
        theirs.sendall(b"".join(frame(m) for m in messages))
        runtime = _Runtime(Connection(ours, 1 << 20), Calc, answers)
        runtime.serve()
        ours.shutdown(socket.SHUT_WR)
        back = Connection(theirs, 1 << 20)
        said: List[Said] = []
        while True:
            try:
                message = back.read_message()
            except Closed:
                return said
            kind, _nfds, rest = env.split(message, back.max_frame)[0]
            if kind in (env.ANSWER, env.FAILED):
                said.append((kind, (env.id_of(rest), decode(rest[8:]))))
            elif kind == env.REQUEST:
                rid, tag, payload = env.split_request(rest)
                said.append((kind, (rid, tag, decode(payload))))
            else:
                said.append((kind, decode(rest) if rest else None))


def test_posts_and_requests() -> None:
    said = converse(post("hi"), request(7, MUL, [6, 7]), TERMINATE)
    assert said == [(env.POST, {"Echoed": "hi"}), (env.ANSWER, (7, 42))]


def test_a_batch_is_handled_message_by_message() -> None:
    said = converse(batch(env.envelope(env.PING), request(1, MUL, [2, 3]), post("x")), TERMINATE)
    assert said == [(env.PONG, None), (env.ANSWER, (1, 6)), (env.POST, {"Echoed": "x"})]


def test_nothing_after_terminate_is_handled() -> None:
    assert converse(batch(TERMINATE, post("late"))) == []


def test_a_request_without_a_handler_fails_unhandled() -> None:
    ((kind, (rid, failure)),) = converse(request(3, "app::Nobody", None), TERMINATE)
    assert (kind, rid) == (env.FAILED, 3)
    assert failure == {"Unhandled": f"no handler for the request type with tag {tag_of('app::Nobody'):016x}"}


def test_a_handler_that_raises_fails_its_request_and_is_reported() -> None:
    said = converse(request(4, "app::Boom", None), request(5, MUL, [1, 1]), TERMINATE)
    (failed, (rid, failure)), (error, report), answered = said
    assert (failed, rid, error) == (env.FAILED, 4, env.ERROR)
    assert failure["Panicked"]["message"] == "ZeroDivisionError: integer division or modulo by zero"
    assert failure["Panicked"] == report
    assert report["file"] == __file__
    # The worker goes on.
    assert answered == (env.ANSWER, (5, 1))


def test_an_answer_json_cannot_hold_fails_wire() -> None:
    ((kind, (_, failure)),) = converse(request(6, "app::NaN", None), TERMINATE)
    assert kind == env.FAILED
    assert "app::NaN: the answer cannot be written as JSON" in failure["Wire"]


def test_a_request_that_is_not_json_fails_wire() -> None:
    bad = env.envelope(env.REQUEST, 0, env.request_fields(8, tag_of(MUL)), b"[6,")
    ((kind, (rid, failure)),) = converse(bad, TERMINATE)
    assert (kind, rid) == (env.FAILED, 8)
    assert failure["Wire"].startswith("app::Mul: the request is not JSON")


def test_a_post_handler_that_raises_is_reported_and_the_worker_goes_on() -> None:
    said = converse(post("Raise"), post("after"), TERMINATE)
    (kind, report), echoed = said
    assert kind == env.ERROR
    assert report["message"] == "KeyError: 'no such thing'"
    assert report["line"] is not None
    assert echoed == (env.POST, {"Echoed": "after"})


def test_ask_waits_for_its_answer_and_keeps_what_comes_meanwhile() -> None:
    # The parent's answer to the worker's request 0 comes after a post
    # and a ping: the ping is answered at once, the post after the ask.
    answer = env.envelope(env.ANSWER, 0, env.id_fields(0), encode("hello py"))
    said = converse(post("Ask"), post("meanwhile"), env.envelope(env.PING), answer, TERMINATE)
    assert said == [
        (env.REQUEST, (0, tag_of(GREET), "py")),
        (env.PONG, None),
        (env.POST, {"Answered": "hello py"}),
        (env.POST, {"Echoed": "meanwhile"}),
    ]


def test_a_failed_ask_is_a_remote_error() -> None:
    failed = env.envelope(env.FAILED, 0, env.id_fields(0), encode({"Unhandled": "no"}))
    said = converse(post("Ask"), failed, TERMINATE)
    assert said[0][0] == env.REQUEST
    kind, report = said[1]
    assert kind == env.ERROR
    assert report["message"] == "RemoteError: {'Unhandled': 'no'}"


def test_cancels_and_answers_nobody_waits_for_are_ignored() -> None:
    cancel = env.envelope(env.CANCEL, 0, env.id_fields(9))
    stray = env.envelope(env.ANSWER, 0, env.id_fields(9), b"1")
    assert converse(cancel, stray, post("x"), TERMINATE) == [(env.POST, {"Echoed": "x"})]


def test_close_from_inside_ends_the_loop() -> None:
    # `serve` returns after the handler; `run` then sends Closing and
    # runs on_close.
    assert converse(post("Close"), post("never")) == []


@pytest.mark.parametrize("kind", [env.ERROR, env.CLOSING, env.PONG, env.HELLO, env.AUTH, 99])
def test_a_kind_no_parent_sends_is_a_protocol_error(kind: int) -> None:
    with pytest.raises(env.ProtocolError, match=f"kind {kind}"):
        converse(env.envelope(kind), TERMINATE)
