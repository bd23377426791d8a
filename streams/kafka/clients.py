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

from core.settings import ConsumerSettings, KafkaSettings

Profile = Literal["events", "cdc", "dlq"]

#: where librdkafka's own log lines go (their text starts with the facility, e.g. ``FAIL``)
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")

#: what every producer promises; overrides cannot turn these off
PROTECTED_PRODUCER = {"enable.idempotence": True, "acks": "all"}
#: librdkafka properties the consumer loop's correctness depends on
PROTECTED_CONSUMER = ("enable.auto.commit", "enable.auto.offset.store", "group.id", "partition.assignment.strategy")

#: How every client rides through a leader change: a broker dies or restarts, its
#: partitions get new leaders (after the controller fences it, broker.session.timeout.ms,
#: 9 s by default and 15 s on the local stack), and clients must find them. librdkafka
#: refreshes metadata by itself on NOT_LEADER/LEADER_NOT_AVAILABLE and retries; what is
#: set here bounds how long that may take and how soon a restarted broker is used again.
#: Tested by tests/cluster (SIGKILL of a leader, rolling restarts, a broker down past
#: the session timeout).
LEADER_CHANGES: dict[str, Any] = {
    # default 10 s: after a rolling restart a client could wait that long before it
    # reconnects to the broker that now leads its partitions again
    "reconnect.backoff.max.ms": 2000,
    # a broker whose host vanished (no RST, unlike a killed process) is given up on after
    # 10 s instead of 30, so the request moves to the new leader sooner
    "socket.connection.setup.timeout.ms": 10_000,
    # how soon a partition without a leader is looked up again (librdkafka's default, said
    # out loud: a leader election on a healthy cluster takes well under a second)
    "topic.metadata.refresh.fast.interval.ms": 100,
}

#: Producers: ``acks=all`` and idempotence (PROTECTED_PRODUCER) make retries safe, so a
#: record is retried across the leader change rather than failed: in order, never twice.
PRODUCER_LEADER_CHANGES: dict[str, Any] = {
    **LEADER_CHANGES,
    # the whole budget for one record, retries included: several leader elections (a
    # rolling restart is three in a row) fit in it; past it the record is reported failed
    "delivery.timeout.ms": 120_000,
    # one produce request's wait for the leader and its in-sync replicas
    "request.timeout.ms": 30_000,
    # back off 100 ms, doubling to 1 s, between retries while the new leader is elected
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 1000,
}

#: Consumers (classic group protocol, cooperative-sticky). Offsets live in PostgreSQL,
#: so a leader change only pauses fetching; a lost group coordinator makes the members
#: find the new one, and they keep their partitions if they reach it within the session.
CONSUMER_LEADER_CHANGES: dict[str, Any] = {
    **LEADER_CHANGES,
    # a member is declared dead after 45 s without a heartbeat: longer than a coordinator
    # failover (fencing + election, ~15-20 s), so losing the coordinator's broker does not
    # also cost every member its partitions; a crashed process's partitions wait that long
    "session.timeout.ms": 45_000,
    "heartbeat.interval.ms": 3000,
    # a fetch from a partition whose leader just moved is retried after 500 ms
    "fetch.error.backoff.ms": 500,
}

_PROFILES: dict[str, dict[str, Any]] = {
    "events": {
        "compression.type": "lz4",
        # wait a little to fill batches: many small requests cost more than 20 ms of latency
        "linger.ms": 20,
        "batch.size": 512 * 1024,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        **PRODUCER_LEADER_CHANGES,
    },
    "cdc": {
        # the reader confirms a change to PostgreSQL only once Kafka acknowledged it; a
        # record failed after delivery.timeout.ms stops the reader (it resumes from the slot)
        **PRODUCER_LEADER_CHANGES,
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
    "dlq": {**PRODUCER_LEADER_CHANGES, "linger.ms": 5},
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


def batch_fetch(batching: ConsumerSettings) -> dict[str, Any]:
    """Fetches sized for the batch consumers: the broker fills them instead of answering at once.

    A fetch answered with whatever one record brought (librdkafka's ``fetch.min.bytes`` 1)
    costs the broker a request per few records for every group reading the topic; the
    consumer loop gathers a batch over ``batch_wait_ms`` anyway. Why these defaults:
    :class:`core.settings.ConsumerSettings`.
    """
    return {"fetch.wait.max.ms": batching.fetch_wait_ms, "fetch.min.bytes": batching.fetch_min_bytes}


def consumer_config(kafka: KafkaSettings, group: str, *, batching: ConsumerSettings | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """A consumer that stores nothing by itself: the caller decides where offsets live.

    ``batching`` adds :func:`batch_fetch` (the batch consumers; a command reading a few
    records keeps librdkafka's prompt fetches). Settings overrides may tune anything but
    :data:`PROTECTED_CONSUMER`; the caller's ``overrides`` (callbacks, ``auto.offset.reset``
    of a command) apply last.
    """
    fetch = batch_fetch(batching) if batching is not None else {}
    conf = {"auto.offset.reset": "earliest", **CONSUMER_LEADER_CHANGES, **fetch, **kafka.client_config()}
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
