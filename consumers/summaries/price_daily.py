"""summaries.price_daily: per product and UTC day, open/high/low/close and the snapshot count.

Recomputed, inside the batch transaction, for the (ASIN, day) pairs a batch touched, from
the version-guarded state table ``summaries.snapshots``: so it inherits the summaries'
idempotency by source position (a redelivered or replayed change does not move the state,
and recomputing an unchanged day rewrites nothing) and their handling of deletes (the
tombstone keeps the ASIN), moves (a delete in one partition and an insert in another: two
days touched) and truncates (the whole table is rebuilt from what is left).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from consumers.summaries.changes import Change

Day = tuple[str, date]


def day_of(at: datetime) -> date:
    return at.astimezone(UTC).date()


TOUCHED_BEFORE = (
    "SELECT s.asin, s.scraped_at FROM summaries.snapshots s "
    "JOIN unnest(%(ids)s::bigint[], %(ats)s::timestamptz[]) AS k(id, at) ON s.id = k.id AND s.scraped_at = k.at "
    "WHERE NOT s.deleted AND s.asin IS NOT NULL"
)


def touched_before(conn: psycopg.Connection, changes: Sequence[Change]) -> set[Day]:
    """The days the batch's snapshot keys belong to now (before the batch): where a row
    updated to another ASIN, or deleted, leaves."""
    keys = [c.key for c in changes if c.table == "product_snapshots" and not c.is_truncate]
    if not keys:
        return set()
    rows = conn.execute(TOUCHED_BEFORE, {"ids": [k[0] for k in keys], "ats": [k[1] for k in keys]}).fetchall()
    return {(asin, day_of(at)) for asin, at in rows}


def touched_by(changes: Iterable[Change]) -> set[Day]:
    """The days the batch's inserted and updated snapshots belong to."""
    out: set[Day] = set()
    for c in changes:
        if c.table == "product_snapshots" and c.values is not None and c.values.get("asin"):
            out.add((c.values["asin"], day_of(c.key[1])))
    return out


#: recompute the given (asin, day) rows from the state (exported for tests/summaries/test_plans.py)
DAYS = """
WITH k AS (
    SELECT DISTINCT * FROM unnest(%(asins)s::text[], %(days)s::date[]) AS k(asin, day)
), agg AS (
    SELECT k.asin, k.day,
           (array_agg(s.price ORDER BY s.scraped_at) FILTER (WHERE s.price IS NOT NULL))[1] AS open,
           max(s.price) AS high, min(s.price) AS low,
           (array_agg(s.price ORDER BY s.scraped_at DESC) FILTER (WHERE s.price IS NOT NULL))[1] AS close,
           count(s.asin)::int AS snapshots
    FROM k JOIN summaries.snapshots s
      ON s.asin = k.asin AND NOT s.deleted
     AND s.scraped_at >= k.day::timestamp AT TIME ZONE 'UTC'
     AND s.scraped_at < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY k.asin, k.day
), gone AS (
    DELETE FROM summaries.price_daily p USING k
    WHERE p.asin = k.asin AND p.day = k.day
      AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.asin = k.asin AND agg.day = k.day)
    RETURNING 1
), up AS (
    INSERT INTO summaries.price_daily AS p (asin, day, open, high, low, close, snapshots)
    SELECT asin, day, open, high, low, close, snapshots FROM agg
    ON CONFLICT (asin, day) DO UPDATE
    SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        snapshots = EXCLUDED.snapshots, computed_at = now()
    WHERE (p.open, p.high, p.low, p.close, p.snapshots)
          IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.snapshots)
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)
"""

_REBUILD_SQL = """
WITH agg AS (
    SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date AS day,
           (array_agg(price ORDER BY scraped_at) FILTER (WHERE price IS NOT NULL))[1] AS open,
           max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY scraped_at DESC) FILTER (WHERE price IS NOT NULL))[1] AS close,
           count(*)::int AS snapshots
    FROM {snapshots} WHERE NOT deleted AND asin IS NOT NULL
    GROUP BY 1, 2
), gone AS (
    DELETE FROM {price_daily} p
    WHERE NOT EXISTS (SELECT 1 FROM agg WHERE agg.asin = p.asin AND agg.day = p.day)
    RETURNING 1
), up AS (
    INSERT INTO {price_daily} AS p (asin, day, open, high, low, close, snapshots)
    SELECT * FROM agg
    ON CONFLICT (asin, day) DO UPDATE
    SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        snapshots = EXCLUDED.snapshots, computed_at = now()
    WHERE (p.open, p.high, p.low, p.close, p.snapshots)
          IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.snapshots)
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)
"""


def rebuild_statement(schema: str = "summaries") -> sql.Composed:
    """Every day of ``schema``'s price_daily again from its snapshots (the rebuild's shadow too)."""
    return sql.SQL(_REBUILD_SQL).format(
        snapshots=sql.Identifier(schema, "snapshots"), price_daily=sql.Identifier(schema, "price_daily")
    )


_REBUILD = rebuild_statement()


def recompute(conn: psycopg.Connection, days: Iterable[Day]) -> int:
    """Rewrite the rows of ``days`` that changed (deleting days left without snapshots); rows written."""
    wanted = sorted(set(days))
    if not wanted:
        return 0
    row = conn.execute(DAYS, {"asins": [a for a, _d in wanted], "days": [d for _a, d in wanted]}).fetchone()
    return int(row[0]) if row else 0


def rebuild(conn: psycopg.Connection) -> int:
    """After a truncate of product_snapshots: every day again from what the state keeps."""
    row = conn.execute(_REBUILD).fetchone()
    return int(row[0]) if row else 0


FORGET = """
DELETE FROM summaries.price_daily
WHERE day < (date_trunc('month', now()) - make_interval(months => %(months)s))::date
"""
