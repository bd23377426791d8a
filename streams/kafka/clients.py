"""Every Kafka client's configuration, built in one place from :class:`KafkaSettings`.

Profiles, not ad-hoc dicts: ``events`` (the producers of scrape and alert events and
replays), ``cdc`` (the change-stream reader: larger batches, short linger), ``dlq``
(dead letters, delivered before a batch commits). All producers are idempotent with
``acks=all``: a retried send never duplicates or reorders a record, and a record is
acknowledged only once the in-sync replicas have it. Settings overrides
(``INSIGHTS_KAFKA_OVERRIDES``) apply last, except the properties a guarantee of this
project depends on (:data:`PROTECTED_PRODUCER`, :data:`PROTECTED_CONSUMER`).

Every client gets ``logger``: librdkafka then hands its log lines to Python logging
(served by the client's ``poll``/``consume``/``flush``) instead of printing
``%3|…|FAIL|…`` to stderr itself, so they come out in the process's log format, JSON
included (``streams.service.logs``). Routing by hand: :func:`routed`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from confluent_kafka.admin import AdminClient

from core.settings import KafkaSettings

Profile = Literal["events", "cdc", "dlq"]

#: where librdkafka's own log lines go (their text starts with the facility, e.g. ``FAIL``)
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")

#: what every producer promises; overrides cannot turn these off
PROTECTED_PRODUCER = {"enable.idempotence": True, "acks": "all"}
#: librdkafka properties the consumer loop's correctness depends on
PROTECTED_CONSUMER = ("enable.auto.commit", "enable.auto.offset.store", "group.id", "partition.assignment.strategy")

_PROFILES: dict[str, dict[str, Any]] = {
    "events": {
        "compression.type": "lz4",
        # wait a little to fill batches: many small requests cost more than 20 ms of latency
        "linger.ms": 20,
        "batch.size": 512 * 1024,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        # how long librdkafka keeps retrying one record before reporting it failed
        "delivery.timeout.ms": 120_000,
    },
    "cdc": {
        "linger.ms": 2,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        # what bounds the reader's memory while the broker is away: a full queue pauses
        # reading (the slot keeps the changes), it does not fail
        "queue.buffering.max.kbytes": 256 * 1024,
        "batch.num.messages": 10_000,
        # never give up on a change while the broker is away (0 = no timeout): a change
        # reported failed could only end the reader, which resends it anyway
        "delivery.timeout.ms": 0,
    },
    "dlq": {"linger.ms": 5},
}


def routed(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's log lines sent to Python logging (unless a caller chose a logger)."""
    conf.setdefault("logger", LIBRDKAFKA_LOGGER)
    return conf


def producer_config(kafka: KafkaSettings, profile: Profile, **overrides: Any) -> dict[str, Any]:
    """librdkafka properties of a producer of ``profile``; ``overrides`` (e.g. callbacks) on top."""
    conf = {**_PROFILES[profile], **kafka.client_config(**overrides)}
    conf.update(PROTECTED_PRODUCER)
    return routed(conf)


def consumer_config(kafka: KafkaSettings, group: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that stores nothing by itself: the caller decides where offsets live.

    Settings overrides may tune anything but :data:`PROTECTED_CONSUMER`; the caller's
    ``overrides`` (callbacks, ``auto.offset.reset`` of a command) apply last.
    """
    conf = {"auto.offset.reset": "earliest", **kafka.client_config()}
    conf.update(
        {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    conf.update(overrides)
    return routed(conf)


def admin_client(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    return AdminClient(routed(kafka.client_config(**overrides)))
