"""The scrape sink's I/O: one batch of prepared scrapes into PostgreSQL, set-based."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from consumers.copy import copy_rows, use_fast_json
from consumers.scrape import sql
from consumers.scrape.mapping import ScrapeRows, merge, prepare
from consumers.spec import SinkSpec, topic_for_subject
from streams.consumer.sink import Writes


class ScrapeSink:
    name = "scrape"
    subject = "product_scraped"

    def prepare(self, record: dict[str, Any]) -> ScrapeRows:
        return prepare(record)

    def timestamps(self, items: Sequence[ScrapeRows]) -> Mapping[str, Iterable[datetime]]:
        return {"product_snapshots": [r.snapshot[13] for r in items]}

    def write(self, conn: psycopg.Connection, items: Sequence[ScrapeRows]) -> Writes:
        batch = merge(items)
        done = Writes()
        with conn.cursor() as cur:
            use_fast_json(cur)  # orjson for dimensions, bsr_data, images, variations, raw_data
            cur.execute(sql.CREATE_STAGING)
            copy_rows(cur, sql.COPY_PRODUCTS, sql.PRODUCT_TYPES, batch.products)
            copy_rows(cur, sql.COPY_SNAPSHOTS, sql.SNAPSHOT_TYPES, batch.snapshots)
            if batch.features:
                copy_rows(cur, sql.COPY_FEATURES, sql.FEATURE_TYPES, batch.features)
            late_features = 0
            if batch.features:  # before the products upsert moves last_scraped_at
                cur.execute(sql.LATE_FEATURES)
                late_features = _one(cur.fetchone())
            # products first: snapshots and features reference them
            cur.execute(sql.UPSERT_PRODUCTS)
            done.count("products", *_pair(cur.fetchone()))
            cur.execute(sql.INSERT_SNAPSHOTS)
            snapshots = max(cur.rowcount, 0)
            done.count("product_snapshots", snapshots, 0)
            if batch.features:
                cur.execute(sql.UPSERT_FEATURES)
                inserted, updated = _pair(cur.fetchone())
                done.count("product_features", inserted + late_features, updated)
        # a scrape is its snapshot (event identity, ddl/README.md): one whose snapshot was
        # there already (a redelivery, a duplicate in this batch) changed nothing new
        done.already_stored = len(items) - snapshots
        return done


def _one(row: tuple[int] | None) -> int:
    return int(row[0]) if row else 0


def _pair(row: tuple[int, int] | None) -> tuple[int, int]:
    return (int(row[0]), int(row[1])) if row else (0, 0)


SPEC = SinkSpec(
    name="scrape",
    help="ProductScraped events into products, product_snapshots and product_features",
    make=ScrapeSink,
    topics=lambda settings: [topic_for_subject(settings, ScrapeSink.subject)],
)
