"""Channels (PROTOCOL.md, section 10): an end of a `MessageChannel` that
came in a post, as a descriptor, opened here as a `Channel` to post on
and receive from, beside the connection to the parent.

An end in a payload is `{"Descriptor": [index, first, fingerprint]}`:
`take_channel` finds its descriptor among the message's, speaks the
channel's hello (first or second, as the end says, sending back the
fingerprint it was given, with the JSON codec: the Rust end must be
opened with `ChannelOptions::codec(Codec::Json)`), and returns the
`Channel`. Everything runs on the caller's thread: `recv` blocks until
the other end posts, closes or goes.
"""

from __future__ import annotations

import os
import socket
from typing import List, Optional, Sequence, Tuple

from . import _envelope as env
from ._envelope import Message, ProtocolError
from ._frames import Closed, Connection
from ._payload import Json, decode, encode

# The largest message a channel takes, as the Rust end's default.
MAX_MESSAGE = 64 << 20
# An end that names no socket (PROTOCOL.md, section 10).
NO_SOCKET = 0xFFFFFFFF


class Channel:
    """An open end: `post` to the other end, `recv` what it posts, `close`.
    `why` says, once `recv` returned None, how the channel ended:
    `"PeerClosed"` (the other end closed), `"PeerGone"` (its process went),
    `"Closed"` (this end closed) or `"Broken"` (the other end sent what it
    may not: `error` says what)."""

    def __init__(self, fd: int, first: bool, fingerprint: int, max_message: int = MAX_MESSAGE) -> None:
        self.conn = Connection(socket.socket(fileno=fd), max_message)
        self.backlog: List[Message] = []
        self.why: Optional[str] = None
        # What broke the channel, when `why` is "Broken".
        self.error: Optional[ProtocolError] = None
        self.sent = 0
        self.received = 0
        self._hello(first, fingerprint)

    def _hello(self, first: bool, fingerprint: int) -> None:
        ours = env.hello(fingerprint, os.getpid(), env.CODEC_JSON)
        if first:
            self.conn.send(ours)
        try:
            theirs = env.read_hello(self.conn.read_message())
        finally:
            if not first:
                # Ours whatever we think of theirs, so both can tell.
                self.conn.send(ours)
        if theirs.version != env.PROTOCOL_VERSION:
            raise ProtocolError(f"the other end speaks protocol version {theirs.version}")
        if theirs.fingerprint != fingerprint:
            raise ProtocolError(
                f"the other end's fingerprint is {theirs.fingerprint:#x}, this end's {fingerprint:#x}"
            )
        if theirs.codec != env.CODEC_JSON:
            raise ProtocolError(f"the other end writes codec {theirs.codec}, not JSON")

    def fileno(self) -> int:
        """The socket, for `select`: readable when `recv` has something."""
        return self.conn.sock.fileno()

    def post(self, value: Json, fds: Sequence[int] = ()) -> None:
        """Posts `value` (the JSON of what this end sends) with descriptors
        `fds`, which stay open here."""
        if self.why is not None:
            raise Closed()
        if len(fds) > env.MAX_FDS_PER_MESSAGE:
            raise ValueError(f"at most {env.MAX_FDS_PER_MESSAGE} descriptors per message")
        self.conn.send(env.envelope(env.POST, len(fds), payload=encode(value)), fds)
        self.sent += 1

    def recv(self) -> Optional[Tuple[Json, List[int]]]:
        """The next post of the other end, with its descriptors (the
        caller's to close); None once the channel has ended (see `why`).
        What the other end may not send ends the channel: `why` is then
        `"Broken"` and `error` the `ProtocolError` (never raised here: it
        is the channel's, not the handler's, and a handler's ProtocolError
        would end the worker's own connection); a request is answered as
        unhandled (this library answers none on a channel)."""
        try:
            got = self._recv()
        except ProtocolError as e:
            self.why, self.error = "Broken", e
            got = None
        if got is not None:
            return got
        self._let_go()
        return None

    def _recv(self) -> Optional[Tuple[Json, List[int]]]:
        """`recv`'s reading; None once `why` says the channel ended."""
        while self.why is None:
            if not self.backlog:
                try:
                    self.backlog.extend(self.conn.read_messages())
                except Closed:
                    self.why = "PeerGone"
                    break
                continue
            kind, nfds, rest = self.backlog.pop(0)
            if kind == env.POST:
                fds = self.conn.take_fds(nfds)
                self.received += 1
                return decode(rest), fds
            for fd in self.conn.take_fds(nfds):
                os.close(fd)
            if kind == env.TERMINATE:
                # The other end closes: ours says so back.
                self.why = "PeerClosed"
                self.conn.close()
            elif kind == env.REQUEST:
                rid, tag, _ = env.split_request(rest)
                failure = {"Unhandled": f"a Python channel end answers no requests ({tag:016x})"}
                self.conn.send(env.envelope(env.FAILED, 0, env.id_fields(rid), encode(failure)))
            elif kind in (env.ANSWER, env.FAILED, env.CANCEL):
                env.id_of(rest)
            else:
                raise ProtocolError(f"a message of kind {kind} on a channel")
        return None

    def close(self) -> None:
        """Closes this end: the other is told after everything posted, and
        what it posts meanwhile is dropped; returns once it has closed too
        (or gone)."""
        if self.why is not None:
            return
        self.why = "Closed"
        try:
            self.conn.send(env.envelope(env.TERMINATE))
            while True:
                self.conn.read_message()
        except (Closed, ProtocolError, OSError):
            # Its end, what it may not send, or gone already.
            pass
        self._let_go()

    def _let_go(self) -> None:
        """Closes the socket, and the descriptors that came with what was
        not read: they go with the channel."""
        for fd in self.conn.take_fds(len(self.conn.fds)):
            os.close(fd)
        self.conn.sock.close()


def take_channel(value: Json, fds: List[int], max_message: int = MAX_MESSAGE) -> Channel:
    """Opens the channel end `value` (as a payload holds it) whose
    descriptor is among `fds`, the message's: that one is the channel's
    from now on (do not close it); the others stay the caller's."""
    try:
        index, first, fingerprint = value["Descriptor"]
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolError(f"not a channel end: {value!r}") from exc
    if not isinstance(index, int) or index == NO_SOCKET or not 0 <= index < len(fds):
        raise ProtocolError(f"a channel end names descriptor {index!r}, of {len(fds)}")
    fd = fds[index]
    return Channel(fd, bool(first), int(fingerprint), max_message)
