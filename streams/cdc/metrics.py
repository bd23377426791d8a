"""Prometheus metrics of the CDC reader, in the registry its process hands it.

The reader never registers in prometheus_client's global registry: the service runner
owns one registry per process (with the process metrics) and serves it on ``/metrics``,
and tests give each reader its own.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

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

        self.transaction_records = Counter(
            "insights_cdc_transaction_records_total", "BEGIN/END records delivered to the transaction topic",
            ["slot"], registry=registry,
        ).labels(slot)
        # the reader's own view, which `insights cdc status` reads from /metrics
        self.connected = Gauge(
            "insights_cdc_connected", "1 while the reader streams from the slot, 0 while it waits or reconnects",
            ["slot"], registry=registry,
        ).labels(slot)
        self.received_lsn = Gauge(
            "insights_cdc_received_lsn", "Newest WAL position received from the server", ["slot"], registry=registry
        ).labels(slot)
        self.last_event_time = Gauge(
            "insights_cdc_last_event_commit_time_seconds",
            "Commit time (Unix seconds) of the newest change Kafka acknowledged", ["slot"], registry=registry,
        ).labels(slot)
        self.last_event_at = Gauge(
            "insights_cdc_last_event_delivered_time_seconds",
            "When (Unix seconds) Kafka last acknowledged a change event", ["slot"], registry=registry,
        ).labels(slot)
        self.reconnects = Counter(
            "insights_cdc_stream_losses_total", "Times the replication stream was lost and reconnected",
            ["slot"], registry=registry,
        ).labels(slot)
        self.paused = Gauge(
            "insights_cdc_paused", "1 while reading is paused because Kafka's queue is full", ["slot"],
            registry=registry,
        ).labels(slot)
        self.streamed_transactions = Counter(
            "insights_cdc_streamed_transactions_total",
            "Transactions received while in progress (protocol v2 streaming), spooled and published at their commit",
            ["slot"], registry=registry,
        ).labels(slot)
        self.registry_outages = Counter(
            "insights_cdc_registry_outages_total",
            "Typed events: times the reader waited for the schema registry to answer again", ["slot"],
            registry=registry,
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


@dataclass(frozen=True)
class ReaderView:
    """What a running reader says about itself on ``/metrics`` (``insights cdc status``)."""

    url: str
    connected: bool
    paused: bool
    received_lsn: int | None
    confirmed_lsn: int | None
    lag_bytes: int | None
    last_event_commit_time: float | None  # Unix seconds
    last_event_delivered: float | None  # Unix seconds
    stream_losses: int
    changes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_view(url: str, slot: str, timeout: float = 3.0) -> ReaderView:
    """Scrape ``url`` (a reader's ``/metrics``) for ``slot``'s series; raises OSError when nobody answers."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - an operator's URL
        text = response.read().decode()
    values: dict[str, float] = {}
    changes = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("slot") != slot:
                continue
            if sample.name == "insights_cdc_changes_total":
                changes += sample.value
            else:
                values[sample.name] = sample.value
    if not values:
        raise LookupError(f"{url} serves no CDC metrics of slot {slot!r}")

    def number(name: str) -> float | None:
        return values.get(name) or None

    def lsn(name: str) -> int | None:
        value = number(name)
        return None if value is None else int(value)

    return ReaderView(
        url=url,
        connected=values.get("insights_cdc_connected", 0.0) == 1.0,
        paused=values.get("insights_cdc_paused", 0.0) == 1.0,
        received_lsn=lsn("insights_cdc_received_lsn"),
        confirmed_lsn=lsn("insights_cdc_confirmed_lsn"),
        lag_bytes=lsn("insights_cdc_slot_lag_bytes"),
        last_event_commit_time=number("insights_cdc_last_event_commit_time_seconds"),
        last_event_delivered=number("insights_cdc_last_event_delivered_time_seconds"),
        stream_losses=int(values.get("insights_cdc_stream_losses_total", 0.0)),
        changes=int(changes),
    )
