"""The envelope (PROTOCOL.md, sections 3 and 4): the header in front of
every message, batches of messages, and the hello.

A message is `kind`, `nfds` (how many descriptors belong to it), the
fixed fields of its kind, then its payload. Every integer here is little
endian. Nothing in this module touches a socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

PROTOCOL_VERSION = 8
"""The version of the wire protocol this package speaks."""

MAGIC = b"AWW\x01"
CODEC_BINCODE = 0
CODEC_JSON = 1

# The kinds of message (PROTOCOL.md, "The envelope").
HELLO = 1
POST = 2
REQUEST = 3
ANSWER = 4
FAILED = 5
ERROR = 6
TERMINATE = 7
CLOSING = 8
BATCH = 9
REFUSED = 10
CANCEL = 11
AUTH = 12
PING = 13
PONG = 14
DATA = 15
# Streamed answers (section 9).
ITEM = 16
END = 17
CREDIT = 18
STREAM = 19
TRACED_REQUEST = 24
TRACED_STREAM = 25

# The hello's flags: bit 0, the worker's data follows the hellos.
HELLO_DATA_FOLLOWS = 1

MAX_FDS_PER_MESSAGE = 64
# A batch's header, the target size, one more entry's length and message.
MAX_BATCH = 2 + 64 * 1024 + 4 + 4 * 1024

Message = Tuple[int, int, bytes]
"""One message taken apart: its kind, its `nfds`, and the rest (its fixed
fields, then its payload)."""


class ProtocolError(ValueError):
    """The parent sent what the protocol does not allow: the connection is
    broken and ends."""


class BrokenBatch(ProtocolError):
    """A batch broken at one of its messages: `before` are those whole
    ahead of it, to be handled before the connection ends."""

    def __init__(self, why: str, before: List[Message]) -> None:
        super().__init__(why)
        self.before = before


def envelope(kind: int, nfds: int = 0, fields: bytes = b"", payload: bytes = b"") -> bytes:
    """One message: the header, the fixed fields of `kind`, the payload."""
    return bytes([kind, nfds]) + fields + payload


def split(message: bytes, limit: int) -> List[Message]:
    """The messages of one WebSocket message: itself, or a batch's.

    A batch is `9, 0`, then for each message a u32 length and the message.
    Batches do not nest, carry no descriptors of their own, and are at
    most `MAX_BATCH` bytes; each of their messages is at most `limit`."""
    if len(message) < 2:
        raise ProtocolError(f"a message of {len(message)} bytes, shorter than its header")
    kind, nfds = message[0], message[1]
    if kind != BATCH:
        return [(kind, nfds, message[2:])]
    if nfds != 0:
        raise ProtocolError("a batch that claims descriptors of its own")
    if len(message) > MAX_BATCH:
        raise ProtocolError(f"a batch of {len(message)} bytes, over {MAX_BATCH}")
    out: List[Message] = []
    at = 2
    while at < len(message):
        if len(message) - at < 4:
            raise BrokenBatch("a batch cut off inside a length", out)
        (n,) = struct.unpack_from("<I", message, at)
        inner = message[at + 4 : at + 4 + n]
        if len(inner) != n:
            raise BrokenBatch(f"a batch cut off inside a message of {n} bytes", out)
        if n < 2:
            raise BrokenBatch(f"a message of {n} bytes in a batch, shorter than its header", out)
        if n > limit:
            raise BrokenBatch(f"a message of {n} bytes in a batch, over the limit of {limit}", out)
        if inner[0] == BATCH:
            raise BrokenBatch("a batch inside a batch", out)
        out.append((inner[0], inner[1], inner[2:]))
        at += 4 + n
    return out


def id_of(rest: bytes) -> int:
    """The request id at the front of a Request, Answer, Failed or Cancel."""
    if len(rest) < 8:
        raise ProtocolError("a message shorter than its request id")
    (rid,) = struct.unpack_from("<Q", rest)
    return int(rid)


def request_fields(rid: int, tag: int) -> bytes:
    """The fixed fields of a Request: its id and the tag of its type."""
    return struct.pack("<QQ", rid, tag)


def split_request(rest: bytes) -> Tuple[int, int, bytes]:
    """A Request's id, tag and payload."""
    if len(rest) < 16:
        raise ProtocolError("a request shorter than its id and tag")
    rid, tag = struct.unpack_from("<QQ", rest)
    return int(rid), int(tag), rest[16:]


def split_stream(rest: bytes) -> Tuple[int, int, int, bytes]:
    """A Stream request's id, tag, window and payload (section 9)."""
    if len(rest) < 24:
        raise ProtocolError("a stream request shorter than its id, tag and window")
    rid, tag, window = struct.unpack_from("<QQQ", rest)
    return int(rid), int(tag), int(window), rest[24:]


def split_credit(rest: bytes) -> Tuple[int, int]:
    """A Credit's stream id and bytes (section 9)."""
    if len(rest) < 16:
        raise ProtocolError("a credit shorter than its id and bytes")
    rid, more = struct.unpack_from("<QQ", rest)
    return int(rid), int(more)


@dataclass(frozen=True)
class TraceContext:
    """The trace context a traced request carries (PROTOCOL.md, "Trace
    context"): the W3C trace id (16 bytes) and the asking span's id (8),
    neither all zero, and the flags (bit 0: sampled)."""

    trace_id: bytes
    span_id: bytes
    flags: int

    @property
    def traceparent(self) -> str:
        """As a W3C `traceparent` header: `00-<trace>-<span>-<flags>`."""
        return f"00-{self.trace_id.hex()}-{self.span_id.hex()}-{self.flags:02x}"


CONTEXT_LEN = 16 + 8 + 1


def split_traced_request(rest: bytes) -> Tuple[int, int, bytes, bytes]:
    """A TracedRequest's id, tag, context bytes (unchecked: see
    `read_context`) and payload."""
    if len(rest) < 16 + CONTEXT_LEN:
        raise ProtocolError("a traced request shorter than its id, tag and context")
    rid, tag = struct.unpack_from("<QQ", rest)
    return int(rid), int(tag), rest[16 : 16 + CONTEXT_LEN], rest[16 + CONTEXT_LEN :]


def split_traced_stream(rest: bytes) -> Tuple[int, int, int, bytes, bytes]:
    """A TracedStream's id, tag, window, context bytes (unchecked: see
    `read_context`) and payload."""
    if len(rest) < 24 + CONTEXT_LEN:
        raise ProtocolError("a traced stream request shorter than its id, tag, window and context")
    rid, tag, window = struct.unpack_from("<QQQ", rest)
    return int(rid), int(tag), int(window), rest[24 : 24 + CONTEXT_LEN], rest[24 + CONTEXT_LEN :]


def read_context(raw: bytes) -> TraceContext:
    """A trace context, checked; `ValueError` saying what is wrong with it
    (ids of zeros, reserved flags): the request fails, the connection
    goes on."""
    trace_id, span_id, flags = raw[:16], raw[16:24], raw[24]
    if trace_id == bytes(16):
        raise ValueError("bad trace context: a trace id of zeros")
    if span_id == bytes(8):
        raise ValueError("bad trace context: a span id of zeros")
    if flags & ~1:
        raise ValueError("bad trace context: reserved flag bits set")
    return TraceContext(trace_id, span_id, flags)


def id_fields(rid: int) -> bytes:
    """The fixed field of an Answer, Failed or Cancel: the request's id."""
    return struct.pack("<Q", rid)


@dataclass(frozen=True)
class Hello:
    """A hello, read as far as its version goes (a hello of version 4 or
    earlier has no codec byte)."""

    version: int
    fingerprint: int
    pid: int
    codec: Optional[int]
    flags: int = 0


def hello(fingerprint: int, pid: int, codec: int = CODEC_JSON) -> bytes:
    """This side's hello, of `PROTOCOL_VERSION` (a worker's flags are 0)."""
    fields = MAGIC + struct.pack("<IQI", PROTOCOL_VERSION, fingerprint, pid) + bytes([codec, 0])
    return envelope(HELLO, 0, fields)


def read_hello(message: bytes) -> Hello:
    """The parent's hello; `ProtocolError` if `message` is not one."""
    if len(message) < 22 or message[0] != HELLO or message[2:6] != MAGIC:
        raise ProtocolError("the parent's first message is not a hello")
    version, fingerprint, pid = struct.unpack_from("<IQI", message, 6)
    codec = message[22] if version >= 5 and len(message) > 22 else None
    flags = message[23] if version >= 6 and len(message) > 23 else 0
    return Hello(int(version), int(fingerprint), int(pid), codec, flags)


def read_data(message: bytes) -> bytes:
    """The payload of the Data message that follows the hellos (its shape,
    a u64, is the Rust side's concern); `ProtocolError` if `message` is
    not one."""
    if len(message) < 10 or message[0] != DATA:
        raise ProtocolError("the parent's hello said its data follows, and it did not")
    return message[10:]
