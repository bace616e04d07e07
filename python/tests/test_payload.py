"""Payloads in the JSON codec (PROTOCOL.md, section 5), request tags and
error reports."""

from __future__ import annotations

import math
import struct

import pytest

from actix_webworker import tag_of
from actix_webworker._payload import decode, encode, error_report


def test_compact_utf8_json() -> None:
    assert encode({"Echo": "héllo ✓"}) == '{"Echo":"héllo ✓"}'.encode()
    assert decode('{"Echo":"héllo ✓"}'.encode()) == {"Echo": "héllo ✓"}


@pytest.mark.parametrize(
    ("value", "json"),
    [
        # The table of PROTOCOL.md, section 5: serde's JSON of Rust values.
        ({"flag": True, "list": ["a"]}, b'{"flag":true,"list":["a"]}'),  # struct
        ([6, 7], b"[6,7]"),  # tuple struct Mul(6, 7)
        ("py", b'"py"'),  # newtype Greet("py")
        (None, b"null"),  # (), unit struct, None
        ("Closing", b'"Closing"'),  # unit variant
        ({"Add": [2, 3]}, b'{"Add":[2,3]}'),  # tuple variant
        ({"Panicked": {"message": "m", "line": 12}}, b'{"Panicked":{"message":"m","line":12}}'),
        (2**64 - 1, b"18446744073709551615"),  # u64 in full
    ],
)
def test_serdes_shapes(value: object, json: bytes) -> None:
    assert encode(value) == json
    assert decode(json) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"ratio": [1.0, math.nan]}])
def test_nan_and_infinities_are_refused_here(value: object) -> None:
    # serde_json cannot read them: an error at the writer, not the reader.
    with pytest.raises(ValueError):
        encode(value)


def test_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode({1, 2})


def test_floats_come_back_bit_for_bit() -> None:
    # Python writes the shortest decimal that reads back exactly, as
    # serde_json (with float_roundtrip) reads it.
    for bits in (0x24F1C0E3C0F2B3A9, 0x3FB999999999999A, 0x0000000000000001, 0x7FEFFFFFFFFFFFFF):
        (f,) = struct.unpack("<d", struct.pack("<Q", bits))
        (back,) = struct.unpack("<Q", struct.pack("<d", decode(encode(f))))
        assert back == bits


def test_broken_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b'{"Echo": ')


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        # FNV-1a, 64 bits: its published test vectors.
        ("", 0xCBF29CE484222325),
        ("a", 0xAF63DC4C8601EC8C),
        ("foobar", 0x85944171F73967E8),
    ],
)
def test_a_request_tag_is_fnv_1a_of_the_name(name: str, tag: int) -> None:
    assert tag_of(name) == tag


def test_the_tag_of_a_name_beyond_ascii_hashes_its_utf8() -> None:
    h = 0xCBF29CE484222325
    for byte in "é".encode():
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    assert tag_of("é") == h


def raises_here() -> None:
    raise KeyError("missing")


def test_an_error_report_says_where() -> None:
    try:
        raises_here()
    except KeyError as e:
        report = error_report(e)
    assert report["message"] == "KeyError: 'missing'"
    assert report["file"] == __file__
    assert report["line"] == raises_here.__code__.co_firstlineno + 1
    assert report["column"] is None
    assert "Traceback" in report["backtrace"] and "raises_here" in report["backtrace"]
    # And it is a payload as it stands.
    assert decode(encode(report)) == report


def test_an_error_never_raised_has_no_place() -> None:
    report = error_report(ValueError("made, not raised"))
    assert report["message"] == "ValueError: made, not raised"
    assert report["file"] is None and report["line"] is None
