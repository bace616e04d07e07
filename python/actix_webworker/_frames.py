"""The connection (PROTOCOL.md, sections 2 and 6): WebSocket frames over
the socket, and the descriptors that come with them.

Each message goes out as one binary frame with FIN set, unmasked; frames
come in masked or not, fragmented or not, with pings and pongs among
them (skipped). Descriptors arrive as `SCM_RIGHTS` beside the bytes and
wait in a queue until a message claims them. This is the only module
that reads or writes the socket.
"""

from __future__ import annotations

import array
import select
import socket
import struct
from typing import List, Optional, Sequence

from ._envelope import BATCH, MAX_BATCH, MAX_FDS_PER_MESSAGE, BrokenBatch, Message, ProtocolError, split

OP_CONTINUATION = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

MAX_FDS_PER_SENDMSG = 253
MAX_UNCLAIMED_FDS = 506
# A frame's header beside the largest message.
FRAME_OVERHEAD = 64


class Closed(Exception):
    """The connection ended: a close frame, or the end of the stream."""


def frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """`payload` as one frame: FIN set, not masked, the length in the
    shortest form RFC 6455 allows (big endian when extended)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes([first, n])
    elif n < 1 << 16:
        head = bytes([first, 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 127]) + struct.pack(">Q", n)
    return head + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """`payload` XORed with the 4-byte `mask`, repeated."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class Connection:
    """The socket to the parent: whole messages in and out, descriptors
    queued in the order they came."""

    def __init__(self, sock: socket.socket, max_message: int, remote: bool = False) -> None:
        # A plain socket, or an `ssl.SSLSocket` (a subclass) over TCP.
        self.sock = sock
        self.max_frame = max_message + FRAME_OVERHEAD
        self.buf = bytearray()
        self.fds: List[int] = []
        # Bytes of the peer's stream taken, and of them those in whole
        # frames: what our close frame says we read (PROTOCOL.md, section 2).
        self.consumed = 0
        self.taken = 0
        # Over TCP (and TLS, which has no recvmsg) no descriptors cross.
        self.remote = remote
        # A batch broken at one of its messages, the messages ahead of it
        # given first: raised at the next read.
        self.broken: Optional[BrokenBatch] = None
        # Its reading ended (the end of the stream, or what the protocol
        # does not allow): told apart from a channel's error raised
        # through a handler.
        self.ended = False

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            if self.remote:
                data = self.sock.recv(1 << 16)
            else:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(MAX_FDS_PER_SENDMSG * 4)
                )
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds = array.array("i")
                        fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
                        self.fds.extend(fds)
                if len(self.fds) > MAX_UNCLAIMED_FDS:
                    raise ProtocolError(
                        f"{len(self.fds)} descriptors received and not claimed, "
                        f"over {MAX_UNCLAIMED_FDS}"
                    )
            if not data:
                if self.buf:
                    raise ProtocolError("the connection ended inside a frame")
                raise Closed()
            self.buf += data

    def _take(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += n
        return out

    def read_message(self) -> bytes:
        """The next message's bytes, its fragments joined; `Closed` at a
        close frame or the end of the stream, `ProtocolError` for what
        RFC 6455 or the protocol does not allow (either sets `ended`)."""
        try:
            return self._read_message()
        except (Closed, ProtocolError):
            self.ended = True
            raise

    def _read_message(self) -> bytes:
        message = bytearray()
        fragmented = False
        while True:
            b0, b1 = self._take(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if b0 & 0x70:
                raise ProtocolError("a frame with reserved bits set")
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._take(8))
            mask: Optional[bytes] = self._take(4) if b1 & 0x80 else None
            # Over our limit only a batch may go, up to MAX_BATCH (a writer
            # of a larger limit batches small messages past ours; each of
            # them is held to the limit, `split`): the message's kind is
            # its first byte, waited for when the size alone does not say.
            total = len(message) + length
            if total > self.max_frame:
                binary = opcode in (OP_BINARY, OP_CONTINUATION)
                if not (binary and total <= MAX_BATCH and self._kind(message, mask) == BATCH):
                    raise ProtocolError(f"a frame of {length} bytes, over the limit of {self.max_frame}")
            payload = self._take(length)
            self.taken = self.consumed
            if mask is not None:
                payload = unmask(payload, mask)
            if opcode == OP_CLOSE:
                raise Closed()
            if opcode in (OP_PING, OP_PONG):
                continue
            if opcode == OP_TEXT:
                raise ProtocolError("a text frame")
            if opcode == OP_BINARY and fragmented:
                raise ProtocolError("a new message inside a fragmented one")
            if opcode == OP_CONTINUATION and not fragmented:
                raise ProtocolError("a continuation frame with no message to continue")
            if opcode not in (OP_BINARY, OP_CONTINUATION):
                raise ProtocolError(f"a frame of unknown opcode {opcode}")
            message += payload
            if fin:
                return bytes(message)
            fragmented = True

    def _kind(self, message: bytearray, mask: Optional[bytes]) -> int:
        """The kind (first byte) of the message being read: that of its
        first fragment, else of the frame whose header was just taken."""
        if message:
            return message[0]
        self._fill(1)
        return self.buf[0] ^ (mask[0] if mask is not None else 0)

    def read_messages(self) -> List[Message]:
        """The messages of the next WebSocket message (a batch: several),
        each held to the limit. A batch broken at one of its messages gives
        those ahead of it first, as the Rust reader does; the error comes
        at the next read."""
        if self.broken is not None:
            self.ended = True
            raise self.broken
        try:
            return split(self.read_message(), self.max_frame)
        except BrokenBatch as e:
            if not e.before:
                self.ended = True
                raise
            self.broken = e
            return e.before
        except ProtocolError:
            self.ended = True
            raise

    def ready(self) -> bool:
        """Whether something has come that has not been read: a look that
        never blocks (a producer of a streamed answer looks between items
        for a cancel)."""
        if self.buf:
            return True
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def take_fds(self, n: int) -> List[int]:
        """The first `n` descriptors received and not claimed yet: those
        of the message that claims `n`. Its reader owns them."""
        if n > MAX_FDS_PER_MESSAGE:
            raise ProtocolError(f"a message claims {n} descriptors, over {MAX_FDS_PER_MESSAGE}")
        if n > len(self.fds):
            raise ProtocolError(f"a message claims {n} descriptors, {len(self.fds)} came")
        taken, self.fds = self.fds[:n], self.fds[n:]
        return taken

    def send(self, message: bytes, fds: Sequence[int] = ()) -> None:
        """Sends `message` as one frame, with descriptors `fds` (which stay
        open here) attached to its first bytes."""
        data = frame(message)
        if fds and self.remote:
            raise ValueError("descriptors cannot cross to a remote parent")
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self.sock.sendmsg([data], anc)
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def close(self) -> None:
        """Sends a close frame saying how much of the peer's stream was
        taken (`read N`), and shuts the write side; a peer already gone is
        no error here."""
        reason = struct.pack(">H", 1000) + f"read {self.taken}".encode()
        try:
            self.sock.sendall(frame(reason, OP_CLOSE))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
