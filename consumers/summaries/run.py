"""Entry points of the CLI: sweep the windows once (a command), or every N seconds (a service)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from rich.console import Console

from consumers.summaries.store import SweepResult, sweep
from core.settings import Settings
from streams.faults import describe, is_transient
from streams.pg import connect
from streams.retry import Backoff
from streams.service.health import Health

log = logging.getLogger("insights.summaries.sweep")

#: while waiting for the next sweep the loop still beats this often (liveness is "the loop turns")
BEAT_S = 1.0


def sweep_once(settings: Settings, console: Console, chunk: int, tombstone_ttl: timedelta,
               retention_months: dict[str, int] | None = None) -> None:
    with connect(settings.pg, "summaries-sweep") as conn:
        with console.status("recomputing summaries whose 30-day window moved"):
            result = sweep(conn, chunk=chunk, tombstone_ttl=tombstone_ttl, retention_months=retention_months)
    console.print(
        f"sweep: {result.recomputed} summaries recomputed ({result.changed} changed), "
        f"{result.tombstones} tombstones purged, {result.retired} summaries lost rows to retention",
        highlight=False,
    )


class SweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "insights_summaries_sweep_rows",
            "summaries recomputed, changed, retired and tombstones purged by the sweep",
            ["kind"],
            registry=registry,
        )
        self.seconds = Histogram(
            "insights_summaries_sweep_seconds",
            "duration of one sweep",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.failures = Counter(
            "insights_summaries_sweep_failures", "sweeps that failed transiently (retried)", registry=registry
        )
        self.last_success = Gauge(
            "insights_summaries_sweep_last_success_timestamp_seconds",
            "Unix time the last sweep finished",
            registry=registry,
        )

    def record(self, result: SweepResult, seconds: float) -> None:
        for kind in ("recomputed", "changed", "retired", "tombstones"):
            self.rows.labels(kind).inc(getattr(result, kind))
        self.seconds.observe(seconds)
        self.last_success.set_to_current_time()


def sweep_forever(
    settings: Settings,
    every: float,
    chunk: int,
    tombstone_ttl: timedelta,
    retention_months: dict[str, int] | None = None,
    *,
    stop: threading.Event,
    registry: CollectorRegistry,
    health: Health,
) -> int:
    """Sweep every ``every`` seconds until ``stop``; return how many sweeps finished.

    A transient failure (PostgreSQL restarting or away) is reported to ``health``,
    logged, and retried with backoff (never later than the next regular sweep); any
    other error ends the service, since waiting will not fix a missing schema.
    """
    metrics = SweepMetrics(registry)
    backoff = Backoff(initial=1.0, cap=every)
    delays = backoff.delays()
    done = 0
    while not stop.is_set():
        health.beat()
        started = time.monotonic()
        try:
            with connect(settings.pg, "summaries-sweep") as conn:
                result = sweep(conn, chunk=chunk, tombstone_ttl=tombstone_ttl, retention_months=retention_months,
                               on_chunk=lambda _n: health.beat())
        except Exception as exc:
            if not is_transient(exc):
                raise
            reason = describe(exc)[:300]
            health.failing("postgres", reason)
            metrics.failures.inc()
            delay = next(delays)
            log.warning("sweep failed, retrying", extra={"error": reason, "retry_in_s": round(delay, 1)})
        else:
            health.ok("postgres")
            delays = backoff.delays()
            seconds = time.monotonic() - started
            metrics.record(result, seconds)
            done += 1
            log.info(
                "swept: %d summaries recomputed (%d changed), %d tombstones purged, %d lost rows to retention",
                result.recomputed, result.changed, result.tombstones, result.retired,
                extra={"recomputed": result.recomputed, "changed": result.changed, "tombstones": result.tombstones,
                       "retired": result.retired, "seconds": round(seconds, 3)},
            )
            delay = max(every - seconds, 0.0)
        deadline = time.monotonic() + delay
        while not stop.wait(max(min(BEAT_S, deadline - time.monotonic()), 0.0)) and time.monotonic() < deadline:
            health.beat()
    return done
