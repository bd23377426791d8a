"""``insights summaries rebuild``: every summary recomputed from the source tables, live pipeline running.

1. **A snapshot at a known WAL position.** A temporary logical slot created with an exported
   snapshot gives its consistent point L and a snapshot that sees exactly the transactions
   committed before L (as ``insights cdc snapshot``, ``streams/cdc/snapshot.py``). The sources
   are read in a REPEATABLE READ transaction that imports it.
2. **A shadow copy.** Schema ``summaries_rebuild`` gets the live tables' definitions
   (``CREATE TABLE … (LIKE summaries.t INCLUDING ALL)``: columns, defaults, keys, indexes);
   the state tables are filled from the snapshot, every row versioned ``(L, L)`` (what a
   snapshot read event carries), then the summaries and ``price_daily`` are computed by the
   sink's own statements (``sql.recompute_statement``, ``price_daily.rebuild_statement``)
   pointed at the shadow schema.
3. **Verified in the same snapshot.** In that same transaction the active shadow summaries
   are compared with ``product_summary_view``'s defining query (``pg_get_viewdef``, the view
   "refreshed at the same instant": same snapshot, same ``now()``) and ``price_daily`` with
   its ``GROUP BY`` oracle over ``product_snapshots``. A difference aborts: the shadow is
   dropped, live untouched.
4. **Catch up and swap, in one transaction.** The live summary tables are locked (ACCESS
   EXCLUSIVE: the live sink's next batch waits; readers wait for the few statements). Every
   change the live sink applied with a version above L is in its state tables with that
   version (tombstones included) and its truncations in ``summaries.truncations``: those are
   applied to the shadow with the sink's own version-guarded statements
   (``sql.truncate_statement`` then ``sql.apply_statement``), and the ASINs they touch
   recomputed. This replaces reading the CDC topics from L: the live state already holds
   exactly the changes after L that the live sink stored, and the changes it has not stored
   yet it will apply after the swap, from its offsets, to the new tables. Then the grants of
   the live schema and tables are copied, ``summaries`` is renamed away,
   ``summaries_rebuild`` becomes ``summaries`` and the old one is dropped. A deadlock or lock
   timeout retries the swap.

If the live sink is behind L at the swap, the changes up to L it still applies are no-ops on
every row the snapshot had (older versions); a row both inserted and deleted before L comes
back for the moment between its insert's and its delete's redelivery (a few batches). That is
the price of not stopping the sink; running the rebuild while the sink is caught up avoids it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from consumers.summaries import price_daily
from consumers.summaries import sql as statements
from core.errors import InsightsError
from core.settings import Settings
from streams.cdc.lsn import format_lsn, parse_lsn
from streams.cdc.transport import ReplicationConnection
from streams.pg.connect import connect

LIVE = statements.SCHEMA
SHADOW = "summaries_rebuild"
#: every table of the summaries schema, state first (the order they are created and locked in)
TABLES = statements.ALL_TABLES
SWAP_ATTEMPTS = 5
SWAP_LOCK_TIMEOUT = "10s"

#: per state table: the SELECT list over the source table that fills it (the columns the sink keeps)
_SOURCE_COLUMNS = {
    "products": ("products", ("asin", "title", "brand", "category", "is_active")),
    "snapshots": ("product_snapshots",
                  ("id", "scraped_at", "asin", "price", "rating", "review_count", "bsr_data", "availability_status")),
    "alerts": ("alerts", ("id", "triggered_at", "target_asin", "is_read", "is_resolved")),
}

_VIEW_COLUMNS = ("asin", "title", "brand", "category", "current_price", "current_rating", "current_review_count",
                 "bsr_data", "availability_status", "last_updated", "min_price_30d", "max_price_30d", "avg_price_30d")


class RebuildError(InsightsError):
    """The rebuild cannot run or its result did not verify; live summaries untouched."""


@dataclass
class RebuildResult:
    consistent_point: str = ""
    state_rows: dict[str, int] = field(default_factory=dict)
    summaries: int = 0
    price_days: int = 0
    caught_up: dict[str, int] = field(default_factory=dict)  # live rows newer than L merged at the swap
    recomputed_at_swap: int = 0
    swap_attempts: int = 0
    dry_run: bool = False


Step = Callable[[str], None]


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def check_migrated(conn: psycopg.Connection[Any]) -> None:
    missing = [t for t in TABLES if conn.execute("SELECT to_regclass(%s)", (f"{LIVE}.{t}",)).fetchone()[0] is None]  # type: ignore[index]
    if missing or conn.execute("SELECT to_regclass('product_summary_view')").fetchone()[0] is None:  # type: ignore[index]
        raise RebuildError("summaries rebuild: the summaries tables are missing; run `insights db migrate` first")


def _create_shadow(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(SHADOW)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(SHADOW)))
    for table in TABLES:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(_ident(SHADOW, table), _ident(LIVE, table)))


def drop_shadow(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(SHADOW)))


def _fill_and_verify(conn: psycopg.Connection[Any], source_schema: str, point: int, result: RebuildResult,
                     step: Step) -> None:
    """Inside the snapshot's transaction: state from the sources, summaries, then the checks."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    for state, (source, columns) in _SOURCE_COLUMNS.items():
        step(f"reading {source_schema}.{source}")
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        cur = conn.execute(
            sql.SQL("INSERT INTO {} ({cols}, deleted, commit_lsn, lsn, changed_at) "
                    "SELECT {cols}, false, %(l)s, %(l)s, now() FROM {}").format(
                _ident(SHADOW, state), _ident(source_schema, source), cols=cols),
            {"l": point},
        )
        result.state_rows[state] = cur.rowcount
    step("computing the summaries")
    asins = [r[0] for r in conn.execute(sql.SQL("SELECT asin FROM {}").format(_ident(SHADOW, "products"))).fetchall()]
    conn.execute(statements.recompute_statement(SHADOW), {"asins": asins})
    result.summaries = len(asins)
    step("computing price_daily")
    conn.execute(price_daily.rebuild_statement(SHADOW))
    result.price_days = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(SHADOW, "price_daily"))).fetchone()[0]  # type: ignore[index]
    step("verifying against product_summary_view's query in the same snapshot")
    viewdef = conn.execute("SELECT pg_get_viewdef('product_summary_view'::regclass)").fetchone()[0]  # type: ignore[index]
    cols = sql.SQL(", ").join(map(sql.Identifier, _VIEW_COLUMNS))
    view = sql.SQL("SELECT {cols} FROM ({q}) v").format(cols=cols, q=sql.SQL(viewdef.rstrip().rstrip(";")))
    shadow = sql.SQL("SELECT {cols} FROM {t} WHERE is_active").format(cols=cols, t=_ident(SHADOW, "product_summary"))
    diff = conn.execute(
        sql.SQL("SELECT 'view only' AS side, d.* FROM (({v}) EXCEPT ({s})) d "
                "UNION ALL SELECT 'rebuild only', d.* FROM (({s}) EXCEPT ({v})) d LIMIT 3").format(v=view, s=shadow)
    ).fetchall()
    if diff:
        raise RebuildError(
            f"summaries rebuild: the recomputed summaries differ from product_summary_view's query in the same "
            f"snapshot (e.g. {diff[0][0]}: asin {diff[0][1]}); nothing replaced, this is a bug to report"
        )
    oracle = sql.SQL(
        "SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date, "
        "(array_agg(price ORDER BY scraped_at) FILTER (WHERE price IS NOT NULL))[1], max(price), min(price), "
        "(array_agg(price ORDER BY scraped_at DESC) FILTER (WHERE price IS NOT NULL))[1], count(*)::int "
        "FROM {} WHERE asin IS NOT NULL GROUP BY 1, 2"
    ).format(_ident(source_schema, "product_snapshots"))
    mine = sql.SQL("SELECT asin, day, open, high, low, close, snapshots FROM {}").format(_ident(SHADOW, "price_daily"))
    bad = conn.execute(
        sql.SQL("SELECT count(*) FROM ((({o}) EXCEPT ({m})) UNION ALL (({m}) EXCEPT ({o}))) d").format(o=oracle, m=mine)
    ).fetchone()[0]  # type: ignore[index]
    if bad:
        raise RebuildError(f"summaries rebuild: price_daily differs from its GROUP BY over product_snapshots "
                           f"in {bad} rows; nothing replaced, this is a bug to report")


def _snapshot_build(settings: Settings, result: RebuildResult, step: Step) -> None:
    slot = f"insights_rebuild_{uuid.uuid4().hex[:12]}"
    step("creating a temporary slot for a consistent point")
    with ReplicationConnection.open(settings.pg, "summaries-rebuild") as replication:
        created = replication.create_slot(slot, export_snapshot=True, temporary=True)
        point = parse_lsn(created.consistent_point)
        result.consistent_point = created.consistent_point
        # the exported snapshot lives while the replication connection stays open and idle
        with connect(settings.pg, "summaries-rebuild", autocommit=False) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(created.snapshot_name)))
            try:
                _fill_and_verify(conn, settings.cdc.schema_name, point, result, step)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()


def _grants(conn: psycopg.Connection[Any]) -> None:
    """The shadow gets the live schema's and tables' grants (same grantees, same privileges)."""
    rows = conn.execute(
        """
        SELECT NULL::text, a.grantee::regrole::text, a.privilege_type
        FROM pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspname = %(live)s AND a.grantee <> n.nspowner AND a.grantee <> 0
        UNION ALL
        SELECT c.relname, a.grantee::regrole::text, a.privilege_type
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
        WHERE n.nspname = %(live)s AND c.relkind = 'r' AND a.grantee <> c.relowner AND a.grantee <> 0
        """,
        {"live": LIVE},
    ).fetchall()
    for table, grantee, privilege in rows:
        target = sql.SQL("SCHEMA {}").format(_ident(SHADOW)) if table is None else _ident(SHADOW, table)
        conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), target, sql.Identifier(grantee)))


def _catch_up(conn: psycopg.Connection[Any], point: int, result: RebuildResult) -> set[str]:
    """Apply to the shadow what the live sink stored with a version above L (its truncates first)."""
    touched: set[str] = set()
    truncs = conn.execute(
        sql.SQL("SELECT source_table, commit_lsn, lsn, truncated_at FROM {} WHERE (commit_lsn, lsn) > (%(l)s, %(l)s)")
        .format(_ident(LIVE, "truncations")), {"l": point}).fetchall()
    for source, cl, lsn, at in truncs:
        table = statements.STATE_TABLES[source]
        cur = conn.execute(statements.truncate_statement(table, SHADOW), {"source": source, "cl": cl, "l": lsn, "at": at})
        touched.update(r[0] for r in cur.fetchall())
    for source, table in statements.STATE_TABLES.items():
        columns = sql.SQL(", ").join(
            sql.SQL("{c}::text AS {c}").format(c=sql.Identifier(c)) if c == "bsr_data" else sql.Identifier(c)
            for c in table.key + table.values
        )
        rows = conn.execute(
            sql.SQL("SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')::text, count(*) FROM (SELECT {cols}, "
                    "ARRAY[]::text[] AS toast, deleted AS del, commit_lsn AS cl, lsn AS l, changed_at AS ct "
                    "FROM {t} WHERE (commit_lsn, lsn) > (%(l)s, %(l)s)) x").format(cols=columns, t=_ident(LIVE, table.name)),
            {"l": point},
        ).fetchone()
        assert rows is not None
        result.caught_up[table.name] = int(rows[1])
        if rows[1]:
            cur = conn.execute(statements.apply_statement(table, SHADOW), {"rows": rows[0], "source": source})
            touched.update(asin for asin, _ in cur.fetchall() if asin is not None)
    return touched


def _swap(conn: psycopg.Connection[Any], point: int, result: RebuildResult) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        # the live sink's batch writes every one of these: holding them all, it waits for the swap
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.SQL(", ").join(_ident(LIVE, t) for t in TABLES)))
        touched = _catch_up(conn, point, result)
        if touched:
            conn.execute(statements.recompute_statement(SHADOW), {"asins": sorted(touched)})
            conn.execute(price_daily.rebuild_statement(SHADOW))
        result.recomputed_at_swap = len(touched)
        _grants(conn)
        old = f"summaries_old_{uuid.uuid4().hex[:8]}"
        conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(_ident(LIVE), _ident(old)))
        conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(_ident(SHADOW), _ident(LIVE)))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_ident(old)))


def rebuild(settings: Settings, *, dry_run: bool = False, step: Step = lambda _s: None) -> RebuildResult:
    """Build, verify and (unless ``dry_run``) swap in the recomputed summaries."""
    result = RebuildResult(dry_run=dry_run)
    with connect(settings.pg, "summaries-rebuild") as conn:
        check_migrated(conn)
        step("creating the shadow schema")
        _create_shadow(conn)
        try:
            _snapshot_build(settings, result, step)
            if dry_run:
                return result
            point = parse_lsn(result.consistent_point)
            for attempt in range(1, SWAP_ATTEMPTS + 1):
                result.swap_attempts = attempt
                step(f"catching up from {format_lsn(point)} and swapping (attempt {attempt})")
                try:
                    _swap(conn, point, result)
                    break
                except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                    if attempt == SWAP_ATTEMPTS:
                        raise RebuildError(
                            f"summaries rebuild: could not lock the live summaries in {SWAP_ATTEMPTS} attempts "
                            "(a long transaction holds them?); nothing replaced, run it again") from None
                    time.sleep(attempt)
        finally:
            drop_shadow(conn)  # after a swap it is gone already; after a failure live stays as it was
    return result


def result_json(result: RebuildResult) -> str:
    return json.dumps(result.__dict__, default=str)
