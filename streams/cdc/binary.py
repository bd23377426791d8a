"""pgoutput ``binary 'true'`` (PostgreSQL 14+): a column's binary value -> the exact text PostgreSQL
would have sent for it. Pure functions, no I/O.

With ``INSIGHTS_CDC_PGOUTPUT_BINARY=true`` the walsender sends each column in its type's binary
send format (tuple kind ``'b'``) instead of its text output (``'t'``). Everything after the
decoder (the generic envelope, the record key, typed events, masking) is written from the text,
so the reader turns every binary value back into the text the walsender would have printed with
the reader's session settings (``transport.SESSION_OPTIONS``: ``DateStyle=ISO``,
``TimeZone=UTC``, ``IntervalStyle=postgres``; ``extra_float_digits`` and ``bytea_output`` at
their defaults): the events are then the same bytes in both modes by construction, and
``tests/cdc/test_binary.py`` checks the text, on the real server, for every column type of
the seed's tables and their edge values.

Types (by the base type's OID; a domain is its base type, an enum its label):

=================================  ==============================================================
bool, int2/4/8, oid                ``t``/``f``, decimal
float4, float8                     shortest round-trip digits, printf's ``%g`` layout (ryu, PG 12+)
numeric                            base-10000 digits and display scale -> decimal text, NaN, ±Infinity
text, varchar, bpchar, name, json  the text itself (sent in the client encoding, as text is)
jsonb                              a version byte (1) and the text
"char"                             the byte, ``\\ooo`` above 127
uuid                               8-4-4-4-12 lower-case hex
date                               days since 2000-01-01 -> ISO (``BC``, ±infinity)
timestamp, timestamptz             µs since 2000-01-01 (UTC) -> ISO, fraction trimmed, ``+00``
interval                           µs, days, months -> ``IntervalStyle=postgres``
inet, cidr                         family, bits, address -> PostgreSQL's inet/cidr output
bytea                              ``\\x`` + hex (``bytea_output = hex``, the default)
arrays of the above                dimensions, bounds, NULLs -> ``{...}`` with array_out's quoting
=================================  ==============================================================

Any other type (ranges, geometric types, money, bit strings, composites, ...) has no converter:
:func:`tuple_converter` raises :class:`UnsupportedBinaryType` naming the column, and the reader
stops with one line telling to publish that table in text mode (the default). Why not guess:
a value would silently differ between the two modes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from uuid import UUID

from psycopg.postgres import types as pg_types

from streams.cdc.pgoutput import Binary, Column

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, JSONB, FLOAT4, FLOAT8, BPCHAR, VARCHAR = 114, 3802, 700, 701, 1042, 1043
DATE, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC, UUID_OID = 1082, 1114, 1184, 1186, 1700, 2950
INET, CIDR = 869, 650

Convert = Callable[[bytes], bytes]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_U32 = struct.Struct("!I")
_F4 = struct.Struct("!f")
_F8 = struct.Struct("!d")
_NUMERIC_HEAD = struct.Struct("!hhHh")
_INTERVAL = struct.Struct("!qii")
_ARRAY_HEAD = struct.Struct("!iiI")


class UnsupportedBinaryType(ValueError):
    """A column whose type this module cannot turn back into PostgreSQL's text."""

    def __init__(self, column: str, type_oid: int) -> None:
        super().__init__(f"column {column!r} has type OID {type_oid}, which binary mode cannot decode")
        self.column = column
        self.type_oid = type_oid


# --- scalars ------------------------------------------------------------------------------------
def _bool(raw: bytes) -> bytes:
    return b"t" if raw[0] else b"f"


def _int2(raw: bytes) -> bytes:
    return str(_I16.unpack(raw)[0]).encode()


def _int4(raw: bytes) -> bytes:
    return str(_I32.unpack(raw)[0]).encode()


def _int8(raw: bytes) -> bytes:
    return str(_I64.unpack(raw)[0]).encode()


def _oid(raw: bytes) -> bytes:
    return str(_U32.unpack(raw)[0]).encode()


def _text(raw: bytes) -> bytes:
    return raw


def _jsonb(raw: bytes) -> bytes:
    if not raw or raw[0] != 1:
        raise ValueError(f"jsonb binary version {raw[:1]!r}, expected 1")
    return raw[1:]


def _char(raw: bytes) -> bytes:
    if not raw or raw[0] == 0:
        return b""
    c = raw[0]
    return raw[:1] if c < 0x80 else b"\\%03o" % c


def _uuid(raw: bytes) -> bytes:
    return str(UUID(bytes=raw)).encode()


def _bytea(raw: bytes) -> bytes:
    return b"\\x" + raw.hex().encode()


def _shortest(value: float, digits: Callable[[float], tuple[str, int]], fixed_max: int) -> bytes:
    """PostgreSQL's float output (extra_float_digits > 0): the shortest digits that read back to the
    same value, laid out as printf's %g would (fixed for exponents -4 .. fixed_max-1, else d.ddde±XX)."""
    if value != value:
        return b"NaN"
    if value in (float("inf"), float("-inf")):
        return b"Infinity" if value > 0 else b"-Infinity"
    if value == 0:
        return b"-0" if str(value).startswith("-") else b"0"
    sign = "-" if value < 0 else ""
    mantissa, exp = digits(abs(value))  # "12345", exponent of the first digit
    if -4 <= exp < fixed_max:
        if exp < 0:
            body = "0." + "0" * (-exp - 1) + mantissa
        elif len(mantissa) <= exp + 1:
            body = mantissa + "0" * (exp + 1 - len(mantissa))
        else:
            body = mantissa[: exp + 1] + "." + mantissa[exp + 1 :]
    else:
        body = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        body += ("e-" if exp < 0 else "e+") + f"{abs(exp):02d}"
    return (sign + body).encode()


def _digits_of(text: str) -> tuple[str, int]:
    """'1.2345e-05' or '123.45' (Python's shortest repr) -> ('12345', exponent)."""
    mantissa, _, e = text.partition("e")
    exp = int(e) if e else 0
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    lead = len(whole.lstrip("0")) - 1 if whole.lstrip("0") else -(len(frac) - len(frac.lstrip("0")) + 1)
    return digits.rstrip("0") or "0", exp + lead


def _digits8(value: float) -> tuple[str, int]:
    return _digits_of(repr(value))


def _digits4(value: float) -> tuple[str, int]:
    # the shortest %.Ng that reads back to the same float4 (Python has no float32 repr)
    target = _F4.pack(value)
    for significant in range(1, 10):
        text = f"{value:.{significant - 1}e}"  # correctly rounded: the closest of that length
        try:
            if _F4.pack(float(text)) == target:
                return _digits_of(text)
        except OverflowError:  # rounded past the largest float4
            continue
    return _digits_of(f"{value:.9e}")


def _float4(raw: bytes) -> bytes:
    return _shortest(_F4.unpack(raw)[0], _digits4, 6)


def _float8(raw: bytes) -> bytes:
    return _shortest(_F8.unpack(raw)[0], _digits8, 15)


_NUMERIC_SPECIAL = {0xC000: b"NaN", 0xD000: b"Infinity", 0xF000: b"-Infinity"}


def _numeric(raw: bytes) -> bytes:
    """numeric_send's base-10000 digits -> numeric_out's text (get_str_from_var)."""
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(raw)
    special = _NUMERIC_SPECIAL.get(sign)
    if special is not None:
        return special
    groups = struct.unpack_from(f"!{ndigits}h", raw, 8)
    # the integer part: groups 0..weight (missing ones are zeros); the first without leading zeros
    if weight < 0:
        whole = "0"
    else:
        parts = [groups[i] if i < ndigits else 0 for i in range(weight + 1)]
        whole = str(parts[0]) + "".join(f"{g:04d}" for g in parts[1:])
    text = whole
    if dscale > 0:
        frac = []
        for i in range(weight + 1, weight + 1 + (dscale + 3) // 4):
            frac.append(f"{groups[i]:04d}" if 0 <= i < ndigits else "0000")
        text += "." + "".join(frac)[:dscale]
    return (b"-" if sign == 0x4000 else b"") + text.encode()


# --- dates and times (DateStyle=ISO, TimeZone=UTC) ----------------------------------------------
_POSTGRES_EPOCH_JDATE = 2451545
_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(2000, 1, 1).toordinal()
_MAX_ORDINAL = date.max.toordinal()


def _j2date(jd: int) -> tuple[int, int, int]:
    """PostgreSQL's j2date: a Julian day -> (year, month, day), year <= 0 for BC (0 = 1 BC)."""
    julian = jd + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    year = y - 4800
    quad = julian * 2141 // 65536
    day = julian - 7834 * quad // 256
    month = (quad + 10) % 12 + 1
    return year, month, day


def _ymd(days: int) -> tuple[str, bool]:
    """Days since 2000-01-01 -> ('YYYY-MM-DD', BC)."""
    ordinal = days + _EPOCH_ORDINAL
    if 1 <= ordinal <= _MAX_ORDINAL:  # years 1..9999: Python's date does it in C
        d = date.fromordinal(ordinal)
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}", False
    year, month, day = _j2date(days + _POSTGRES_EPOCH_JDATE)
    bc = year <= 0
    if bc:
        year = 1 - year
    return f"{year:04d}-{month:02d}-{day:02d}", bc


def _date(raw: bytes) -> bytes:
    days = _I32.unpack(raw)[0]
    if days == _INT32_MAX:
        return b"infinity"
    if days == _INT32_MIN:
        return b"-infinity"
    text, bc = _ymd(days)
    return (text + (" BC" if bc else "")).encode()


def _fraction(us: int) -> str:
    return "" if us == 0 else "." + f"{us:06d}".rstrip("0")


def _timestamp_text(raw: bytes, suffix: str) -> bytes:
    us = _I64.unpack(raw)[0]
    if us == _INT64_MAX:
        return b"infinity"
    if us == _INT64_MIN:
        return b"-infinity"
    days, rest = divmod(us, _US_PER_DAY)
    seconds, frac = divmod(rest, 1_000_000)
    day_text, bc = _ymd(days)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    text = f"{day_text} {h:02d}:{m:02d}:{s:02d}{_fraction(frac)}{suffix}"
    return (text + (" BC" if bc else "")).encode()


def _timestamp(raw: bytes) -> bytes:
    return _timestamp_text(raw, "")


def _timestamptz(raw: bytes) -> bytes:
    return _timestamp_text(raw, "+00")


def _trunc_divmod(a: int, b: int) -> tuple[int, int]:
    """C's truncating division (the sign of the remainder follows ``a``)."""
    q = abs(a) // b
    q = -q if a < 0 else q
    return q, a - q * b


def _interval(raw: bytes) -> bytes:
    """interval_send (µs, days, months) -> interval_out with IntervalStyle=postgres (EncodeInterval)."""
    time_us, days, months = _INTERVAL.unpack(raw)
    year, mon = _trunc_divmod(months, 12)
    hour, rest = _trunc_divmod(time_us, 3_600_000_000)
    minute, rest = _trunc_divmod(rest, 60_000_000)
    sec, fsec = _trunc_divmod(rest, 1_000_000)
    out = []
    is_zero, is_before = True, False
    for value, unit in ((year, "year"), (mon, "mon"), (days, "day")):
        if value == 0:
            continue
        out.append(("" if is_zero else " ") + ("+" if is_before and value > 0 else "") + f"{value} {unit}"
                   + ("" if value == 1 else "s"))
        is_before = value < 0
        is_zero = False
    if is_zero or hour or minute or sec or fsec:
        minus = hour < 0 or minute < 0 or sec < 0 or fsec < 0
        out.append(("" if is_zero else " ") + ("-" if minus else "+" if is_before else "")
                   + f"{abs(hour):02d}:{abs(minute):02d}:{abs(sec):02d}{_fraction(abs(fsec))}")
    return "".join(out).encode()


# --- inet / cidr --------------------------------------------------------------------------------
def _ipv6(words: Sequence[int]) -> str:
    """BIND's inet_ntop6, as PostgreSQL prints: the longest run (>= 2) of zero words as ``::``,
    an IPv4-compatible or -mapped address with its last 32 bits dotted."""
    best_base, best_len, base, length = -1, 0, -1, 0
    for i, w in enumerate(words):
        if w == 0:
            if base < 0:
                base, length = i, 1
            else:
                length += 1
        elif base >= 0:
            if length > best_len:
                best_base, best_len = base, length
            base = -1
    if base >= 0 and length > best_len:
        best_base, best_len = base, length
    if best_len < 2:
        best_base = -1
    out = []
    i = 0
    while i < 8:
        if best_base >= 0 and best_base <= i < best_base + best_len:
            if i == best_base:
                out.append(":")
            i += 1
            continue
        if i:
            out.append(":")
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            out.append(f"{words[6] >> 8}.{words[6] & 0xFF}.{words[7] >> 8}.{words[7] & 0xFF}")
            break
        out.append(f"{words[i]:x}")
        i += 1
    if best_base >= 0 and best_base + best_len == 8:
        out.append(":")
    return "".join(out)


def _inet(raw: bytes) -> bytes:
    family, bits, is_cidr, nb = raw[0], raw[1], raw[2], raw[3]
    addr = raw[4 : 4 + nb]
    if family == 2:  # PGSQL_AF_INET
        full = addr.ljust(4, b"\0")
        text, max_bits = ".".join(str(b) for b in full), 32
    elif family == 3:  # PGSQL_AF_INET6
        full = addr.ljust(16, b"\0")
        text, max_bits = _ipv6(struct.unpack("!8H", full)), 128
    else:
        raise ValueError(f"inet family {family}")
    if is_cidr or bits != max_bits:
        text += f"/{bits}"
    return text.encode()


# --- arrays -----------------------------------------------------------------------------------------
_NEEDS_QUOTES = frozenset(b'{}",\\ \t\n\r\v\f')


def _array_item(text: bytes) -> bytes:
    """array_out's element: quoted when empty, 'NULL' in any case, or holding a brace, quote,
    comma, backslash or white space; quote and backslash escaped inside quotes."""
    if text and text.upper() != b"NULL" and not (_NEEDS_QUOTES.intersection(text)):
        return text
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _array(element: Convert) -> Convert:
    def convert(raw: bytes) -> bytes:
        ndim, _has_null, _elem = _ARRAY_HEAD.unpack_from(raw)
        if ndim == 0:
            return b"{}"
        pos = 12
        dims, bounds = [], []
        for _ in range(ndim):
            size, lower = struct.unpack_from("!ii", raw, pos)
            dims.append(size)
            bounds.append(lower)
            pos += 8
        items: list[bytes] = []
        total = 1
        for size in dims:
            total *= size
        for _ in range(total):
            (n,) = _I32.unpack_from(raw, pos)
            pos += 4
            if n < 0:
                items.append(b"NULL")
            else:
                items.append(_array_item(element(raw[pos : pos + n])))
                pos += n

        def nest(level: int, start: int) -> tuple[bytes, int]:
            if level == ndim:
                return items[start], start + 1
            parts = []
            for _ in range(dims[level]):
                part, start = nest(level + 1, start)
                parts.append(part)
            return b"{" + b",".join(parts) + b"}", start

        body, _ = nest(0, 0)
        if any(b != 1 for b in bounds):
            body = b"".join(b"[%d:%d]" % (lb, lb + size - 1) for lb, size in zip(bounds, dims)) + b"=" + body
        return body

    return convert


SCALARS: dict[int, Convert] = {
    BOOL: _bool, INT2: _int2, INT4: _int4, INT8: _int8, OID: _oid, FLOAT4: _float4, FLOAT8: _float8,
    NUMERIC: _numeric, TEXT: _text, VARCHAR: _text, BPCHAR: _text, NAME: _text, JSON: _text,
    JSONB: _jsonb, CHAR: _char, UUID_OID: _uuid, BYTEA: _bytea, DATE: _date, TIMESTAMP: _timestamp,
    TIMESTAMPTZ: _timestamptz, INTERVAL: _interval, INET: _inet, CIDR: _inet,
}

#: what the catalog says of a type OID this module does not know: (typtype, base type, element
#: type if it is an array); None when the type does not exist
TypeInfo = tuple[str, int, int] | None


#: the builtin array types and their elements (psycopg's type registry): no catalog look-up for them
BUILTIN_ARRAYS = {t.array_oid: t.oid for t in pg_types if t.array_oid}


def converter(type_oid: int, describe: Callable[[int], TypeInfo]) -> Convert | None:
    """binary -> text of one type; None when unsupported. ``describe`` reads the catalog (domains,
    enums, arrays of those); the builtin types need no look-up."""
    found = SCALARS.get(type_oid)
    if found is not None:
        return found
    element = BUILTIN_ARRAYS.get(type_oid)
    if element is not None:
        item = SCALARS.get(element)
        return None if item is None else _array(item)
    info = describe(type_oid)
    if info is None:
        return None
    typtype, base, element = info
    if typtype == "e":
        return _text  # enum_send: the label
    if typtype == "d":
        return converter(base, describe)
    if element:
        item = converter(element, describe)
        return None if item is None else _array(item)
    return None


def tuple_converter(columns: Sequence[Column], describe: Callable[[int], TypeInfo]) -> Callable[[list[Any]], list[Any]]:
    """A relation's tuples with every :class:`Binary` value turned into its text.

    Raises :class:`UnsupportedBinaryType` for the first column whose type has no converter."""
    converters = []
    for column in columns:
        found = converter(column.type_oid, describe)
        if found is None:
            raise UnsupportedBinaryType(column.name, column.type_oid)
        converters.append(found)

    def convert(values: list[Any]) -> list[Any]:
        if len(values) != len(converters):
            return values  # the width check downstream raises
        return [fn(v.data) if type(v) is Binary else v for fn, v in zip(converters, values)]

    return convert
