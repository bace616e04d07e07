"""Streamed answers (PROTOCOL.md, section 9): a handler that yields items.

A stream handler is called with the worker and the request's value and
returns an iterable (a generator, typically); its items go to the parent
one by one, each as an Item message, then an End. The parent's window
paces it: an item is taken from the iterable only while the credit (the
window, plus the parent's Credits, minus each item's whole message) is
above zero; with none, the producer waits for a Credit. Between items it
looks, without blocking, for what the parent sent: a Cancel for the
stream stops it (the generator is closed, so its `finally` runs) and
nothing more is sent; a Terminate stops it too and is handled after.
What else comes meanwhile is handled once the stream is over, in order.

An exception raised by the iterable ends the stream with `Raised` and
its text (the parent reads `WorkerError::StreamFailed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import _envelope as env
from ._payload import Json, encode

if TYPE_CHECKING:
    from ._worker import _Runtime

Produce = Callable[[Any, Json], Iterable[Json]]
"""A stream handler: called with the worker and the request's value, it
returns the items' values (a generator)."""


MAX_CREDIT = 1 << 40
"""The most credit a producer keeps; a grant beyond is clipped."""


class _Stopped(Exception):
    """The parent cancelled the stream, or terminates the worker."""


def produce(rt: "_Runtime", rid: int, window: int, items: Iterable[Json]) -> None:
    """Sends `items` as the streamed answer to request `rid`, within the
    parent's window, then its end, or the failure that stopped it."""
    fields = env.id_fields(rid)
    credit = window
    iterator = iter(items)
    try:
        while True:
            while credit <= 0 or rt.conn.ready():
                credit = min(credit + _take_what_came(rt, rid), MAX_CREDIT)
            try:
                item = next(iterator)
            except StopIteration:
                break
            try:
                payload = encode(item)
            except (TypeError, ValueError) as exc:
                failure = {"Wire": f"a stream item cannot be written as JSON: {exc}"}
                rt.send(env.FAILED, fields, encode(failure))
                return
            message = env.envelope(env.ITEM, 0, fields, payload)
            rt.conn.send(message)
            credit -= len(message)
    except _Stopped:
        return
    except env.ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - the stream fails, not the worker
        rt.send(env.FAILED, fields, encode({"Raised": str(exc)}))
        return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    rt.send(env.END, fields)


def _take_what_came(rt: "_Runtime", rid: int) -> int:
    """Reads the next message (blocking; a batch's messages all) and acts
    on what concerns stream `rid`: the bytes its Credits grant; `_Stopped`
    for its Cancel or a Terminate, once the rest of the batch is kept.
    Pings are answered; the rest waits in the backlog, in order."""
    more, stop = 0, False
    for kind, nfds, rest in rt.read():
        if kind == env.CREDIT:
            cid, granted = env.split_credit(rest)
            if cid == rid:
                more += granted
        elif kind == env.CANCEL and env.id_of(rest) == rid:
            stop = True
        elif kind == env.PING:
            rt.send(env.PONG)
        else:
            rt.backlog.append((kind, nfds, rest))
            stop = stop or kind == env.TERMINATE
    if stop:
        raise _Stopped()
    return more
