"""The summaries consumer's I/O: apply a folded batch, recompute the ASINs it touched.

Runs inside the transaction the consumer loop opened (with the batch's offsets); nothing
here commits. ``sweep`` is the exception: it is its own short transactions, for the
30-day window moving with time (``insights summaries sweep``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumers.summaries import price_daily, sql
from consumers.summaries.fold import Net, TableBatch

#: rows recomputed per sweep transaction (and per batch, for windows that expired)
SWEEP_CHUNK = 1000

#: tombstones are kept longer than the CDC topics' retention (7 days): no redelivery
#: (and no replay from the start of a topic) can then be older than a purged tombstone
TOMBSTONE_TTL = timedelta(days=8)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _us(commit_time_us: int) -> str:
    return datetime.fromtimestamp(commit_time_us / 1e6, UTC).isoformat()


def _rows_json(table: sql.StateTable, rows: Iterable[Net]) -> str:
    out = []
    for net in rows:
        doc: dict[str, Any] = {c: _jsonable(v) for c, v in zip(table.key, net.key, strict=True)}
        doc.update(net.values)
        doc["toast"] = sorted(net.toast)
        doc["del"] = net.deleted
        doc["cl"], doc["l"] = net.version
        doc["ct"] = _us(net.commit_time_us)
        out.append(doc)
    return json.dumps(out, separators=(",", ":"))


_APPLY = {name: sql.apply_statement(t) for name, t in sql.STATE_TABLES.items()}
_TRUNCATE = {name: sql.truncate_statement(t) for name, t in sql.STATE_TABLES.items()}


@dataclass
class Applied:
    touched: set[str]
    #: state rows added / changed per table (rows the version guard kept are in neither)
    inserted: dict[str, int]
    updated: dict[str, int]


def apply(conn: psycopg.Connection, batches: Mapping[str, TableBatch]) -> Applied:
    """Truncates first (they only remove what is older), then the net row changes."""
    touched: set[str] = set()
    inserted: dict[str, int] = {}
    updated: dict[str, int] = {}
    with conn.cursor() as cur:
        # the 30-day arithmetic in UTC, whatever the server's default TimeZone
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        for source, batch in batches.items():
            if batch.truncate is not None:
                cl, lsn = batch.truncate
                cur.execute(_TRUNCATE[source], {"source": source, "cl": cl, "l": lsn, "at": _us(batch.truncate_time_us)})
                touched.update(r[0] for r in cur.fetchall())
        for source, batch in batches.items():
            if not batch.rows:
                continue
            table = sql.STATE_TABLES[source]
            cur.execute(_APPLY[source], {"rows": _rows_json(table, batch.rows.values()), "source": source})
            found = cur.fetchall()
            touched.update(asin for asin, _ in found if asin is not None)
            name = f"summaries.{table.name}"
            inserted[name] = sum(1 for _, new in found if new is True)
            updated[name] = sum(1 for _, new in found if new is False)
    return Applied(touched, inserted, updated)


def expired(conn: psycopg.Connection, limit: int = SWEEP_CHUNK) -> list[str]:
    return [r[0] for r in conn.execute(sql.EXPIRED, {"limit": limit}).fetchall()]


def recompute(conn: psycopg.Connection, asins: Iterable[str]) -> tuple[int, int]:
    """Lock and recompute the summary rows of ``asins``; (rows written, rows deleted)."""
    wanted = sorted(set(asins))
    if not wanted:
        return 0, 0
    with conn.cursor() as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute(sql.LOCK_ASINS, {"class": sql.LOCK_CLASS, "asins": wanted})
        cur.execute(sql.RECOMPUTE, {"asins": wanted})
        found = cur.fetchone()
    written, deleted = found if found else (0, 0)
    return int(written), int(deleted)


#: the source's partition retention (ddl/0013 partition_policy): months of snapshots, alerts
RETENTION_MONTHS = {"product_snapshots": 12, "alerts": 6}


@dataclass
class SweepResult:
    recomputed: int = 0
    changed: int = 0
    tombstones: int = 0
    retired: int = 0  # summaries recomputed because rows passed the retention


def apply_retention(conn: psycopg.Connection, months: Mapping[str, int]) -> int:
    """Forget state rows the source's partition prune removes; recompute their ASINs (one transaction)."""
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        touched: set[str] = set()
        for source, keep in months.items():
            if keep > 0:
                touched.update(r[0] for r in conn.execute(sql.RETENTION[source], {"months": keep}).fetchall())
                if source == "product_snapshots":
                    conn.execute(price_daily.FORGET, {"months": keep})
        recompute(conn, touched)
    return len(touched)


def sweep(conn: psycopg.Connection, *, chunk: int = SWEEP_CHUNK, tombstone_ttl: timedelta = TOMBSTONE_TTL,
          retention_months: Mapping[str, int] | None = None, on_chunk: Any = None) -> SweepResult:
    """Recompute every row whose window edge passed (chunked transactions); purge old tombstones;
    with ``retention_months``, forget what the source's partition retention dropped.

    ``conn`` must be in autocommit mode: each chunk is its own transaction, so a sweep of
    many rows never holds the summary locks long against the consumer.
    """
    result = SweepResult()
    if retention_months:
        result.retired = apply_retention(conn, retention_months)
    while True:
        with conn.transaction():
            asins = expired(conn, chunk)
            if not asins:
                break
            written, deleted = recompute(conn, asins)
        result.recomputed += len(asins)
        result.changed += written + deleted
        if on_chunk is not None:
            on_chunk(len(asins))
        if len(asins) < chunk or written + deleted == 0:
            break  # the last chunk, or rows that recomputing cannot move (never loop on them)
    cutoff = datetime.now(UTC) - tombstone_ttl
    for statement in sql.PURGE_TOMBSTONES:
        with conn.transaction():
            result.tombstones += conn.execute(statement, {"cutoff": cutoff}).rowcount
    return result
