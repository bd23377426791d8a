"""``insights cdc resync``: the CDC stream after its slot was lost (failover, lost WAL).

On PostgreSQL 15 a logical slot lives only on the server that made it: after a failover
the promoted replica has the publication (catalog, replicated) but no slot, and the old
primary may have published changes that the replica never received. Those *phantom*
changes are in the CDC topics and in the summaries built from them, but not in the
database any more. A new slot alone would stream only what happens from now on.

A resync makes the downstream state equal to the database again, in this order:

1. **Boundary**: the end offset of every partition of every CDC topic. Everything before
   it (including the phantoms) is history; everything after it is the resync. Nothing
   else writes those topics meanwhile: the reader cannot run without its slot.
2. **Summaries reset** (one transaction, in the database the summaries consumer writes):
   its stored offsets move to the boundary and the ``summaries`` tables are emptied. The
   consumer keeps running: the fence lock on ``consumer_offsets`` serializes the reset with
   its batches, it skips everything before the boundary as already stored (``GREATEST``),
   and rebuilds from the snapshot. Keys that exist only downstream (a phantom insert)
   vanish with the emptied tables; a phantom update or delete is overwritten by the row's
   current values.
3. **Snapshot**: a new slot with an exported snapshot, and every current row published as
   a read event (``op = r``, ``source.snapshot = true``) after the boundary
   (``streams/cdc/snapshot.py``). ``insights cdc run`` then streams from that slot's
   consistent point: nothing is missed or counted twice.

**Incremental** (``cdc resync --incremental``): step 3 becomes a new slot without an
exported snapshot plus a request for an incremental snapshot of every table
(``streams/cdc/incremental.py``, DBLog's watermarks), which ``insights cdc run`` carries out
in primary-key chunks while it streams. The choice:

* full (the default): exact and fastest (one COPY-like pass per table), but nothing is
  streamed until every row is published: downstream state is frozen for the snapshot's
  length (seconds per 100k rows here);
* incremental: the reader streams from the moment it starts and the summaries converge as
  chunks are published; a restart continues from the last published chunk; slower in rows
  per second and the summaries are partial until the last chunk.

Either way the summaries are reset first, so what was published before the boundary
(phantoms included) no longer counts.

Why a reset and not versions: the summaries order changes by ``(commit_lsn, lsn)``. After
a promotion, the new timeline reuses LSNs the old primary had already used for the phantom
changes, so a new, real change can carry a *lower* version than the phantom it must
replace. Per-key versions cannot repair that; starting the state over from a snapshot can.

Another consumer of the CDC topics must do the same for its own state: treat the read
events after a resync boundary as the whole truth (docs/runbooks.md#primary-lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console

from consumers.summaries.sql import ALL_TABLES as SUMMARY_TABLES
from consumers.summaries.sql import SCHEMA as SUMMARY_SCHEMA
from core.errors import InsightsError
from core.settings import Settings
from streams.cdc import slot as slots
from streams.topics import cdc_tables, cdc_topic_name


class ResyncError(InsightsError):
    """A resync cannot start (a reader still streams, the server is a standby, Kafka is away)."""


@dataclass
class ResyncResult:
    boundary: dict[str, dict[int, int]] = field(default_factory=dict)
    summaries_reset: bool = False
    summaries_group: str = ""
    consistent_point: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    #: --incremental: the signal id the running reader takes (``cdc snapshot --status``)
    signal: int | None = None


def summaries_group(settings: Settings) -> str:
    """The summaries consumer's default group (``insights consume summaries``)."""
    return f"{settings.consumer.group}.summaries"


def check_can_resync(settings: Settings) -> str | None:
    """Why a resync would be refused, or None. Also: whether a slot exists (it will be replaced)."""
    with slots.connect(settings.pg, "cdc-resync") as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and row[0]:
            raise ResyncError("INSIGHTS_PG_DSN reaches a standby: a resync runs on the primary")
        found = slots.slot_status(conn, settings.cdc.slot_name)
    if found is not None and found.active:
        raise ResyncError(
            f"slot {settings.cdc.slot_name!r} is in use by a reader (pid {found.active_pid}): "
            "stop `insights cdc run` first"
        )
    return None if found is None else f"slot {found.slot} exists (wal_status {found.wal_status}): it will be replaced"


def boundary(settings: Settings, tables: tuple[str, ...]) -> dict[str, dict[int, int]]:
    """End offset of every partition of the CDC topics that exist."""
    from streams.admin import admin_client, end_offsets

    admin = admin_client(settings)
    found: dict[str, dict[int, int]] = {}
    for table in tables:
        topic = cdc_topic_name(settings, table, settings.cdc.schema_name)
        meta = admin.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            continue  # never streamed: nothing before the boundary
        found[topic] = end_offsets(admin, topic, len(meta.partitions), timeout=30)
    return found


def reset_summaries(conn: psycopg.Connection[Any], group: str, ends: dict[str, dict[int, int]]) -> bool:
    """Move the group's stored offsets to ``ends`` and empty the summaries tables, atomically."""
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SUMMARY_SCHEMA,)).fetchone()
    if exists is None:
        return False
    rows = [(topic, partition, offset) for topic, parts in ends.items() for partition, offset in parts.items()]
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '30s'")
        # blocks offset writes of every group for the blink of this transaction: no batch
        # of the summaries consumer can interleave, and no two lockers deadlock on rows
        conn.execute("LOCK TABLE consumer_offsets IN SHARE ROW EXCLUSIVE MODE")
        if rows:
            conn.execute(
                """
                INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, updated_at)
                SELECT %s, w.topic, w.partition, w.next_offset, now()
                  FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS w(topic, partition, next_offset)
                ON CONFLICT (consumer_group, topic, partition) DO UPDATE
                SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()
                """,
                (group, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
            )
        conn.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(SUMMARY_SCHEMA, t) for t in SUMMARY_TABLES)
            )
        )
    return True


def resync(
    settings: Settings,
    *,
    group: str | None = None,
    incremental: bool = False,
    console: Console | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ResyncResult:
    from streams.cdc.snapshot import run_snapshot

    check_can_resync(settings)
    tables = cdc_tables(settings)
    result = ResyncResult(summaries_group=group or summaries_group(settings))
    progress("reading the end offsets of the CDC topics (the resync boundary)")
    result.boundary = boundary(settings, tables)
    progress(f"resetting the summaries of group {result.summaries_group} to the boundary")
    with slots.connect(settings.pg, "cdc-resync") as conn:
        result.summaries_reset = reset_summaries(conn, result.summaries_group, result.boundary)
    if incremental:
        progress("creating the slot and asking for an incremental snapshot of every table")
        result.signal = request_incremental(settings, tables)
        return result
    progress("creating the slot and publishing every current row (snapshot)")
    snap = run_snapshot(settings, tables, recreate_slot=True, console=console)
    result.consistent_point = snap.consistent_point
    result.rows = dict(snap.rows)
    return result


def request_incremental(settings: Settings, tables: tuple[str, ...]) -> int:
    """A new slot (an old one, inactive, is dropped: it holds the lost history) and a signal
    asking the reader that will stream it for an incremental snapshot of ``tables``.

    The slot comes first: every change committed after it is streamed, and every row
    committed before it is read by a chunk, so nothing falls between the two."""
    from streams.cdc import incremental as inc

    with slots.connect(settings.pg, "cdc-resync") as conn:
        slots.ensure_publication(
            conn, settings.cdc.publication, settings.cdc.schema_name, tables,
            settings.cdc.include_columns, settings.cdc.exclude_columns,
        )
        if slots.slot_exists(conn, settings.cdc.slot_name):
            slots.drop(conn, settings.cdc.slot_name, "")  # the slot only: the publication stays
        slots.ensure_slot(conn, settings.cdc.slot_name)
        return inc.request(conn, settings.cdc.schema_name, settings.cdc.slot_name, list(tables))
