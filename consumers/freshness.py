"""How fresh a downstream consumer is: the newest source commit it applied, and scrape-to-applied lag.

Each consumer of the CDC topics calls :func:`record` from its ``write``, inside the batch
transaction: ``downstream_freshness`` then says what that consumer committed, never more
(``insights status`` grades it), and the process's metrics say the same:

* ``insights_downstream_applied_commit_timestamp_seconds``: Unix time of the newest source
  commit applied (the freshness of what it serves);
* ``insights_downstream_scrape_to_applied_seconds``: per snapshot applied, the time from
  its ``scraped_at`` to the batch's write (end-to-end lag from the scrape).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from prometheus_client import CollectorRegistry, Gauge, Histogram

UPSERT = """
INSERT INTO downstream_freshness AS f (consumer, consumer_group, applied_commit_at, applied_at, newest_scraped_at,
                                       scrape_lag_seconds)
VALUES (%(consumer)s, %(group)s, %(commit)s, now(), %(scraped)s,
        extract(epoch FROM now() - %(scraped)s::timestamptz)::float8)
ON CONFLICT (consumer, consumer_group) DO UPDATE
SET applied_commit_at = GREATEST(f.applied_commit_at, EXCLUDED.applied_commit_at),
    applied_at = EXCLUDED.applied_at,
    newest_scraped_at = COALESCE(EXCLUDED.newest_scraped_at, f.newest_scraped_at),
    scrape_lag_seconds = COALESCE(EXCLUDED.scrape_lag_seconds, f.scrape_lag_seconds)
"""


class Freshness:
    def __init__(self, consumer: str, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.consumer = consumer
        self.applied = Gauge(
            "insights_downstream_applied_commit_timestamp_seconds",
            "Unix time of the newest source commit this downstream consumer applied", ["consumer"], registry=registry,
        ).labels(consumer)
        self.lag = Histogram(
            "insights_downstream_scrape_to_applied_seconds",
            "from a snapshot's scraped_at to the commit of the batch that applied it downstream", ["consumer"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400), registry=registry,
        ).labels(consumer)
        #: the consumer group, told by the registry when it builds the loop
        self.group = ""

    def record(self, conn: psycopg.Connection, commit_times_us: Iterable[int], scraped: Iterable[datetime]) -> None:
        """Inside the batch transaction: store the batch's newest commit (and scrape) time."""
        newest_commit = max(commit_times_us, default=0)
        if newest_commit <= 0:
            return
        scraped = list(scraped)
        newest_scraped = max(scraped, default=None)
        conn.execute(UPSERT, {
            "consumer": self.consumer, "group": self.group,
            "commit": datetime.fromtimestamp(newest_commit / 1e6, UTC), "scraped": newest_scraped,
        })
        self.applied.set(newest_commit / 1e6)
        # observed at the write, a few milliseconds before the batch commits
        now = time.time()
        for at in scraped:
            self.lag.observe(max(now - at.timestamp(), 0.0))
