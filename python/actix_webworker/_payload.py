"""Payloads in the JSON codec (PROTOCOL.md, section 5), and the names of
request types.

Every payload on a connection whose parent chose `Codec::Json` is one
JSON value, written as serde_json writes the Rust types: a struct is an
object, a tuple an array, an enum variant `{"Variant": value}` (a unit
variant is its name as a string), `Option` is `null` or the value. This
module is the only one that says `json`.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Dict, Optional

Json = Any
"""A JSON value as `json` reads and writes it: `dict`, `list`, `str`,
`int`, `float`, `bool` or `None`, nested."""

ErrorReport = Dict[str, Json]
"""An `ErrorReport`: `message`, `file`, `line`, `column`, `backtrace`."""


def encode(value: Json) -> bytes:
    """`value` as a payload: compact UTF-8 JSON.

    Raises `ValueError` for a NaN or an infinity, which serde_json cannot
    read (and would refuse on the other side, far from the cause), and
    `TypeError` for a value that is not JSON."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode()


def decode(payload: bytes) -> Json:
    """The value of a payload; `ValueError` when it is not JSON."""
    return json.loads(payload)


def tag_of(name: str) -> int:
    """The tag of a request type on the wire: the 64-bit FNV-1a hash of its
    name, the Rust path of the type (`request_name::<R>()` in Rust, e.g.
    `"my_app::jobs::Mul"`)."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def error_report(exc: BaseException) -> ErrorReport:
    """The `ErrorReport` of exception `exc`: its type and text, the file
    and line it was raised at (the innermost frame), and the traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where: Optional[traceback.FrameSummary] = frames[-1] if frames else None
    return {
        "message": f"{type(exc).__name__}: {exc}",
        "file": where.filename if where else None,
        "line": where.lineno if where else None,
        "column": None,
        "backtrace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
