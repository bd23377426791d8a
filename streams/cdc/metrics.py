"""Prometheus metrics of the CDC reader (served on settings.service.metrics_port when it is not 0)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHANGES = Counter("insights_cdc_changes_total", "Row change events delivered to Kafka", ["slot", "table", "op"])
TRANSACTIONS = Counter("insights_cdc_transactions_total", "Transactions decoded (including heartbeats)", ["slot"])
COMMIT_TO_PUBLISH = Histogram(
    "insights_cdc_commit_to_publish_seconds",
    "From the PostgreSQL commit to Kafka's acknowledgement of the change event",
    ["slot"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SLOT_LAG_BYTES = Gauge(
    "insights_cdc_slot_lag_bytes", "pg_current_wal_lsn() - confirmed_flush_lsn of the slot", ["slot"]
)
SLOT_RETAINED_BYTES = Gauge("insights_cdc_slot_retained_bytes", "WAL the slot pins (from restart_lsn)", ["slot"])
CONFIRMED_LSN = Gauge("insights_cdc_confirmed_lsn", "Last WAL position confirmed to the slot", ["slot"])
