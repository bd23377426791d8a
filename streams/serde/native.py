"""The compiled decode path: cavro (a Cython Avro codec) for plans that need no resolution.

Measured with ``bench/decode_cost.py`` (process CPU per event on the same bytes, interleaved
rounds) on this project's 2-core machine: ProductScraped 40-42 µs with fastavro, 24-28 µs
with cavro (1.5-1.7x); AlertTriggered 11 -> 6-7 µs. The decoded records are the same (by
repr), logical types included (Decimal with its scale, UTC datetime, UUID;
tests/contract/test_native_decode.py). What is left of the 24 µs is mostly the logical
types: without them cavro decodes ProductScraped in ~14 µs. Importing cavro imports numpy:
+23 MB of RSS per process.

cavro reads an Avro ``int`` into 32 bits: a corrupt varint beyond that range comes back
wrapped (a plausible, wrong number), where fastavro returns the full value for validation to
refuse. ``int`` and ``long`` share their wire encoding, so cavro gets the writer's schema with
every plain ``int`` read as ``long`` - the same values as fastavro, out-of-range ones
included. A schema with an int-based logical type (``date``, ``time-millis``) cannot be
widened that way and stays with fastavro (none of today's schemas has one).

Only the plain-decode plans go through cavro (the writer's schema alone, optionally followed
by appended defaults, resolution.py): those are every record of the current and the appended-
field versions. A pair that needs full writer -> reader resolution (fastavro's
``schemaless_reader(writer, reader)``) keeps fastavro: cavro's own resolution differs from
fastavro's in details this project's compatibility rules were written against, and such pairs
are rare (none among today's schemas).

The codec refuses a body with bytes left after the record, and cavro does not expose the
position of its ``MemoryReader``. Its Cython pickle state does, as a C string from the
position on (so it stops at the first NUL byte). The body is therefore decoded with a
16-byte non-zero sentinel appended: the record ended exactly at the end of the body if and
only if that string is the sentinel itself (~0.5 µs). Anything else - a cavro error, a
position inside the sentinel (truncated body), bytes before it - is not judged here: the
caller decodes the same bytes again with fastavro, whose verdict (and error message) is the
reference. Poison costs a second decode; good records never do. The one input read
differently is a record followed by exactly the sentinel and a NUL byte (a well-formed
record, accepted with that tail). This reads an implementation detail of cavro 1.0.0
(pinned exactly), so the module proves it on a probe record at import and, if the state
does not say what it should, returns no decoder: every decode then goes to fastavro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import cavro
except ImportError:  # the pinned lock installs it; without it everything decodes with fastavro
    cavro = None  # type: ignore[assignment]

#: decode(body) -> the record, or None when only fastavro may judge the body (see the module doc)
NativeDecode = Callable[[bytes], dict | None]

#: appended to every body; non-zero bytes, so the C string at the end position is exactly this
SENTINEL = bytes.fromhex("a55ac33c9669f00f5aa5e11e7887d22d")

_PROBE_SCHEMA = {"type": "record", "name": "Probe", "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}]}


def _rest(reader: Any) -> bytes:
    # Cython's auto-pickle of MemoryReader: (unpickler, (class, checksum, (buffer view, ..., C string at the position)))
    return reader.__reduce_cython__()[1][2][2]


def _position_is_readable() -> bool:
    if cavro is None:
        return False
    try:
        schema = cavro.Schema(_PROBE_SCHEMA, record_decodes_to_dict=True)
        body = schema.binary_encode({"n": 300, "s": "probe"})
        for extra, rest in ((b"", SENTINEL), (b"\x00", b""), (b"\x01\x02", b"\x01\x02" + SENTINEL)):
            reader = cavro.MemoryReader(body + extra + SENTINEL)
            if schema.binary_read(reader) != {"n": 300, "s": "probe"} or _rest(reader) != rest:
                return False
    except Exception:  # noqa: BLE001 - any surprise means: not this cavro, use fastavro
        return False
    return True


_AVAILABLE = _position_is_readable()


def available() -> bool:
    """True when cavro is installed and its reader's position can be read (see the module doc)."""
    return _AVAILABLE


class _IntLogicalType(Exception):
    pass


def _ints_as_longs(node: Any) -> Any:
    """The schema with every plain ``int`` read as ``long`` (same wire encoding, no wrap)."""
    if node == "int":
        return "long"
    if isinstance(node, list):
        return [_ints_as_longs(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "int":
        if "logicalType" in node and node["logicalType"] in ("date", "time-millis"):
            raise _IntLogicalType(node["logicalType"])
        return {**node, "type": "long"}
    out = dict(node)
    for key in ("type", "items", "values"):
        if key in out:
            out[key] = _ints_as_longs(out[key])
    if isinstance(out.get("fields"), list):
        out["fields"] = [{**f, "type": _ints_as_longs(f["type"])} for f in out["fields"]]
    return out


def native_decoder(writer_raw: Any) -> NativeDecode | None:
    """A compiled decoder for records written with ``writer_raw``, or None (use fastavro):
    cavro missing or not the version this module knows, an int-based logical type, or a
    schema cavro refuses."""
    if not _AVAILABLE:
        return None
    try:
        schema = cavro.Schema(_ints_as_longs(writer_raw), record_decodes_to_dict=True)
    except Exception:  # noqa: BLE001 - a schema cavro cannot parse stays with fastavro
        return None
    read = schema.binary_read
    reader_of = cavro.MemoryReader
    sentinel = SENTINEL

    def decode(body: bytes) -> dict | None:
        reader = reader_of(body + sentinel)
        try:
            record = read(reader)
        except Exception:  # noqa: BLE001 - fastavro decodes it again and names the error
            return None
        if reader.__reduce_cython__()[1][2][2] != sentinel:
            return None
        return record

    return decode
