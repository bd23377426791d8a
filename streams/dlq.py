"""Dead-letter topics: where records go that can never be stored, with the reason attached.

A record lands here only for a fact about the record itself (undecodable bytes, an
unknown schema, a model validation failure, a row that violates a constraint on its
own). The original key and value bytes are kept untouched, and headers say what went
wrong and where the record came from, so it can be inspected and replayed.

Ordering matters for "never silently dropped": the consumer flushes its dead letters
*before* it commits the batch's offsets to PostgreSQL. A crash in between re-delivers
the batch, which may dead-letter a record twice but never loses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from core.settings import KafkaSettings
from streams.faults import ErrorClass
from streams.kafka import producer_config
from streams.topics import dlq_name

#: reasons are for humans; keep headers small
MAX_REASON_BYTES = 2000

H_ERROR_CLASS = "insights.error.class"
H_REASON = "insights.error.reason"
H_TOPIC = "insights.original.topic"
H_PARTITION = "insights.original.partition"
H_OFFSET = "insights.original.offset"
H_TIMESTAMP = "insights.original.timestamp"
H_GROUP = "insights.consumer.group"


@dataclass(frozen=True)
class DeadLetter:
    """One record to dead-letter: its bytes, its origin, and why."""

    error_class: ErrorClass
    reason: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def dlq_headers(letter: DeadLetter, group: str) -> list[tuple[str, bytes]]:
    """The headers a dead letter carries (pure: easy to test and to read back)."""
    reason = letter.reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    return [
        (H_ERROR_CLASS, letter.error_class.value.encode()),
        (H_REASON, reason),
        (H_TOPIC, letter.topic.encode()),
        (H_PARTITION, str(letter.partition).encode()),
        (H_OFFSET, str(letter.offset).encode()),
        (H_TIMESTAMP, str(letter.timestamp_ms if letter.timestamp_ms is not None else "").encode()),
        (H_GROUP, group.encode()),
    ]


def headers_dict(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers of a consumed dead letter as text (for tests and `kcat`-like inspection)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or [])}


class DeadLetterQueue:
    """A producer to ``<topic>.dlq`` that confirms delivery before the consumer commits."""

    def __init__(self, kafka: KafkaSettings, group: str) -> None:
        self.group = group
        self._failures: list[KafkaError] = []
        # the "dlq" profile is idempotent: a retried produce does not duplicate the dead letter
        self._producer = Producer(producer_config(kafka, "dlq", **{"client.id": f"{group}-dlq"}))

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failures.append(err)

    def send(self, letter: DeadLetter) -> None:
        while True:
            try:
                self._producer.produce(
                    dlq_name(letter.topic),
                    key=letter.key,
                    value=letter.value,
                    headers=dlq_headers(letter, self.group),
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                # local queue full: let deliveries drain, then try again
                self._producer.poll(0.5)

    def deliver(self, letters: Sequence[DeadLetter]) -> None:
        """Send ``letters`` and wait until every one is acknowledged (raises, transient, if not)."""
        for letter in letters:
            self.send(letter)
        self.flush()

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raise (transient) if not."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if failures:
            raise KafkaException(failures[0])
        if remaining:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} dead letter(s) not delivered"))
