"""Traced requests (kind 24, PROTOCOL.md "Trace context"): answered as
requests are, their context seen by the handler as `parent.trace`; a
malformed context fails that request only; a context cut short breaks
the connection, as any message shorter than its header does."""

from __future__ import annotations

from typing import Dict

import pytest

import actix_webworker as aww
from actix_webworker import _envelope as env
from actix_webworker._envelope import ProtocolError
from actix_webworker._payload import encode, tag_of
from actix_webworker._worker import Answer
from test_runtime import ANSWERS, MUL, TERMINATE, converse

TRACE = "app::Trace"
TRACE_ID, SPAN_ID = bytes(range(1, 17)), bytes(range(17, 25))


def traceparent(worker: aww.Worker, request: aww.Json) -> aww.Json:
    """The context of the request being answered, as its W3C header."""
    trace = worker.parent.trace
    return trace.traceparent if trace is not None else None


TRACED: Dict[str, Answer] = {**ANSWERS, TRACE: traceparent}


def traced(rid: int, name: str, value: aww.Json, context: bytes) -> bytes:
    fields = env.request_fields(rid, tag_of(name)) + context
    return env.envelope(env.TRACED_REQUEST, 0, fields, encode(value))


def test_a_traced_request_is_answered_and_its_context_seen_by_its_handler() -> None:
    context = TRACE_ID + SPAN_ID + b"\x01"
    said = converse(
        traced(1, MUL, [6, 7], context),
        traced(2, TRACE, None, context),
        # A plain request after it: no context any more.
        env.envelope(env.REQUEST, 0, env.request_fields(3, tag_of(TRACE)), encode(None)),
        TERMINATE,
        answers=TRACED,
    )
    header = f"00-{TRACE_ID.hex()}-{SPAN_ID.hex()}-01"
    assert said == [(env.ANSWER, (1, 42)), (env.ANSWER, (2, header)), (env.ANSWER, (3, None))]


@pytest.mark.parametrize(
    "context, why",
    [
        (bytes(16) + SPAN_ID + b"\x01", "a trace id of zeros"),
        (TRACE_ID + bytes(8) + b"\x01", "a span id of zeros"),
        (TRACE_ID + SPAN_ID + b"\x80", "reserved flag bits set"),
    ],
)
def test_a_malformed_context_fails_its_request_and_the_worker_goes_on(context: bytes, why: str) -> None:
    said = converse(traced(4, MUL, [1, 2], context), traced(5, MUL, [2, 3], TRACE_ID + SPAN_ID + b"\x00"), TERMINATE)
    assert said == [(env.FAILED, (4, {"Wire": f"bad trace context: {why}"})), (env.ANSWER, (5, 6))]


def test_a_context_cut_short_is_a_protocol_error() -> None:
    short = env.envelope(env.TRACED_REQUEST, 0, env.request_fields(6, tag_of(MUL)) + TRACE_ID)
    with pytest.raises(ProtocolError, match="shorter than its id, tag and context"):
        converse(short, TERMINATE)
