"""An idempotent Kafka producer that never drops a record quietly.

``enable.idempotence`` + ``acks=all`` make the broker discard the producer's own
retries, so a network hiccup cannot duplicate or reorder records within a partition.
Records are batched and compressed for throughput. Every delivery report is
counted; :meth:`EventProducer.flush` raises :class:`DeliveryError` if any record
was not acknowledged, so a caller cannot believe it published what it did not.
A full local queue (``BufferError``) is answered by serving delivery reports until
there is room again, never by dropping the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core.errors import InsightsError
from core.settings import Settings
from streams.kafka import producer_config

Headers = Sequence[tuple[str, bytes | str]] | None


class DeliveryError(InsightsError):
    """Some records were not acknowledged by the broker."""

    def __init__(self, failed: int, first: str, pending: int = 0) -> None:
        parts = []
        if failed:
            parts.append(f"{failed} record(s) failed delivery (first: {first})")
        if pending:
            parts.append(f"{pending} record(s) still unacknowledged at flush timeout")
        super().__init__("; ".join(parts))
        self.failed = failed
        self.pending = pending


@dataclass
class DeliveryStats:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    bytes: int = 0
    first_error: str | None = None
    #: topic -> partition -> delivered count (who got what; handy for tests and summaries)
    per_partition: dict[str, dict[int, int]] = field(default_factory=dict)


class EventProducer:
    """Publish already-serialized records; ``flush`` tells whether all of them landed."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        # the "events" profile: batched and compressed for throughput; overrides may not
        # turn off idempotence or acks=all, the guarantees this class promises
        self._producer = Producer(producer_config(settings.kafka, "events", **overrides))
        self.stats = DeliveryStats()

    # librdkafka calls this from poll()/flush() on the caller's thread
    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.stats.failed += 1
            if self.stats.first_error is None:
                self.stats.first_error = f"{msg.topic()}: {err.str()}"
            return
        self.stats.delivered += 1
        partitions = self.stats.per_partition.setdefault(msg.topic(), {})
        partitions[msg.partition()] = partitions.get(msg.partition(), 0) + 1

    def produce_event(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | None,
        headers: Headers = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record; blocks (serving delivery reports) while the local queue is full."""
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **kwargs)
                break
            except BufferError:
                # the queue drains as the broker acknowledges; wait for that, drop nothing
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise DeliveryError(1, f"{topic}: {exc.args[0].str()}") from None
        self.stats.produced += 1
        self.stats.bytes += len(value or b"") + (len(key) if key else 0)
        # serve delivery callbacks without waiting, so stats stay current
        self._producer.poll(0)

    def poll(self, timeout: float = 0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        """Wait for every queued record; raise :class:`DeliveryError` if any failed."""
        pending = self._producer.flush(timeout)
        if self.stats.failed or pending:
            raise DeliveryError(self.stats.failed, self.stats.first_error or "-", pending)
        return self.stats

    def __len__(self) -> int:
        """Records queued locally and not yet acknowledged."""
        return len(self._producer)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            # an error is already on its way up: give queued records a short chance, don't mask it
            self._producer.flush(5.0)
