"""The worker's side of a running connection: `Worker` (what you
subclass), `Parent` (what it posts and asks through), and the loop that
hands each message from the parent to the right place.

Everything runs on one thread: a message is handled to the end before
the next is read, a request is answered before the next is started, and
`Parent.ask` waits for its answer, keeping what comes meanwhile for
after it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from . import _envelope as env
from ._envelope import Message
from ._frames import Closed, Connection
from ._payload import Json, decode, encode, error_report, tag_of
from ._streams import Produce, produce

# What ends the connection, raised through a handler by `Parent.ask`: not
# the handler's failure.
_ENDS = (Closed, env.ProtocolError)

Answer = Callable[[Any, Json], Json]
"""A request handler: called with the worker and the request's value, it
returns the answer's value."""


class RemoteError(Exception):
    """A request to the parent failed. `failure` is the parent's `Failure`
    as JSON: `{"Panicked": report}`, `{"Unhandled": text}`,
    `{"Wire": text}` or `"Gone"`."""

    def __init__(self, failure: Json) -> None:
        super().__init__(failure)
        self.failure: Json = failure


class Parent:
    """The parent, as the worker sees it: `self.parent` of a `Worker`."""

    def __init__(self, runtime: "_Runtime") -> None:
        self._rt = runtime
        self.data: Json = runtime.data
        """The worker's data (`WorkerBuilder::data`, Node's `workerData`):
        its JSON value, or None when the parent gave none."""
        self.trace: Optional[env.TraceContext] = None
        """While a handler answers a request that came with its asker's
        trace context (the parent had a `tracing` subscriber): that
        context (`trace.traceparent` is its W3C header); else None."""

    def post(self, value: Json, fds: Sequence[int] = ()) -> None:
        """Posts `value` (the JSON of the parent's `FromWorker` type) to
        the parent, with descriptors `fds` (at most 64), which stay open
        here: close them once posted if they are no longer needed.

        Raises `ValueError` for a value JSON cannot hold (NaN, infinity)
        or too many descriptors, `TypeError` for one that is not JSON."""
        if len(fds) > env.MAX_FDS_PER_MESSAGE:
            raise ValueError(f"at most {env.MAX_FDS_PER_MESSAGE} descriptors per message")
        self._rt.conn.send(env.envelope(env.POST, len(fds), payload=encode(value)), fds)

    def ask(self, name: str, value: Json) -> Json:
        """Asks the parent request `name` (its wire name: the declared one,
        else the Rust path of the type, e.g. `"my_app::Greet"`) with
        `value`, and returns the
        answer's value; raises `RemoteError` if the parent's handler
        failed or there is none. Blocks until the answer comes; posts and
        requests that come meanwhile are handled after it."""
        return self._rt.ask(name, value)

    def close(self) -> None:
        """Closes the worker from inside: once the current handler
        returns, `on_close` runs, the parent hears that the worker is
        closing, and the process exits with code 0."""
        self._rt.closing = True


class Worker:
    """The worker: subclass it and override `on_message` and `on_close`;
    `self.parent` posts to the parent and asks it. `run` makes one, with
    the parent, once the handshake is done."""

    def __init__(self, parent: Parent) -> None:
        self.parent = parent

    def on_message(self, data: Json, fds: List[int]) -> None:
        """A post from the parent: its value (the JSON of the parent's
        `ToWorker` type) and the descriptors sent with it, which are this
        handler's to close. An exception here is reported to the parent
        (an `Event::Error`) and the worker goes on."""

    def on_close(self) -> None:
        """The end: the parent terminated the worker, `parent.close()` was
        called, or the parent went away. Posts from here still reach a
        parent that is there."""


class _Runtime:
    """Reads the parent's messages and dispatches them to the worker."""

    def __init__(
        self,
        conn: Connection,
        make: Callable[[Parent], Worker],
        answers: Mapping[str, Answer],
        data: Json = None,
        streams: Mapping[str, Produce] = {},
    ) -> None:
        self.conn = conn
        self.data = data
        self.answers: Dict[int, Answer] = {tag_of(name): f for name, f in answers.items()}
        self.streams: Dict[int, Produce] = {tag_of(name): f for name, f in streams.items()}
        self.names: Dict[int, str] = {tag_of(name): name for name in [*answers, *streams]}
        self.next_id = 0
        self.backlog: List[Message] = []
        self.closing = False
        # Last: the worker may post or ask from its constructor.
        self.parent = Parent(self)
        self.worker = make(self.parent)

    def send(self, kind: int, fields: bytes = b"", payload: bytes = b"") -> None:
        self.conn.send(env.envelope(kind, 0, fields, payload))

    def report(self, exc: BaseException) -> None:
        """Tells the parent of an exception no handler caught."""
        self.send(env.ERROR, payload=encode(error_report(exc)))

    def read(self) -> List[Message]:
        """The messages of the next WebSocket message (a batch: several)."""
        return self.conn.read_messages()

    def ask(self, name: str, value: Json) -> Json:
        rid = self.next_id
        self.next_id += 1
        self.send(env.REQUEST, env.request_fields(rid, tag_of(name)), encode(value))
        while True:
            for kind, nfds, rest in self.read():
                if kind == env.PING:
                    self.send(env.PONG)
                elif kind in (env.ANSWER, env.FAILED) and env.id_of(rest) == rid:
                    # Answers carry no descriptors of their own here.
                    for fd in self.conn.take_fds(nfds):
                        os.close(fd)
                    answer = decode(rest[8:])
                    if kind == env.FAILED:
                        raise RemoteError(answer)
                    return answer
                else:
                    self.backlog.append((kind, nfds, rest))

    def ends_if_the_parents(self, exc: Exception) -> None:
        """Raises `exc` again when it is the end of the connection to the
        parent (raised through a handler by `Parent.ask`): a channel's
        `Closed` or `ProtocolError` is the handler's failure, not the
        worker's end."""
        if isinstance(exc, _ENDS) and self.conn.ended:
            raise exc

    def handle(self, kind: int, nfds: int, rest: bytes) -> bool:
        """Handles one message; False once the worker is to end."""
        if kind == env.POST:
            fds = self.conn.take_fds(nfds)
            try:
                self.worker.on_message(decode(rest), fds)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                self.ends_if_the_parents(exc)
                self.report(exc)
        elif kind == env.REQUEST:
            rid, tag, payload = env.split_request(rest)
            for fd in self.conn.take_fds(nfds):
                os.close(fd)
            self.answer(rid, tag, payload)
        elif kind == env.STREAM:
            rid, tag, window, payload = env.split_stream(rest)
            for fd in self.conn.take_fds(nfds):
                os.close(fd)
            self.stream(rid, tag, window, payload)
        elif kind == env.CREDIT:
            env.split_credit(rest)  # for a stream over already
        elif kind in (env.TRACED_REQUEST, env.TRACED_STREAM):
            if kind == env.TRACED_REQUEST:
                rid, tag, raw, payload = env.split_traced_request(rest)
                window = None
            else:
                rid, tag, window, raw, payload = env.split_traced_stream(rest)
            for fd in self.conn.take_fds(nfds):
                os.close(fd)
            try:
                context = env.read_context(raw)
            except ValueError as exc:
                self.send(env.FAILED, env.id_fields(rid), encode({"Wire": str(exc)}))
                return not self.closing
            # Seen by the handler as `parent.trace`, while it runs (a
            # stream's: while its generator is asked for items here).
            self.parent.trace = context
            try:
                if window is None:
                    self.answer(rid, tag, payload)
                else:
                    self.stream(rid, tag, window, payload)
            finally:
                self.parent.trace = None
        elif kind == env.TERMINATE:
            return False
        elif kind == env.PING:
            self.send(env.PONG)
        elif kind in (env.ANSWER, env.FAILED):
            env.id_of(rest)  # to a request nobody waits for any more
            for fd in self.conn.take_fds(nfds):
                os.close(fd)
        elif kind == env.CANCEL:
            env.id_of(rest)  # answered already: requests run one at a time
        else:
            raise env.ProtocolError(f"a message of kind {kind}, which no parent sends")
        return not self.closing

    def stream(self, rid: int, tag: int, window: int, payload: bytes) -> None:
        """Answers streamed request `rid` with its handler's items (see
        `_streams`), or a `Failure`."""
        fields = env.id_fields(rid)
        handler = self.streams.get(tag)
        if handler is None:
            failure: Json = {"Unhandled": f"no stream handler for the request type with tag {tag:016x}"}
            if tag in self.answers:
                failure = {"Wire": f"{self.names[tag]} is answered once, and was asked as a stream"}
            self.send(env.FAILED, fields, encode(failure))
            return
        try:
            items = handler(self.worker, decode(payload))
        except Exception as exc:  # noqa: BLE001 - the request fails, not the worker
            self.ends_if_the_parents(exc)
            self.panicked(fields, exc)
            return
        produce(self, rid, window, items)

    def panicked(self, fields: bytes, exc: BaseException) -> None:
        """A request's handler raised `exc`. As a panic in a Rust handler:
        the request fails with the report, and the parent hears of it as
        of any uncaught error."""
        report = error_report(exc)
        self.send(env.FAILED, fields, encode({"Panicked": report}))
        self.send(env.ERROR, payload=encode(report))

    def answer(self, rid: int, tag: int, payload: bytes) -> None:
        """Answers request `rid`: its handler's value, or a `Failure`."""
        fields = env.id_fields(rid)
        handler = self.answers.get(tag)
        if handler is None and tag in self.streams:
            failure = {"Wire": f"{self.names[tag]} is answered by a stream, and was asked once"}
            self.send(env.FAILED, fields, encode(failure))
            return
        if handler is None:
            failure = {"Unhandled": f"no handler for the request type with tag {tag:016x}"}
            self.send(env.FAILED, fields, encode(failure))
            return
        try:
            request = decode(payload)
        except ValueError as exc:
            failure = {"Wire": f"{self.names[tag]}: the request is not JSON: {exc}"}
            self.send(env.FAILED, fields, encode(failure))
            return
        try:
            answer = handler(self.worker, request)
        except Exception as exc:  # noqa: BLE001 - the request fails, not the worker
            self.ends_if_the_parents(exc)
            self.panicked(fields, exc)
            return
        try:
            encoded = encode(answer)
        except (TypeError, ValueError) as exc:
            failure = {"Wire": f"{self.names[tag]}: the answer cannot be written as JSON: {exc}"}
            self.send(env.FAILED, fields, encode(failure))
            return
        self.send(env.ANSWER, fields, encoded)

    def serve(self) -> None:
        """Handles messages until Terminate, `parent.close()`, or the end
        of the connection."""
        try:
            while True:
                while self.backlog:
                    if not self.handle(*self.backlog.pop(0)):
                        return
                self.backlog.extend(self.read())
        except Closed:
            return
