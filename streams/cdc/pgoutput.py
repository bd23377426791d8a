"""A pure decoder of pgoutput protocol version 1: bytes in, typed messages out, no I/O.

Tuple columns keep the three kinds PostgreSQL sends apart: ``None`` for ``'n'`` (SQL
NULL), :data:`UNCHANGED_TOAST` for ``'u'`` (a TOASTed value the UPDATE did not touch;
its value is *not* on the wire) and ``bytes`` for ``'t'`` (the type's text output).
Converting text to Python values is :mod:`streams.cdc.values`' job, which needs the
relation's column types: :class:`RelationCache` keeps them by OID.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from streams.cdc.errors import DecodeError


class _UnchangedToast:
    """Marker for a column whose TOASTed value was not sent; never a value."""

    _instance: _UnchangedToast | None = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __bool__(self) -> bool:  # guard against `if value:` treating it as data
        raise TypeError("UNCHANGED_TOAST is a marker, not a value")


UNCHANGED_TOAST = _UnchangedToast()

#: one tuple: per column None (NULL), UNCHANGED_TOAST or the text bytes
TupleData = list[object]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_key)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time_us: int  # PostgreSQL epoch microseconds
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class TypeMessage:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    #: 'K' = old key columns only (the key changed), 'O' = whole old row (REPLICA IDENTITY FULL), None
    old_kind: str | None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    options: int  # bit 1 CASCADE, bit 2 RESTART IDENTITY
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | TypeMessage | Insert | Update | Delete | Truncate | LogicalMessage
)

_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_I32 = struct.Struct("!I")
_I16 = struct.Struct("!H")
_I64 = struct.Struct("!Q")
_REL_COL_TAIL = struct.Struct("!Ii")


def _cstring(raw: bytes, pos: int) -> tuple[str, int]:
    end = raw.find(b"\0", pos)
    if end < 0:
        raise DecodeError("unterminated string in pgoutput message")
    return raw[pos:end].decode("utf-8"), end + 1


def _tuple(raw: bytes, pos: int) -> tuple[TupleData, int]:
    (ncols,) = _I16.unpack_from(raw, pos)
    pos += 2
    values: TupleData = []
    append = values.append
    unpack_len = _I32.unpack_from
    for _ in range(ncols):
        kind = raw[pos]
        pos += 1
        if kind == 0x74:  # 't'
            end = pos + 4 + unpack_len(raw, pos)[0]
            append(raw[pos + 4 : end])
            pos = end
        elif kind == 0x6E:  # 'n'
            append(None)
        elif kind == 0x75:  # 'u'
            append(UNCHANGED_TOAST)
        else:
            raise DecodeError(f"unsupported tuple column kind {chr(kind)!r} (binary mode is not requested)")
    return values, pos


def decode(payload: bytes | memoryview) -> Message:
    """Decode one pgoutput message (the payload of one XLogData)."""
    raw = bytes(payload)
    if not raw:
        raise DecodeError("empty pgoutput message")
    tag = raw[0]
    try:
        if tag == 0x49:  # 'I'
            (oid,) = _I32.unpack_from(raw, 1)
            if raw[5] != 0x4E:
                raise DecodeError("Insert without a new tuple")
            new, _ = _tuple(raw, 6)
            return Insert(oid, new)
        if tag == 0x55:  # 'U'
            (oid,) = _I32.unpack_from(raw, 1)
            pos = 5
            old_kind = None
            old = None
            if raw[pos] in (0x4B, 0x4F):  # 'K' / 'O'
                old_kind = chr(raw[pos])
                old, pos = _tuple(raw, pos + 1)
            if raw[pos] != 0x4E:
                raise DecodeError("Update without a new tuple")
            new, _ = _tuple(raw, pos + 1)
            return Update(oid, old_kind, old, new)
        if tag == 0x44:  # 'D'
            (oid,) = _I32.unpack_from(raw, 1)
            old_kind = chr(raw[5])
            if old_kind not in ("K", "O"):
                raise DecodeError(f"Delete with old tuple kind {old_kind!r}")
            old, _ = _tuple(raw, 6)
            return Delete(oid, old_kind, old)
        if tag == 0x42:  # 'B'
            return Begin(*_BEGIN.unpack_from(raw, 1))
        if tag == 0x43:  # 'C'
            return Commit(*_COMMIT.unpack_from(raw, 1))
        if tag == 0x52:  # 'R'
            return _relation(raw)
        if tag == 0x59:  # 'Y'
            (oid,) = _I32.unpack_from(raw, 1)
            namespace, pos = _cstring(raw, 5)
            name, _ = _cstring(raw, pos)
            return TypeMessage(oid, namespace, name)
        if tag == 0x4F:  # 'O'
            (lsn,) = _I64.unpack_from(raw, 1)
            name, _ = _cstring(raw, 9)
            return Origin(lsn, name)
        if tag == 0x54:  # 'T'
            nrels, options = struct.unpack_from("!IB", raw, 1)
            oids = struct.unpack_from(f"!{nrels}I", raw, 6)
            return Truncate(options, tuple(oids))
        if tag == 0x4D:  # 'M'
            flags = raw[1]
            (lsn,) = _I64.unpack_from(raw, 2)
            prefix, pos = _cstring(raw, 10)
            (length,) = _I32.unpack_from(raw, pos)
            content = raw[pos + 4 : pos + 4 + length]
            return LogicalMessage(bool(flags & 1), lsn, prefix, content)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(f"truncated or malformed pgoutput message {chr(tag)!r}: {exc}") from None
    raise DecodeError(f"unknown pgoutput message type {chr(tag)!r}")


def _relation(raw: bytes) -> Relation:
    (oid,) = _I32.unpack_from(raw, 1)
    namespace, pos = _cstring(raw, 5)
    name, pos = _cstring(raw, pos)
    identity = chr(raw[pos])
    (ncols,) = _I16.unpack_from(raw, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = raw[pos]
        colname, pos = _cstring(raw, pos + 1)
        type_oid, typmod = _REL_COL_TAIL.unpack_from(raw, pos)
        pos += 8
        columns.append(Column(colname, type_oid, typmod, bool(flags & 1)))
    # an empty namespace means pg_catalog, per the protocol
    return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))


@dataclass
class RelationCache:
    """Relations by OID. A Relation message mid-stream (a schema change) replaces the entry."""

    relations: dict[int, Relation] = field(default_factory=dict)
    types: dict[int, TypeMessage] = field(default_factory=dict)

    def update(self, message: Relation | TypeMessage) -> bool:
        """Store it; True when it changed an already known relation (a schema change)."""
        if isinstance(message, TypeMessage):
            self.types[message.oid] = message
            return False
        previous = self.relations.get(message.oid)
        self.relations[message.oid] = message
        return previous is not None and previous != message

    def get(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise DecodeError(f"change for relation OID {oid} before its Relation message") from None
