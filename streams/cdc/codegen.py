"""The fast path's per-relation writers, generated as readable Python source.

Why generate: a change is written column by column, and in CPython a loop over the
columns with a dispatch per value costs 1.5 to 2 times an unrolled sequence of the
same writes (``RelationCodec.general_row`` against the generated ``row``). So when a Relation message arrives, :func:`relation_source` writes the source of
two functions for exactly that relation's columns, :func:`compile_writers` compiles it
once, and the reader calls them for every change of the relation:

* ``row(values)``: a decoded tuple -> the ``before``/``after`` field (``envelope.change_bodies``);
* ``insert(data, p, head, lsn, txn, op_head)``: a raw pgoutput Insert (or Update without an
  old tuple, with ``op_head=codec.update_head``), still inside its CopyData frame -> (record
  key, framed envelope). It parses the tuple into local variables (the
  grammar of ``pgoutput._tuple``), with no message object, no list and no per-column
  dispatch; anything but the plain case returns None and takes the reference path.

Nothing is decided here, it is only unrolled: the envelope's field order is
``envelope.body``, a column's bytes are ``values.ColumnWriter``, the record key is
``envelope.RelationCodec.key``. ``tests/cdc/test_envelope.py`` checks both functions byte
for byte against the reference path on generated relations and rows, and
``tests/cdc/test_codegen.py`` pins the source of one relation to
``tests/cdc/golden/product_snapshots.py``.

Read the source of a relation with ``RelationCodec(...).source`` or :func:`relation_source`
(``slot.table_relation`` gives the Relation of a live table), or from a shell for a
seed-shaped ``product_snapshots``::

    python -m streams.cdc.codegen --show

Tracebacks and profiles show the generated lines: the source is registered with
:mod:`linecache` under ``<cdc writers of SCHEMA.TABLE>``.
"""

from __future__ import annotations

import argparse
import json
import linecache
from collections.abc import Callable, Sequence
from typing import Any

from psycopg.postgres import types as pg_types

from streams.cdc import avro
from streams.cdc.pgoutput import Column, Relation
from streams.cdc.values import Kind, ValueConverter

#: what ``python -m streams.cdc.codegen`` shows by default: bench/cdc_bench.py's table,
#: shaped like the seed's product_snapshots (numerics, jsonb, text[], timestamptz)
EXAMPLE = Relation(
    16390,
    "public",
    "product_snapshots",
    "d",
    (
        Column("id", 20, -1, True),  # int8
        Column("asin", 1043, 14, False),  # varchar(10)
        Column("title", 1043, 504, False),
        Column("price", 1700, 655366, False),  # numeric(10,2)
        Column("buybox_price", 1700, 655366, False),
        Column("rating", 1700, 196614, False),  # numeric(3,2)
        Column("review_count", 23, -1, False),  # int4
        Column("bsr_data", 3802, -1, False),  # jsonb
        Column("availability_status", 1043, 54, False),
        Column("bullet_points", 1009, -1, False),  # text[]
        Column("images", 3802, -1, False),
        Column("scraped_at", 1184, -1, True),  # timestamptz
        Column("processing_status", 1043, 24, False),
        Column("created_at", 1184, -1, False),
    ),
)

# Identifiers are data: a column may be called anything, newlines included. Whatever of
# them reaches the source is written with ascii() or repr(), never pasted in as text.


def _label(text: str) -> str:
    return ascii(text)[1:-1]


def type_name(type_oid: int) -> str:
    info = pg_types.get(type_oid)
    if info is None:
        return f"type {type_oid}"
    return info.name if info.oid == type_oid else f"{info.name}[]"


def _wrapped(items: Sequence[str], indent: str, width: int = 96) -> list[str]:
    """``a, b, c`` broken into lines of at most ``width`` characters."""
    lines: list[str] = []
    line = ""
    for item in items:
        piece = f"{item},"
        if line and len(indent) + len(line) + 1 + len(piece) > width:
            lines.append(indent + line)
            line = piece
        else:
            line = f"{line} {piece}" if line else piece
    if line:
        lines.append(indent + line)
    return lines


_WHAT = {
    "bool": "boolean",
    "int": "long",
    "float": "double",
    "text": "string, the text as printed",
    "timestamp": "ISO 8601 string",
    "text_array": "JSON array string",
    "array": "JSON array string, by the reference converter",
}
#: kinds written inline; the others call their ColumnWriter
_INLINE: tuple[Kind, ...] = ("bool", "int", "float", "text")


def _entry(column: Column, *after: bytes) -> str:
    """A map entry's constant bytes as adjacent literals: name length, name, then ``after``
    (the compiler joins them into one constant; apart, a reader sees what each part is)."""
    raw = column.name.encode("utf-8")
    return " ".join(repr(part) for part in (avro.zigzag(len(raw)), raw, *after))


def _column_write(i: int, column: Column, kind: Kind, in_insert: bool) -> list[str]:
    """The statements that append column ``i`` (held in ``v{i}``, None for NULL) to ``out``."""
    key = ", key" if column.is_key else ""
    lines = [
        f"# {_label(column.name)}: {type_name(column.type_oid)}{key} -> {_WHAT[kind]}",
        f"if v{i} is None:",
        f"    out += {_entry(column, avro.VALUE_NULL)}",
    ]
    if kind == "bool":
        lines += [
            f"elif v{i} == b't':",
            f"    out += {_entry(column, avro.VALUE_TRUE)}",
            "else:",
            f"    out += {_entry(column, avro.VALUE_FALSE)}",
        ]
        return lines
    lines.append("else:")
    if kind == "int":
        lines += [f"    out += {_entry(column, avro.VALUE_LONG)}", f"    out += zigzag(int(v{i}))"]
    elif kind == "float":
        lines += [f"    out += {_entry(column, avro.VALUE_DOUBLE)}", f"    out += double(float(v{i}))"]
    elif kind == "text":
        length = f"n{i}" if in_insert else "n"
        lines += [
            f"    if not all_ascii and not v{i}.isascii():" if in_insert else f"    if not v{i}.isascii():",
            f"        v{i}.decode()  # invalid UTF-8 fails here, as on the reference path",
            f"    out += {_entry(column)}",
        ]
        if not in_insert:
            lines.append(f"    n = len(v{i})")
        lines += [
            f"    out += STRING_HEAD[{length}] if {length} < 4096 else string_head({length})  # branch, length",
            f"    out += v{i}",
        ]
    else:
        lines += [f"    out += {_entry(column)}", f"    out += value_{i}(v{i})"]
    return lines


def _column_parse(i: int, column: Column) -> list[str]:
    """The statements that read column ``i`` of a tuple at ``data[p]`` into ``v{i}`` (and ``n{i}``)."""
    return [
        f"# {_label(column.name)}",
        "kind = data[p]",
        "if kind == 116:  # 't': a 32-bit length, then the text",
        f"    n{i} = U32(data, p + 1)[0]",
        "    p += 5",
        f"    v{i} = data[p : p + n{i}]",
        f"    p += n{i}",
        "elif kind == 110:  # 'n': NULL",
        f"    v{i} = None",
        "    p += 1",
        "else:  # 'u': an unchanged TOAST value (not in an Insert), or unknown",
        "    return None",
    ]


def _key_part(i: int, kind: Kind) -> str:
    if kind == "int":
        return f'b"null" if v{i} is None else str(int(v{i})).encode()'
    if kind == "bool":
        return f'b"null" if v{i} is None else b"true" if v{i} == b"t" else b"false"'
    return f'b"null" if v{i} is None else key_{i}(v{i})'


def relation_source(relation: Relation, kinds: Sequence[Kind] | None = None) -> str:
    """The Python source of ``relation``'s writers: a module defining ``bind(codec)``.

    ``kinds`` are the columns' ``ValueConverter.kind``; by default a fresh converter's.
    """
    if kinds is None:
        converter = ValueConverter()
        kinds = [converter.kind(c.type_oid) for c in relation.columns]
    columns = relation.columns
    ncols = len(columns)
    title = _label(f"{relation.namespace}.{relation.name}")
    names = [f"v{i}" for i in range(ncols)]
    calls = [i for i, kind in enumerate(kinds) if kind not in _INLINE]
    keyed = [i for i in relation.key_indexes if kinds[i] not in ("int", "bool")]

    out = [
        f'"""Envelope writers of {title} (relation OID {relation.oid}, {ncols} columns).',
        "",
        "Generated by streams.cdc.codegen from the Relation message; do not edit. What the",
        "functions write is specified by streams.cdc.envelope (rules, field order) and",
        "streams.cdc.values (one column); tests/cdc/test_envelope.py proves them equal.",
        '"""',
        "",
        "from struct import Struct, error as StructError",
        "",
        "from streams.cdc.avro import STRING_HEAD, double, string_head, zigzag",
        "from streams.cdc.pgoutput import UNCHANGED_TOAST",
        "",
        'U32 = Struct("!I").unpack_from  # the length of a text column',
        "",
        "# A column's map entry is its name as an Avro string (length, UTF-8 bytes), then its value",
        "# in the union null | boolean | long | double | string: b'\\x00' (null), b'\\x02' and a byte",
        "# (boolean), b'\\x04' and a long, b'\\x06' and a double, b'\\x08', a length and the bytes.",
        "",
        "",
        "def bind(codec):",
        '    """(row, insert) of this relation, using ``codec`` (its envelope.RelationCodec)."""',
        "    # envelope parts fixed per relation (see RelationCodec)",
        "    row_head, insert_head, insert_tail = codec.row_head, codec.insert_head, codec.insert_tail",
        "    relation_tail = codec.relation_tail",
        "    general_row = codec.general_row",
    ]
    if calls or keyed:
        out.append("    # columns written by their values.ColumnWriter (a cache, or the reference as fallback)")
    for i in calls:
        out.append(f"    value_{i} = codec.writers[{i}].value  # {_label(columns[i].name)}")
    for i in keyed:
        out.append(f"    key_{i} = codec.writers[{i}].key  # {_label(columns[i].name)} in the record key")

    # --- row ------------------------------------------------------------------------------
    out += [
        "",
        "    def row(values):",
        '        """A decoded tuple -> (``before``/``after``: union branch 1, the map; unchanged-TOAST columns)."""',
        f"        if len(values) != {ncols} or UNCHANGED_TOAST in values:",
        "            return general_row(values)  # its width check raises; it lists unchanged-TOAST columns",
    ]
    if ncols:
        out += ["        ("] + _wrapped(names, " " * 12) + ["        ) = values"]
    out.append(f"        out = bytearray(row_head)  # union branch 1 (the map) of {ncols} entries")
    for i, column in enumerate(columns):
        out += ["        " + line for line in _column_write(i, column, kinds[i], in_insert=False)]
    out += ["        out.append(0)  # the end of the map", "        return bytes(out), ()", ""]

    # --- insert ---------------------------------------------------------------------------
    out += [
        "    def insert(data, p, head, lsn, txn, op_head=insert_head):",
        '        """A raw Insert -> (record key, ``head`` + envelope); None: not the plain case.',
        "",
        "        ``op_head`` ``codec.update_head``: a raw Update without an old tuple, whose event",
        "        is the same but for the op (u: no before, the new row, its key).",
        "        ``data[p]`` is the new tuple's column count. None when that count is not the",
        "        relation's, a column is unchanged TOAST or of an unknown kind, or the message",
        "        is cut short: the reference path then decides (and raises what it raises).",
        '        """',
        "        try:",
        f"            if data[p] != {ncols >> 8} or data[p + 1] != {ncols & 0xFF}:  # 16-bit column count",
        "                return None",
        "            p += 2",
        "            start = p",
    ]
    for i, column in enumerate(columns):
        out += ["            " + line for line in _column_parse(i, column)]
    out += [
        "            if p > len(data):",
        "                return None  # cut short: a slice past the end came back shorter",
        "            all_ascii = data[start:p].isascii()  # then no text column needs its own UTF-8 check",
        "        except (IndexError, StructError):",
        "            return None",
        "        out = bytearray(head)  # the framing (serde header)",
        f"        out += op_head  # op c (or u), no before, after: union branch 1 (the map) of {ncols} entries",
    ]
    for i, column in enumerate(columns):
        out += ["        " + line for line in _column_write(i, column, kinds[i], in_insert=True)]
    out += [
        "        out += insert_tail  # the end of the map, no unchanged_toast, key_columns",
        "        out += zigzag(lsn)  # source.lsn",
        "        out += txn  # source.commit_lsn, xid, commit_time",
        "        out += relation_tail  # source.schema, table, snapshot",
    ]
    if relation.key_indexes:
        out.append("        key = b''.join((")
        for n, i in enumerate(relation.key_indexes):
            prefix = (b"{" if n == 0 else b",") + json.dumps(columns[i].name).encode() + b":"
            out += [f"            {prefix!r},", f"            {_key_part(i, kinds[i])},"]
        out += ["            b'}',", "        ))"]
    else:
        out.append("        key = None  # no key columns")
    out += ["        return key, bytes(out)", "", "    return row, insert", ""]
    return "\n".join(out)


RowWriter = Callable[[list[object]], tuple[bytes, Sequence[str]]]
InsertWriter = Callable[..., "tuple[bytes | None, bytes] | None"]


def compile_writers(source: str, relation: Relation, codec: Any) -> tuple[RowWriter, InsertWriter]:
    """Compile ``source`` (from :func:`relation_source`) and bind it to ``codec``."""
    filename = f"<cdc writers of {_label(relation.namespace + '.' + relation.name)}>"
    # mtime None: linecache.checkcache keeps the entry (there is no file to go stale)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "streams.cdc.generated"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["bind"](codec)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streams.cdc.codegen",
        description="Print the generated envelope writers of a seed-shaped product_snapshots relation.",
    )
    parser.add_argument("--show", action="store_true", help="print the source (the default and only action)")
    parser.parse_args(argv)
    print(relation_source(EXAMPLE), end="")


if __name__ == "__main__":
    main()
