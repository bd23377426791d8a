"""Typed change events, the writer the reader and the snapshots call (``INSIGHTS_CDC_FORMAT=typed``).

Per relation: the catalog's description of its columns (:func:`describe`), the schema
generated from it (:mod:`.typed`), the version that schema has under the table's subject
(:mod:`.typed_schemas`), and the events written with the envelope rules every other form
uses (``envelope.changes``, ``envelope.read_change``): same ops, same record keys (the
generic envelope's JSON, so partitions and incremental-snapshot windows are unchanged),
only the value differs.

The description is read again at the first change after every Relation message (pgoutput
sends one before a table's first change of a session and after every ALTER TABLE); an
unchanged schema keeps its version, a changed one is checked and registered before the
change that needs it is written.

Nullability, two rules that keep a version readable for the data the topic holds:

* a field that was nullable in the subject's latest version stays nullable (``SET NOT NULL``
  changes nothing: the topic holds nulls of that column);
* a NULL for a column the catalog says is NOT NULL (a change written before an ALTER the
  catalog already shows, met while reading a backlog) makes that column nullable: a new
  version, checked like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from core.settings import Settings
from streams.cdc.envelope import SourceInfo, changes, read_change, record_key
from streams.cdc.errors import CdcError, UnrepresentableValueError
from streams.cdc.pgoutput import Delete, Insert, Relation, TupleData, Update
from streams.cdc.typed import (
    ColumnInfo, NotRepresentable, NullInNotNull, TableInfo, TypedRows, envelope_schema, field_names, may_be_toasted,
    nullable, nullable_fields,
)
from streams.cdc.typed_schemas import SchemaVersions, TypedVersion
from streams.cdc.values import ValueConverter
from streams.serde.registry import value_subject_name
from streams.topics import cdc_topic_name

log = logging.getLogger(__name__)

T = TypeVar("T")

_DESCRIBE = """
SELECT format_type(c.type_oid, c.typmod),
       b.oid,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE c.typmod END,
       coalesce(a.attnotnull, false) OR t.typnotnull,
       CASE WHEN e.typtype = 'd' THEN e.typbasetype ELSE coalesce(e.oid, 0) END,
       coalesce(a.attstorage, b.typstorage) <> 'p'
  FROM unnest(%(oids)s::oid[], %(mods)s::int[]) WITH ORDINALITY AS c(type_oid, typmod, n)
  JOIN pg_type t ON t.oid = c.type_oid
  JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
  LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
  LEFT JOIN pg_attribute a
         ON a.attrelid = %(rel)s AND a.attname = (%(names)s::text[])[c.n] AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.n
"""


def describe(conn: psycopg.Connection[Any], relation: Relation) -> TableInfo:
    """The columns of a Relation message with what the catalog adds: type name, NOT NULL, array
    element, storage. Types and modifiers are the message's (the columns as the change was
    written); only NOT NULL and storage are the catalog's current ones."""
    columns = relation.columns
    rows = conn.execute(
        _DESCRIBE,
        {
            "oids": [c.type_oid for c in columns],
            "mods": [c.type_modifier for c in columns],
            "rel": relation.oid,
            "names": [c.name for c in columns],
        },
    ).fetchall()
    if len(rows) != len(columns):
        raise CdcError(f"{relation.namespace}.{relation.name}: a column's type is gone from the catalog")
    return TableInfo(
        relation.namespace,
        relation.name,
        tuple(
            ColumnInfo(
                c.name, base, typmod, type_name, not_null, element,
                may_be_toasted(base, typmod, not_plain), c.is_key, c.name in relation.masked,
            )
            for c, (type_name, base, typmod, not_null, element, not_plain) in zip(columns, rows)
        ),
    )


Change = tuple[str, bytes | None, bytes]


class TypedCodec:
    """One relation's typed events: its rows' converters, its schema version, its record key."""

    def __init__(self, relation: Relation, rows: TypedRows, version: TypedVersion, key: Callable[[TupleData], bytes | None]) -> None:
        self.relation = relation
        self.rows = rows
        self.version = version
        self.key = key
        self.key_columns = list(relation.key_columns)

    def _value(self, op: str, before: Any, after: Any, unchanged: Any, src: SourceInfo) -> bytes:
        return self.version.encode({
            "op": op,
            "before": before,
            "after": after,
            "unchanged_toast": list(unchanged),
            "key_columns": self.key_columns,
            "source": {
                "lsn": src.lsn,
                "commit_lsn": src.commit_lsn,
                "xid": src.xid,
                "commit_time": src.commit_time_us,
                "schema": self.relation.namespace,
                "table": self.relation.name,
                "snapshot": src.snapshot,
            },
        })

    def changes(self, message: Insert | Update | Delete, src: SourceInfo) -> list[Change]:
        return [
            (op, key, self._value(op, before, after, unchanged, src))
            for op, key, before, after, unchanged in changes(message, self.rows.row, self.rows.key_row, self.key)
        ]

    def read(self, values: TupleData, src: SourceInfo) -> tuple[bytes | None, bytes]:
        op, key, _, after, _ = read_change(values, self.rows.row, self.key)
        return key, self._value(op, None, after, (), src)

    def truncate(self, src: SourceInfo) -> bytes:
        return self._value("t", None, None, (), src)


class TypedEvents:
    """The typed events of every published table, for one reader or one snapshot.

    ``catalog()`` is the connection :func:`describe` reads (the reader's side connection,
    or the snapshot's, which sees the catalog as of its snapshot).
    """

    def __init__(self, settings: Settings, versions: SchemaVersions, catalog: Callable[[], psycopg.Connection[Any]]) -> None:
        self.settings = settings
        self.versions = versions
        self.catalog = catalog
        self.converter = ValueConverter()  # the record key, written as the generic envelope writes it
        self._codecs: dict[Relation, TypedCodec] = {}
        #: per relation OID, NOT NULL columns a NULL arrived for (module doc)
        self._widened: dict[int, frozenset[str]] = {}

    def subject(self, relation: Relation) -> str:
        return value_subject_name(cdc_topic_name(self.settings, relation.name, relation.namespace))

    def relation(self, relation: Relation) -> None:
        """A Relation message: the table may have changed (ALTER TABLE). Its next change describes it
        again and resolves its version; not now, because PostgreSQL 15 also sends the Relation
        message of the partition a change went to, which never has changes of its own."""
        self._codecs = {r: c for r, c in self._codecs.items() if r.oid != relation.oid}

    def _build(self, relation: Relation) -> TypedCodec:
        """Describe the table and resolve its version: a changed schema is checked and registered
        here, before the change that needs it."""
        table = describe(self.catalog(), relation)
        subject = self.subject(relation)
        widened = self._widened.get(relation.oid, frozenset())
        latest = self.versions.latest(subject)
        if latest is not None:  # once nullable, nullable: the topic holds nulls of it
            kept = nullable_fields(latest.raw)
            widened |= {
                c.name for c, n in zip(table.columns, field_names(table.columns)) if n in kept and not nullable(c)
            }
        version = self.versions.resolve(subject, envelope_schema(table, widened))
        codec = self._codecs[relation] = TypedCodec(
            relation, TypedRows(table, widened), version, record_key(self.converter, relation)
        )
        return codec

    def codec(self, relation: Relation) -> TypedCodec:
        codec = self._codecs.get(relation)
        return codec if codec is not None else self._build(relation)

    def _write(self, relation: Relation, write: Callable[[TypedCodec], T]) -> T:
        while True:
            try:
                return write(self.codec(relation))
            except NullInNotNull as exc:
                widened = self._widened.get(relation.oid, frozenset())
                if exc.column in widened:
                    raise CdcError(f"{relation.namespace}.{relation.name}.{exc.column}: NULL in a nullable field") from None
                log.info(
                    "%s.%s: a NULL in %s, which the catalog says is NOT NULL (a change from before an ALTER TABLE): "
                    "the column becomes nullable", relation.namespace, relation.name, exc.column,
                    extra={"table": relation.name, "column": exc.column},
                )
                self._widened[relation.oid] = widened | {exc.column}
                self._build(relation)
            except NotRepresentable as exc:
                raise UnrepresentableValueError(f"{relation.namespace}.{relation.name}", exc.column, str(exc)) from None

    def changes(self, relation: Relation, message: Insert | Update | Delete, src: SourceInfo) -> list[Change]:
        """(op, record key, framed value) of each event a row change becomes."""
        return self._write(relation, lambda codec: codec.changes(message, src))

    def read(self, relation: Relation, values: TupleData, src: SourceInfo) -> tuple[bytes | None, bytes]:
        """(record key, framed value) of a snapshot row (``src.snapshot`` set by the caller)."""
        return self._write(relation, lambda codec: codec.read(values, src))

    def truncate(self, relation: Relation, src: SourceInfo) -> bytes:
        return self._write(relation, lambda codec: codec.truncate(src))

    def close(self) -> None:
        self.versions.close()
