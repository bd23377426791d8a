"""Reachability probes: can this process reach Kafka and PostgreSQL right now?

A loop only notices a dependency when it uses it: a consumer with no records to write
never touches PostgreSQL, a CDC reader waiting as hot standby never touches Kafka. An
orchestrator still needs to know that the process could not do its work if work came.
So the service runner asks on its own, every few seconds, on a thread of its own, with
a fresh connection (a kept one can look alive long after the network is gone), and
reports to :class:`Health`. Loops may report the same dependency names from their own
work too: a failure starts the unreachability clock, a successful probe (a fresh
connection did reach the server) stops it.

Only a change of state is logged (unreachable, reachable again), by :class:`Health`: a
probe every few seconds must not flood the log. A refusal no retry can fix (a wrong
password, a missing database: ``streams.faults.is_permanent``) is not an outage: the
probe records it as permanent, ``/healthz`` fails at once and the loop stops with it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from core.settings import KafkaSettings, PostgresSettings
from streams.faults import describe, is_permanent
from streams.service.health import Health


class Probe(Protocol):
    dependency: str

    def check(self) -> None:
        """Return when the dependency answers; raise when it does not."""

    def close(self) -> None: ...


class PostgresProbe:
    dependency = "postgres"

    def __init__(self, pg: PostgresSettings, purpose: str, timeout_s: float = 5.0) -> None:
        self.pg = pg
        self.purpose = purpose
        # libpq counts connect_timeout in whole seconds and treats anything below 2 as 2
        self.timeout = max(2, int(timeout_s))

    def check(self) -> None:
        from streams.pg import connect

        with connect(self.pg, self.purpose, connect_timeout=self.timeout) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        return


class KafkaProbe:
    dependency = "kafka"

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 5.0) -> None:
        self.kafka = kafka
        self.timeout = timeout_s
        self._admin: Any = None

    def check(self) -> None:
        from streams.kafka import admin_client

        if self._admin is None:
            self._admin = admin_client(self.kafka)
        try:
            # the cheapest request that needs a broker to answer (no topic list to send back)
            self._admin.describe_cluster(request_timeout=self.timeout).result(timeout=self.timeout + 1)
        finally:
            self._admin.poll(0)  # serve librdkafka's log lines (they queue until polled)

    def close(self) -> None:
        self._admin = None


class Prober:
    """Runs the probes every ``interval`` seconds until stopped."""

    def __init__(self, probes: Sequence[Probe], health: Health, interval: float) -> None:
        self.probes = list(probes)
        self.health = health
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probes", daemon=True)

    def start(self) -> Prober:
        if self.probes:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 10)
        for probe in self.probes:
            probe.close()

    def probe_once(self) -> None:
        for probe in self.probes:
            name = probe.dependency
            try:
                probe.check()
            except Exception as exc:
                reason = describe(exc)[:300]
                if is_permanent(exc):
                    self.health.found_permanent(exc, f"{name}: {reason}")
                else:
                    self.health.failing(name, reason)
                continue
            self.health.ok(name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._stop.wait(self.interval)
