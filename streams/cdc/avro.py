"""Avro binary encoding, the primitives the CDC envelope is written with: one copy of each.

Spec: https://avro.apache.org/docs/current/specification/#binary-encoding. Everything in
:mod:`streams.cdc` that writes envelope bytes (the reference writer
``envelope.encode_body``, the per-relation ``envelope.RelationCodec``, the column writers
of :mod:`.values` and the generated writers of :mod:`.codegen`) uses these; nothing else
encodes Avro by hand.

The last section is not generic Avro but the one union every envelope column value is
written in, ``["null", "boolean", "long", "double", "string"]`` of
``schemas/avro/cdc_change/v1.avsc``: a value is its branch number (a long) then its payload.
"""

from __future__ import annotations

import struct

# --- long: zig-zag, then a little-endian base-128 varint ---------------------------------


def _varint(n: int) -> bytes:
    """The varint of a non-negative int: 7 bits per byte, high bit set on all but the last."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lookup tables instead of the bit loop: a long is written for every length, count and
# LSN, and two table lookups are several times cheaper than the loop in CPython.
#: the varint of 0..16383 (complete), and the low 14 bits of a longer one (both bytes continued)
_VARINT14 = [_varint(i) for i in range(0x4000)]
_VARINT14_MORE = [bytes([(i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80]) for i in range(0x4000)]


def zigzag(n: int) -> bytes:
    """An Avro ``long``: zig-zag (0, -1, 1, -2 -> 0, 1, 2, 3) then varint, 14 bits per lookup."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x4000:
        return _VARINT14[n]
    if n < 0x1000_0000:
        return _VARINT14_MORE[n & 0x3FFF] + _VARINT14[n >> 14]
    if n < 0x400_0000_0000:
        return _VARINT14_MORE[n & 0x3FFF] + _VARINT14_MORE[(n >> 14) & 0x3FFF] + _VARINT14[n >> 28]
    return _varint(n)


#: the Avro long of 0..4095, indexed by the value: string lengths and map counts
LEN = [zigzag(i) for i in range(4096)]

# --- the other primitive types -----------------------------------------------------------

#: ``double``: 8 bytes, IEEE 754 little-endian
double = struct.Struct("<d").pack
#: ``boolean``: one byte
TRUE, FALSE = b"\x01", b"\x00"


def string(s: str) -> bytes:
    """A ``string``: its UTF-8 length as a long, then the bytes."""
    raw = s.encode("utf-8")
    return zigzag(len(raw)) + raw


#: the end of an array or a map: a block of zero items
BLOCK_END = b"\x00"


def string_array(items: list[str] | tuple[str, ...]) -> bytes:
    """An ``array<string>``: one block of ``len(items)`` strings, then the end."""
    if not items:
        return BLOCK_END
    return zigzag(len(items)) + b"".join(string(item) for item in items) + BLOCK_END


def map_head(count: int) -> bytes:
    """The start of a ``map`` of ``count`` entries written as one block (then the entries, then
    :data:`BLOCK_END`)."""
    if count == 0:
        return b""  # an empty map is only its end
    return LEN[count] if count < 4096 else zigzag(count)


# --- the envelope's value union: null | boolean | long | double | string -----------------

#: union branch 0: SQL NULL
VALUE_NULL = b"\x00"
#: union branch 1 and the boolean's byte
VALUE_TRUE, VALUE_FALSE = b"\x02" + TRUE, b"\x02" + FALSE
#: union branch 2 (long) and 3 (double); their payload follows
VALUE_LONG, VALUE_DOUBLE = b"\x04", b"\x06"
#: union branch 4 (string) and the string's length, for lengths 0..4095
STRING_HEAD = [b"\x08" + LEN[i] for i in range(4096)]


def string_head(n: int) -> bytes:
    """Union branch 4 and a string length of ``n`` bytes (the bytes follow)."""
    return STRING_HEAD[n] if n < 4096 else b"\x08" + zigzag(n)


def value(v: None | bool | int | float | str) -> bytes:
    """One envelope value as its union branch and payload."""
    if v is None:
        return VALUE_NULL
    if v is True:
        return VALUE_TRUE
    if v is False:
        return VALUE_FALSE
    if type(v) is str:
        raw = v.encode("utf-8")
        return string_head(len(raw)) + raw
    if type(v) is int:
        return VALUE_LONG + zigzag(v)
    if type(v) is float:
        return VALUE_DOUBLE + double(v)
    raise TypeError(f"{type(v).__name__} is not an envelope value")
