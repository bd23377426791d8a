"""CPU cost of a typed change event beside the generic envelope, per change, in process.

    .venv/bin/python bench/cdc_typed_cost.py [--changes 20000]

The same decoded Insert of a product_snapshots-shaped row (``streams.cdc.codegen.EXAMPLE``,
bench/cdc_bench.py's table) written three ways: the generic envelope's fast path
(``envelope.change_bodies``, what `cdc run` does for a decoded change), the generic reference
(``envelope.change_events`` + ``encode_body``), and the typed event (``typed_events.TypedCodec``:
values converted to Decimal/datetime/lists, written by fastavro). No socket, no broker, no
catalog: only the encoding. Best of 5, process time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from streams.cdc.codegen import EXAMPLE
from streams.cdc.envelope import RelationCodec, SourceInfo, change_bodies, change_events, encode_body, record_key
from streams.cdc.pgoutput import Insert
from streams.cdc.typed import ColumnInfo, TableInfo, TypedRows, envelope_schema, may_be_toasted
from streams.cdc.typed_events import TypedCodec
from streams.cdc.typed_schemas import TypedVersion, fingerprint
from streams.cdc.values import ValueConverter

ROW = [
    b"123456789", b"B0TESTASIN", b"A product title of some length, as scrapers find them", b"19.99", b"18.49",
    b"4.50", b"1234", b'{"Electronics": 12, "Headphones": 3}', b"In Stock",
    b'{"Noise cancelling","30 h battery","USB-C"}', b'["https://img.example/1.jpg"]',
    b"2024-02-03 04:05:06.123456+00", b"processed", b"2024-02-03 04:05:07.5+00",
]
TYPE_NAMES = {20: "bigint", 1043: "character varying", 1700: "numeric", 23: "integer", 3802: "jsonb",
              1009: "text[]", 1184: "timestamp with time zone"}


def _table() -> TableInfo:
    return TableInfo(EXAMPLE.namespace, EXAMPLE.name, tuple(
        ColumnInfo(c.name, c.type_oid, c.type_modifier, TYPE_NAMES[c.type_oid], c.is_key,
                   25 if c.type_oid == 1009 else 0, may_be_toasted(c.type_oid, c.type_modifier, c.type_oid != 23),
                   c.is_key)
        for c in EXAMPLE.columns
    ))


def _best(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000)
    n = parser.parse_args().changes
    converter = ValueConverter()
    message = Insert(EXAMPLE.oid, list(ROW))
    src = SourceInfo(lsn=1, commit_lsn=2, xid=3, commit_time_us=1_700_000_000_000_000)
    fast = RelationCodec(EXAMPLE, converter)
    txn = b"\x00\x00\x00"
    table = _table()
    raw = envelope_schema(table)
    version = TypedVersion("t-value", 1, raw, fingerprint(raw), b"\xc3\x01" + fingerprint(raw))
    typed = TypedCodec(EXAMPLE, TypedRows(table), version, record_key(converter, EXAMPLE))
    sizes = {
        "generic fast path": len(change_bodies(fast, message, 1, txn)[0][2]),
        "generic reference": len(encode_body(change_events(converter, EXAMPLE, message, src)[0].value)),
        "typed": len(typed.changes(message, src)[0][2]) - len(version.header),
    }
    timings = {
        "generic fast path": _best(lambda: change_bodies(fast, message, 1, txn), n),
        "generic reference": _best(lambda: [encode_body(e.value) for e in change_events(converter, EXAMPLE, message, src)], n),
        "typed": _best(lambda: typed.changes(message, src), n),
    }
    base = timings["generic fast path"]
    for name, seconds in timings.items():
        print(f"{name:18} {seconds * 1e6:7.1f} µs/change  {1 / seconds:9,.0f} changes/s  "
              f"x{seconds / base:4.1f}  body {sizes[name]} bytes")


if __name__ == "__main__":
    main()
