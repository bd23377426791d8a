"""Prometheus metrics of the CDC reader, in the registry its process hands it.

The reader never registers in prometheus_client's global registry: the service runner
owns one registry per process (with the process metrics) and serves it on ``/metrics``,
and tests give each reader its own.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

COMMIT_TO_PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class CdcMetrics:
    """The reader's metrics, labelled with its slot."""

    def __init__(self, registry: CollectorRegistry, slot: str) -> None:
        self.slot = slot
        self._changes = Counter(
            "insights_cdc_changes_total", "Row change events delivered to Kafka", ["slot", "table", "op"],
            registry=registry,
        )
        self.transactions = Counter(
            "insights_cdc_transactions_total", "Transactions decoded (including heartbeats)", ["slot"],
            registry=registry,
        ).labels(slot)
        self.commit_to_publish = Histogram(
            "insights_cdc_commit_to_publish_seconds",
            "From the PostgreSQL commit to Kafka's acknowledgement of the change event",
            ["slot"],
            buckets=COMMIT_TO_PUBLISH_BUCKETS,
            registry=registry,
        ).labels(slot)
        self.slot_lag_bytes = Gauge(
            "insights_cdc_slot_lag_bytes", "pg_current_wal_lsn() - confirmed_flush_lsn of the slot", ["slot"],
            registry=registry,
        ).labels(slot)
        self.slot_retained_bytes = Gauge(
            "insights_cdc_slot_retained_bytes", "WAL the slot pins (from restart_lsn)", ["slot"], registry=registry
        ).labels(slot)
        self.confirmed_lsn = Gauge(
            "insights_cdc_confirmed_lsn", "Last WAL position confirmed to the slot", ["slot"], registry=registry
        ).labels(slot)

    def changes(self, table: str, op: str) -> Any:
        """The counter of one table's events of one op (callers keep it: ``labels`` takes a lock)."""
        return self._changes.labels(self.slot, table, op)


def observe_many(histogram: Any, seconds: float, count: int) -> None:
    """``histogram.observe(seconds)`` ``count`` times, in one step where prometheus_client allows.

    The reader settles delivery reports in batches that share a commit time; one update per
    batch instead of one per event keeps the histogram off the profile.
    """
    buckets = getattr(histogram, "_buckets", None)
    upper = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if count == 1 or buckets is None or upper is None or total is None:
        for _ in range(count):
            histogram.observe(seconds)
        return
    total.inc(seconds * count)
    for i, bound in enumerate(upper):
        if seconds <= bound:
            buckets[i].inc(count)
            break
