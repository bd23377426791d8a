"""Per-relation compiled envelope writers: pgoutput tuple text -> Avro envelope bytes + key.

The generic path (``values.envelope_row`` -> ``envelope.change_events`` -> ``avro_body``)
builds a dict of Python values per row, dispatches on each value's type and json-dumps
every key. Here that work is done once per relation, when its Relation message arrives:
every column gets its map key already Avro-encoded and a converter from the raw tuple
text straight to the bytes of its union branch, so a row is written with no
intermediate values. The bytes are exactly those of the generic path (the tests compare
both on generated rows); anything the fast converters do not recognise (infinite or BC
timestamps, quoted array elements, non-text arrays, ...) goes through the generic
converter of ``values.py`` for that value only.

The source record is split the same way: schema, table and snapshot flag are fixed per
relation, commit LSN, xid and commit time per transaction; only the change's LSN is
written per change.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from streams.cdc.pgoutput import UNCHANGED_TOAST, Delete, Insert, Relation, TupleData, Update
from streams.cdc.values import (
    BOOL,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    OID,
    TIMESTAMP,
    TIMESTAMPTZ,
    EnvelopeValue,
    ValueConverter,
)

TEXT_ARRAY, VARCHAR_ARRAY = 1009, 1015

_DOUBLE = struct.Struct("<d").pack
_U32 = struct.Struct("!I").unpack_from
_NULL = b"\x00"
_TRUE = b"\x02\x01"
_FALSE = b"\x02\x00"


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: the varint of 0..16383, and the low 14 bits of a longer one (both bytes continued)
_VARINT14 = [_varint_slow(i) for i in range(0x4000)]
_VARINT14_MORE = [bytes([(i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80]) for i in range(0x4000)]


def zigzag(n: int) -> bytes:
    """An Avro long (zig-zag varint), 14 bits per table lookup."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x4000:
        return _VARINT14[n]
    if n < 0x1000_0000:
        return _VARINT14_MORE[n & 0x3FFF] + _VARINT14[n >> 14]
    if n < 0x400_0000_0000:
        return _VARINT14_MORE[n & 0x3FFF] + _VARINT14_MORE[(n >> 14) & 0x3FFF] + _VARINT14[n >> 28]
    return _varint_slow(n)


#: the Avro long of 0..4095 (string lengths, map counts), indexed by the value itself
_LEN = [zigzag(i) for i in range(4096)]
#: union branch 4 (string) followed by the length, for 0..4095
_STR_HEAD = [b"\x08" + _LEN[i] for i in range(4096)]


def _str_head(n: int) -> bytes:
    return _STR_HEAD[n] if n < 4096 else b"\x08" + zigzag(n)


def avro_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return zigzag(len(raw)) + raw


def encode_value(value: EnvelopeValue) -> bytes:
    """One envelope value as its union branch + payload (what ``avro_body._row`` writes)."""
    if value is None:
        return _NULL
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if type(value) is str:
        raw = value.encode("utf-8")
        return _str_head(len(raw)) + raw
    if type(value) is int:
        return b"\x04" + zigzag(value)
    if type(value) is float:
        return b"\x06" + _DOUBLE(value)
    raise TypeError(f"{type(value).__name__} is not an envelope value")


def _checked_utf8(raw: bytes) -> None:
    if not raw.isascii():
        raw.decode("utf-8")  # the generic path decodes: invalid text fails the same way


# --- fast text -> envelope-text converters; None means "not the simple case" ---------------
def _timestamp_iso(raw: bytes, tz: bool) -> bytes | None:
    """PostgreSQL ISO output (DateStyle=ISO, TimeZone=UTC) -> ``datetime.isoformat()``."""
    n = len(raw)
    if tz:
        if raw[n - 3 :] != b"+00":
            return None
        n -= 3
        suffix = b"+00:00"
    else:
        suffix = b""
    if n < 19 or raw[4] != 0x2D or raw[7] != 0x2D or raw[10] != 0x20 or raw[13] != 0x3A or raw[16] != 0x3A:
        return None
    if n == 19:
        frac = b""
    elif raw[19] == 0x2E and 21 <= n <= 26:
        frac = raw[19:n].ljust(7, b"0")
        if not frac[1:].isdigit() or frac == b".000000":
            return None
    else:
        return None
    body = raw[:19]
    if not (body[:4] + body[5:7] + body[8:10] + body[11:13] + body[14:16] + body[17:19]).isdigit():
        return None
    return body[:10] + b"T" + body[11:] + frac + suffix


# array elements PostgreSQL prints: unquoted (printable ASCII without space, quote, comma,
# backslash or braces) or quoted without escapes (printable ASCII without quote or backslash);
# anything else (escapes, non-ASCII, nesting, bounds) takes the generic path
_UNQUOTED = rb"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7a\x7c\x7e]+"
_QUOTED = rb'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_ELEMENT = rb"(?:" + _QUOTED + rb"|" + _UNQUOTED + rb")"
_PLAIN_ARRAY = re.compile(rb"\{(?:" + _ELEMENT + rb"(?:," + _ELEMENT + rb")*)?\}")
_ELEMENTS = re.compile(rb'"([^"]*)"|([^,]+)')


def _text_array_json(raw: bytes) -> bytes | None:
    """PostgreSQL's text of a one-dimensional text array -> the envelope's JSON text."""
    if _PLAIN_ARRAY.fullmatch(raw) is None:
        return None
    if 0x22 not in raw:  # all unquoted
        inner = raw[1:-1]
        if not inner:
            return b"[]"
        parts = [b"null" if p == b"NULL" else b'"' + p + b'"' for p in inner.split(b",")]
    else:
        parts = [
            b"null" if plain == b"NULL" else b'"' + (quoted or plain) + b'"'
            for quoted, plain in _ELEMENTS.findall(raw, 1, len(raw) - 1)
        ]
    return b"[" + b",".join(parts) + b"]"


_PLAIN_JSON_STRING = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def _json_string(raw: bytes) -> bytes:
    if _PLAIN_JSON_STRING.fullmatch(raw) is not None:
        return b'"' + raw + b'"'
    return json.dumps(raw.decode("utf-8")).encode()


# --- one column --------------------------------------------------------------------------
Writer = Callable[[bytes], bytes]


def _writers(converter: ValueConverter, type_oid: int) -> tuple[Writer | None, Callable[[bytes], bytes]]:
    """(value writer, key-JSON writer) for a column type.

    The value writer maps the tuple text to union branch + payload; ``None`` means "the
    text itself, as an Avro string" (written inline by the row loop). The key writer maps
    it to the JSON text that ``json.dumps`` gives the envelope value.
    """
    generic = converter.envelope_fn(type_oid)

    def generic_value(raw: bytes) -> bytes:
        return encode_value(generic(raw))

    def generic_key(raw: bytes) -> bytes:
        return json.dumps(generic(raw), separators=(",", ":")).encode()

    if type_oid == BOOL:
        return (lambda raw: _TRUE if raw == b"t" else _FALSE), (lambda raw: b"true" if raw == b"t" else b"false")
    if type_oid in (INT2, INT4, INT8, OID):
        return (lambda raw: b"\x04" + zigzag(int(raw))), (lambda raw: str(int(raw)).encode())
    if type_oid in (FLOAT4, FLOAT8):
        return (lambda raw: b"\x06" + _DOUBLE(float(raw))), generic_key
    if type_oid in (TIMESTAMPTZ, TIMESTAMP):
        tz = type_oid == TIMESTAMPTZ
        last: list[bytes | None] = [None, None]  # the previous text and its ISO form (keys, now())

        def iso(raw: bytes) -> bytes | None:
            if raw != last[0]:
                last[0], last[1] = raw, _timestamp_iso(raw, tz)
            return last[1]

        def ts_value(raw: bytes) -> bytes:
            text = iso(raw)
            return generic_value(raw) if text is None else _STR_HEAD[len(text)] + text

        def ts_key(raw: bytes) -> bytes:
            text = iso(raw)
            return generic_key(raw) if text is None else b'"' + text + b'"'

        return ts_value, ts_key
    if converter.is_array(type_oid):
        if type_oid in (TEXT_ARRAY, VARCHAR_ARRAY):

            def array_value(raw: bytes) -> bytes:
                text = _text_array_json(raw)
                if text is None:
                    return generic_value(raw)
                return _str_head(len(text)) + text

            return array_value, generic_key
        return generic_value, generic_key

    def text_key(raw: bytes) -> bytes:
        _checked_utf8(raw)
        return _json_string(raw)

    return None, text_key  # canonical as printed: written as the text itself


# --- one relation ------------------------------------------------------------------------
class RelationCodec:
    """Writes a relation's rows and the fixed parts of its envelopes; built once per Relation."""

    def __init__(self, relation: Relation, converter: ValueConverter, snapshot: bool = False) -> None:
        self.relation = relation
        self.ncols = len(relation.columns)
        self.columns: list[tuple[bytes, bytes, Writer | None, str]] = []
        keys: list[tuple[int, bytes, Callable[[bytes], bytes]]] = []
        for index, column in enumerate(relation.columns):
            name = avro_string(column.name)
            value_writer, key_writer = _writers(converter, column.type_oid)
            self.columns.append((name, name + _NULL, value_writer, column.name))
            if column.is_key:
                prefix = json.dumps(column.name).encode() + b":"
                keys.append((index, (b"{" if not keys else b",") + prefix, key_writer))
        self.keys = keys
        key_names = [c.name for c in relation.columns if c.is_key]
        self.key_columns_avro = _string_array(key_names)
        self.no_toast = _string_array([])
        self.relation_tail = avro_string(relation.namespace) + avro_string(relation.name) + (
            b"\x01" if snapshot else b"\x00"
        )
        # a 'K' old tuple: only the key columns, in column order
        self.key_columns = [self.columns[i] for i, _, _ in keys]
        self.key_indexes = [i for i, _, _ in keys]
        self.row = _compile_row(self)  # type: ignore[method-assign]
        self.insert = _compile_insert(self)

    # --- rows ------------------------------------------------------------------------
    def row(self, values: TupleData) -> tuple[bytes, list[str]]:
        """The ``before``/``after`` union (branch 1, the map) and the unchanged-TOAST columns.

        Replaced per instance by a compiled, unrolled version that calls this one for rows
        with unchanged-TOAST columns."""
        if len(values) != self.ncols:
            raise ValueError(f"tuple of {len(values)} columns for {self.ncols}-column relation {self.relation.name}")
        toast = values.count(UNCHANGED_TOAST)
        unchanged: list[str] = []
        count = self.ncols - toast
        out = bytearray(b"\x02")
        if count:
            out += _LEN[count] if count < 4096 else zigzag(count)
        for (name, name_null, write, colname), raw in zip(self.columns, values):
            if raw is None:
                out += name_null
            elif raw is UNCHANGED_TOAST:
                unchanged.append(colname)
            elif write is None:
                if not raw.isascii():  # type: ignore[union-attr]
                    raw.decode("utf-8")  # type: ignore[union-attr]
                out += name
                n = len(raw)  # type: ignore[arg-type]
                out += _STR_HEAD[n] if n < 4096 else _str_head(n)
                out += raw  # type: ignore[operator]
            else:
                out += name
                out += write(raw)  # type: ignore[arg-type]
        out.append(0)
        return bytes(out), unchanged

    def key_row(self, values: TupleData) -> bytes:
        """The ``before`` of a 'K' old tuple: the key columns only (a TOAST marker reads as null)."""
        if len(values) != self.ncols:
            raise ValueError(f"tuple of {len(values)} columns for {self.ncols}-column relation {self.relation.name}")
        out = bytearray(b"\x02")
        if self.key_columns:
            out += zigzag(len(self.key_columns))
            for (name, name_null, write, _), index in zip(self.key_columns, self.key_indexes):
                raw = values[index]
                if raw is None or raw is UNCHANGED_TOAST:
                    out += name_null
                    continue
                out += name
                if write is None:
                    _checked_utf8(raw)  # type: ignore[arg-type]
                    out += _str_head(len(raw)) + raw  # type: ignore[arg-type, operator]
                else:
                    out += write(raw)  # type: ignore[arg-type]
        out.append(0)
        return bytes(out)

    def key(self, values: TupleData) -> bytes | None:
        """The record key: JSON of the key columns, as ``envelope.key_bytes`` writes it."""
        keys = self.keys
        if not keys:
            return None
        parts = []
        for index, prefix, write in keys:
            parts.append(prefix)
            raw = values[index]
            parts.append(b"null" if raw is None or raw is UNCHANGED_TOAST else write(raw))  # type: ignore[arg-type]
        parts.append(b"}")
        return b"".join(parts)

    def toast_list(self, unchanged: list[str]) -> bytes:
        return _string_array(unchanged) if unchanged else self.no_toast


def _write_lines(codec: RelationCodec, env: dict[str, object], checked: str, lengths: bool = False) -> list[str]:
    """The unrolled column writes of a row held in locals ``v0..vN`` (None is NULL) into ``out``.

    ``checked`` is an expression true when the text columns are known to be ASCII (no
    per-column UTF-8 check needed), e.g. ``"False"``; with ``lengths`` the byte length of
    each text value is already in ``n0..nN`` (as parsed)."""
    lines: list[str] = []
    for i, (name, name_null, write, _) in enumerate(codec.columns):
        env[f"N{i}"], env[f"M{i}"], env[f"W{i}"] = name_null, name, write
        lines += [f"    if v{i} is None:", f"        out += N{i}", "    else:"]
        if write is None:  # the text itself, as an Avro string
            lines += [
                f"        if not {checked} and not v{i}.isascii():",
                f"            v{i}.decode('utf-8')",
                f"        out += M{i}",
                f"        n = {f'n{i}' if lengths else f'len(v{i})'}",
                "        out += SH[n] if n < 4096 else sh(n)",
                f"        out += v{i}",
            ]
        else:
            lines += [f"        out += M{i}", f"        out += W{i}(v{i})"]
    return lines


def _compile_row(codec: RelationCodec) -> Callable[[TupleData], tuple[bytes, list[str]]]:
    """``codec.row`` unrolled for this relation's columns: no loop, no per-column dispatch."""
    ncols = codec.ncols
    if ncols == 0 or ncols >= 4096:
        return codec.row
    names = ", ".join(f"v{i}" for i in range(ncols))
    env: dict[str, object] = {
        "TOAST": UNCHANGED_TOAST, "SH": _STR_HEAD, "sh": _str_head, "zz": zigzag, "dbl": _DOUBLE,
        "loop": codec.row, "HEAD": b"\x02" + _LEN[ncols], "NONE": [], "bytearray": bytearray, "bytes": bytes,
        "ValueError": ValueError, "len": len, "int": int, "float": float,
    }
    lines = [
        "def row(values):",
        f"    if len(values) != {ncols} or TOAST in values:",
        "        return loop(values)  # the width check's error, or the TOAST-aware loop",
        f"    {names}, = values",
        "    out = bytearray(HEAD)",
    ]
    lines += _write_lines(codec, env, "False")
    lines += ["    out.append(0)", "    return bytes(out), NONE"]
    exec(compile("\n".join(lines), f"<row writer of relation {codec.relation.oid}>", "exec"), env)
    return env["row"]  # type: ignore[return-value]


def _compile_insert(codec: RelationCodec) -> Callable[..., tuple[bytes | None, bytes] | None] | None:
    """A writer from the raw pgoutput Insert straight to (key, framed envelope), or None if not compiled.

    ``insert(data, pos, head, lsn, txn)`` parses the new tuple starting at ``data[pos]``
    (its column count) column by column into locals, with no list, no message object
    and no intermediate tuple, and writes the same bytes as ``change_bodies`` (after the
    encoder's framing ``head``). It returns None for anything but the plain case (a
    column count that differs from the relation's, an unchanged-TOAST or unknown column
    kind, a truncated message): the caller then takes the generic path, which raises
    the right error or handles the row.
    """
    ncols = codec.ncols
    if ncols == 0 or ncols >= 4096:
        return None
    env: dict[str, object] = {
        "SH": _STR_HEAD, "sh": _str_head, "zz": zigzag, "U32": _U32, "bytearray": bytearray, "bytes": bytes,
        "len": len, "int": int, "float": float, "IndexError": IndexError, "StructError": struct.error,
        "START": _OP_C + ROW_NULL + b"\x02" + _LEN[ncols], "END": b"\x00" + codec.no_toast + codec.key_columns_avro,
        "RT": codec.relation_tail, "NC": ncols,
    }
    lines = [
        "def insert(data, p, head, lsn, txn):",
        "    try:",
        "        if data[p] != NC >> 8 or data[p + 1] != NC & 0xFF:",
        "            return None",
        "        p += 2",
        "        p0 = p",
    ]
    for i in range(ncols):
        lines += [
            "        k = data[p]",
            "        if k == 116:",
            f"            n{i} = U32(data, p + 1)[0]",
            "            p += 5",
            f"            v{i} = data[p : p + n{i}]",
            f"            p += n{i}",
            "        elif k == 110:",
            f"            v{i} = None",
            "            p += 1",
            "        else:",
            "            return None",
        ]
    lines += [
        "        if p > len(data):",
        "            return None  # truncated: the generic decoder reports it",
        "        asc = data[p0:p].isascii()  # then no text column needs its own UTF-8 check",
        "    except (IndexError, StructError):",
        "        return None",
        "    out = bytearray(head)",
        "    out += START",
    ]
    lines += _write_lines(codec, env, "asc", lengths=True)
    lines += ["    out += END", "    out += zz(lsn)", "    out += txn", "    out += RT"]
    if codec.keys:
        parts = []
        for index, prefix, write in codec.keys:
            env[f"KP{index}"], env[f"KW{index}"] = prefix, write
            parts += [f"KP{index}", f'b"null" if v{index} is None else KW{index}(v{index})']
        lines.append(f"    key = b''.join(({', '.join(parts)}, b'}}'))")
    else:
        lines.append("    key = None")
    lines.append("    return key, bytes(out)")
    exec(compile("\n".join(lines), f"<insert writer of relation {codec.relation.oid}>", "exec"), env)
    return env["insert"]  # type: ignore[return-value]


def _string_array(items: list[str]) -> bytes:
    out = bytearray()
    if items:
        out += zigzag(len(items))
        for item in items:
            out += avro_string(item)
    out.append(0)
    return bytes(out)


def source_txn(commit_lsn: int, xid: int, commit_time_us: int) -> bytes:
    """The source fields fixed per transaction (after the change's own LSN)."""
    return zigzag(commit_lsn) + zigzag(xid) + zigzag(commit_time_us)


OPS = {"c": b"\x00", "u": b"\x02", "d": b"\x04", "t": b"\x06", "r": b"\x08"}
ROW_NULL = b"\x00"


_OP_C, _OP_U, _OP_D = OPS["c"], OPS["u"], OPS["d"]


def change_bodies(
    codec: RelationCodec, message: Insert | Update | Delete, lsn: int, txn: bytes
) -> list[tuple[str, bytes | None, bytes]]:
    """(op, key, envelope body) per event: the rules of ``envelope.change_events``, as bytes."""
    tail = codec.key_columns_avro + zigzag(lsn) + txn + codec.relation_tail
    if type(message) is Insert:
        values = message.new
        after, unchanged = codec.row(values)
        return [("c", codec.key(values), b"".join((_OP_C, ROW_NULL, after, codec.toast_list(unchanged), tail)))]
    if type(message) is Delete:
        old = message.old
        before = codec.key_row(old) if message.old_kind == "K" else codec.row(old)[0]
        return [("d", codec.key(old), b"".join((_OP_D, before, ROW_NULL, codec.no_toast, tail)))]
    new = message.new
    after, unchanged = codec.row(new)
    toast = codec.toast_list(unchanged)
    new_key = codec.key(new)
    before = ROW_NULL
    old = message.old  # type: ignore[union-attr]
    if old is not None and message.old_kind is not None:  # type: ignore[union-attr]
        before = codec.key_row(old) if message.old_kind == "K" else codec.row(old)[0]  # type: ignore[union-attr]
        old_key = codec.key(old)
        if old_key != new_key:
            return [
                ("d", old_key, b"".join((_OP_D, before, ROW_NULL, codec.no_toast, tail))),
                ("u", new_key, b"".join((_OP_U, before, after, toast, tail))),
            ]
    return [("u", new_key, b"".join((_OP_U, before, after, toast, tail)))]
