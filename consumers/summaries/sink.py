"""The summaries sink: CDC change events of products, product_snapshots and alerts -> summaries.

``prepare`` is pure (validate the envelope, keep the columns that matter); ``write``
folds the batch, applies it to the state tables, and recomputes the summary of every
ASIN it touched, plus any whose 30-day window edge passed since it was computed, in the
loop's transaction (together with the batch's offsets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from consumers.freshness import Freshness
from consumers.summaries import price_daily, store
from consumers.summaries.changes import Change, parse_change
from consumers.summaries.fold import fold
from streams.consumer.sink import Writes


class SummariesSink:
    name = "summaries"
    subject = "cdc_change"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.freshness = Freshness("summaries", registry)

    def prepare(self, record: dict[str, Any]) -> Change:
        return parse_change(record)

    def timestamps(self, items: Sequence[Change]) -> Mapping[str, Iterable[datetime]]:
        return {}  # the summaries tables are not partitioned

    def write(self, conn: psycopg.Connection, items: Sequence[Change]) -> Writes:
        # the days a snapshot leaves (deleted, or moved to another ASIN) are read before the
        # state moves; the days it joins come from the changes themselves
        self.freshness.record(conn, (c.commit_time_us for c in items),
                              [c.key[1] for c in items if c.table == "product_snapshots" and c.values is not None])
        days = price_daily.touched_before(conn, items)
        folded = fold(items)
        applied = store.apply(conn, folded)
        # windows that moved since their row was computed ride along with the batch, so a
        # busy stream keeps them right without the sweep (which covers quiet periods)
        touched = applied.touched | set(store.expired(conn))
        written, deleted = store.recompute(conn, touched)
        if any(c.table == "product_snapshots" and c.is_truncate for c in items):
            daily = price_daily.rebuild(conn)
        else:
            daily = price_daily.recompute(conn, days | price_daily.touched_by(items))
        done = Writes()
        for table in applied.inserted.keys() | applied.updated.keys():
            done.count(table, applied.inserted.get(table, 0), applied.updated.get(table, 0))
        # recomputed summaries: rewritten (or removed) whole, an insert and an update alike
        if written + deleted:
            done.written["summaries.product_summary"] += written + deleted
        if daily:
            done.written["summaries.price_daily"] += daily
        # a net row the version guard refused (a redelivery, a change older than the stored
        # row) changed nothing. Counted per net row: changes folded into a newer change of
        # the same row in this batch count as stored (they are part of what was written)
        net = sum(len(batch.rows) for batch in folded.values())
        written_rows = sum(applied.inserted.values()) + sum(applied.updated.values())
        done.already_stored = min(max(net - written_rows, 0), len(items))
        return done
