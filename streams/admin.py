"""Topic administration: make the declared topics exist, and say where live ones differ.

``ensure_topics`` is the one place that turns :class:`~streams.topics.TopicSpec`
declarations into broker state. It creates what is missing and, for topics that
already exist, compares partitions, replication factor and the declared configs with
the live ones. Drift is *reported*, never repaired behind the operator's back; with
``fix=True`` the repairable kinds are applied (partitions can only grow, configs are
set incrementally). A replication factor cannot be changed by this tool: it needs a
partition reassignment, which is an operator's decision.

Replication is the cluster's, not each declaration's: the factor and
``min.insync.replicas`` come from settings, defaulting by the size of the cluster
(:meth:`~core.settings.KafkaSettings.replication`), and are applied here where the
declarations meet the brokers (:func:`~streams.topics.replicated`). ``describe_topics``
also reports the partitions' health as drift: under-replicated partitions (a replica
out of sync, usually a broker down or catching up) and offline ones (no leader: nothing
can be read or written). Kafka repairs both itself once the brokers are back, so they
are never "fixable" here; they say where to look.

The comparisons are pure functions (:func:`drift_of`, :func:`health_of`) so they are
tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from core.errors import InsightsError
from core.settings import Settings
from streams.kafka import admin_client as kafka_admin_client
from streams.topics import TopicSpec, replicated

DEFAULT_TIMEOUT_S = 30.0


class TopicAdminError(InsightsError):
    """The broker refused or failed a topic operation (create, describe, alter)."""


#: errors a topic shows while its partitions are still getting leaders after creation,
#: or after a leader change (a broker died or restarted)
_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    # Kafka calls these three retriable, librdkafka's flag does not (each seen in
    # tests/cluster while describing topics across a leader change): a leader just elected
    # does not know the high watermark until its followers fetch once, and metadata a
    # moment old names a leader epoch the broker has moved past (or not reached yet)
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
}

DriftKind = Literal["partitions", "replication_factor", "config", "under_replicated", "offline"]


@dataclass(frozen=True)
class Drift:
    """One way a live topic differs from its declaration."""

    kind: DriftKind
    name: str  # "partitions", "replication.factor" or the config key
    declared: str
    live: str | None
    #: whether ``fix=True`` can repair it (partitions only grow; RF needs a reassignment)
    fixable: bool

    def __str__(self) -> str:
        note = "" if self.fixable else " (not fixable here)"
        return f"{self.name}: declared {self.declared}, live {self.live}{note}"


TopicStatus = Literal["created", "ok", "drift", "fixed"]


@dataclass(frozen=True)
class TopicOutcome:
    spec: TopicSpec
    status: TopicStatus
    drift: tuple[Drift, ...] = ()
    #: the drift that ``fix=True`` repaired (empty otherwise)
    fixed: tuple[Drift, ...] = ()


@dataclass(frozen=True)
class TopicReport:
    topics: tuple[TopicOutcome, ...]

    def _with(self, status: TopicStatus) -> list[str]:
        return [t.spec.name for t in self.topics if t.status == status]

    @property
    def created(self) -> list[str]:
        return self._with("created")

    @property
    def drifted(self) -> list[str]:
        return self._with("drift")

    @property
    def fixed(self) -> list[str]:
        return self._with("fixed")

    @property
    def ok(self) -> bool:
        """True when every topic now matches its declaration."""
        return not self.drifted


@dataclass(frozen=True)
class PartitionState:
    """Who leads one partition and which replicas are in sync (broker ids; leader -1: none)."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class LiveTopic:
    """What the broker says about one topic."""

    name: str
    partitions: int
    replication_factor: int
    #: every topic config the broker reports (declared keys are what we compare)
    config: dict[str, str]
    #: partition -> high watermark (next offset to be written); filled by describe only,
    #: for partitions that have a leader
    end_offsets: dict[int, int] = field(default_factory=dict)
    #: partition -> leader and replicas, from the cluster's metadata
    states: dict[int, PartitionState] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicDescription:
    spec: TopicSpec
    live: LiveTopic | None  # None: the topic does not exist
    drift: tuple[Drift, ...]

    @property
    def exists(self) -> bool:
        return self.live is not None


# --- pure ------------------------------------------------------------------------------


def drift_of(spec: TopicSpec, live: LiveTopic) -> tuple[Drift, ...]:
    """How ``live`` differs from ``spec``; only the declared configs are compared."""
    found: list[Drift] = []
    if live.partitions != spec.partitions:
        found.append(
            Drift(
                "partitions",
                "partitions",
                str(spec.partitions),
                str(live.partitions),
                # Kafka cannot remove partitions, and adding them moves keys: only on request
                fixable=live.partitions < spec.partitions,
            )
        )
    if live.replication_factor != spec.replication_factor:
        found.append(
            Drift(
                "replication_factor",
                "replication.factor",
                str(spec.replication_factor),
                str(live.replication_factor),
                fixable=False,
            )
        )
    for key, declared in sorted(spec.config().items()):
        actual = live.config.get(key)
        if actual != declared:
            found.append(Drift("config", key, declared, actual, fixable=True))
    return tuple(found)


def _partition_list(states: dict[int, PartitionState]) -> str:
    shown = [
        f"p{p} isr {','.join(map(str, st.isr)) or '-'} of {','.join(map(str, st.replicas))}"
        for p, st in sorted(states.items())
    ]
    return "; ".join(shown[:6]) + (f"; … {len(shown) - 6} more" if len(shown) > 6 else "")


def health_of(live: LiveTopic) -> tuple[Drift, ...]:
    """Offline and under-replicated partitions of ``live``, as drift nobody can "fix" here.

    Offline: no leader, so neither reads nor writes (every in-sync replica is down, and
    unclean election is off so no out-of-sync replica takes over). Under-replicated:
    fewer replicas in sync than assigned; below ``min.insync.replicas`` in sync, writes
    with ``acks=all`` are refused (NOT_ENOUGH_REPLICAS) until a replica catches up.
    """
    found: list[Drift] = []
    offline = {p: st for p, st in live.states.items() if st.offline}
    if offline:
        found.append(
            Drift("offline", "offline partitions", "0", f"{len(offline)} ({_partition_list(offline)})", fixable=False)
        )
    lagging = {p: st for p, st in live.states.items() if st.under_replicated and not st.offline}
    if lagging:
        min_insync = int(live.config.get("min.insync.replicas", "1") or 1)
        refused = sum(1 for st in lagging.values() if len(st.isr) < min_insync)
        note = f", {refused} below min.insync.replicas={min_insync} (writes refused)" if refused else ""
        found.append(
            Drift(
                "under_replicated",
                "under-replicated partitions",
                "0",
                f"{len(lagging)}{note} ({_partition_list(lagging)})",
                fixable=False,
            )
        )
    return tuple(found)


def cluster_size(metadata) -> int:  # type: ignore[no-untyped-def]
    """Brokers of the cluster: those registered now, and those holding replicas of any topic.

    A broker that is down still belongs to the cluster while it holds replicas: the
    replication resolved from the size must not drop to 1 (and call every topic's factor
    of 3 drift) because one of three brokers is being restarted.
    """
    ids = set(metadata.brokers)
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            ids.update(partition.replicas)
    return len(ids)


def cluster_replication(settings: Settings, admin: AdminClient, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for this cluster, from settings and its size."""
    return settings.kafka.replication(cluster_size(_metadata(admin, timeout)))


def with_cluster_replication(
    settings: Settings, admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = DEFAULT_TIMEOUT_S
) -> list[TopicSpec]:
    return replicated(list(specs), *cluster_replication(settings, admin, timeout))


# --- broker I/O ------------------------------------------------------------------------


def admin_client(settings: Settings) -> AdminClient:
    return kafka_admin_client(settings.kafka)


def _result(future, what: str, timeout: float):  # type: ignore[no-untyped-def]
    try:
        return future.result(timeout=timeout)
    except KafkaException as exc:
        raise TopicAdminError(f"{what}: {exc.args[0]}") from None
    except TimeoutError:
        raise TopicAdminError(f"{what}: no answer from the broker within {timeout:.0f}s") from None


def _metadata(admin: AdminClient, timeout: float):  # type: ignore[no-untyped-def]
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot list topics: {exc.args[0]}") from None


def live_topics(
    admin: AdminClient, names: Iterable[str], timeout: float = DEFAULT_TIMEOUT_S
) -> dict[str, LiveTopic]:
    """Partitions, replication factor and configs of the named topics that exist."""
    metadata = _metadata(admin, timeout)
    present = [n for n in names if n in metadata.topics and metadata.topics[n].error is None]
    if not present:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    found: dict[str, LiveTopic] = {}
    for resource, future in futures.items():
        entries = _result(future, f"describe configs of {resource.name}", timeout)
        meta = metadata.topics[resource.name]
        replicas = [len(p.replicas) for p in meta.partitions.values()]
        found[resource.name] = LiveTopic(
            name=resource.name,
            partitions=len(meta.partitions),
            # the smallest replica set is the honest figure when partitions disagree
            replication_factor=min(replicas) if replicas else 0,
            config={k: e.value for k, e in entries.items() if e.value is not None},
            states={
                p.id: PartitionState(p.leader, tuple(p.replicas), tuple(p.isrs)) for p in meta.partitions.values()
            },
        )
    return found


def _create(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> list[str]:
    """Create the topics; returns those that already existed (another process won the race)."""
    if not specs:
        return []
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication_factor,
            config=s.config(),
        )
        for s in specs
    ]
    raced: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)
                continue
            hint = ""
            if error.code() == KafkaError.INVALID_REPLICATION_FACTOR:
                hint = " (start the missing brokers, or set INSIGHTS_KAFKA_REPLICATION_FACTOR)"
            raise TopicAdminError(f"cannot create topic {name}: {error.str()}{hint}") from None
    return raced


def _fix(admin: AdminClient, spec: TopicSpec, drift: Sequence[Drift], timeout: float) -> tuple[Drift, ...]:
    fixed: list[Drift] = []
    grow = [d for d in drift if d.kind == "partitions" and d.fixable]
    if grow:
        futures = admin.create_partitions([NewPartitions(spec.name, spec.partitions)], request_timeout=timeout)
        _result(futures[spec.name], f"cannot add partitions to {spec.name}", timeout)
        fixed.extend(grow)
    configs = [d for d in drift if d.kind == "config"]
    if configs:
        resource = ConfigResource(
            ResourceType.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(d.name, d.declared, incremental_operation=AlterConfigOpType.SET) for d in configs
            ],
        )
        for future in admin.incremental_alter_configs([resource], request_timeout=timeout).values():
            _result(future, f"cannot alter configs of {spec.name}", timeout)
        fixed.extend(configs)
    return tuple(fixed)


def ensure_topics(
    settings: Settings,
    specs: Sequence[TopicSpec],
    *,
    fix: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> TopicReport:
    """Create missing topics; report (or, with ``fix``, repair) drift of existing ones.

    Idempotent and safe to run from several processes at once: a topic created by
    someone else between our look and our create counts as existing. Every spec gets
    the cluster's replication (:func:`with_cluster_replication`).
    """
    admin = admin_client(settings)
    specs = with_cluster_replication(settings, admin, specs, timeout)
    live = live_topics(admin, [s.name for s in specs], timeout)
    missing = [s for s in specs if s.name not in live]
    raced = set(_create(admin, missing, timeout))
    if raced:
        live.update(live_topics(admin, sorted(raced), timeout))

    outcomes: list[TopicOutcome] = []
    for spec in specs:
        if spec.name not in live:
            outcomes.append(TopicOutcome(spec, "created"))
            continue
        drift = drift_of(spec, live[spec.name])
        if not drift:
            outcomes.append(TopicOutcome(spec, "ok"))
            continue
        fixed = _fix(admin, spec, drift, timeout) if fix else ()
        remaining = tuple(d for d in drift if d not in fixed)
        status: TopicStatus = "fixed" if fixed and not remaining else "drift"
        outcomes.append(TopicOutcome(spec, status, drift=remaining if fix else drift, fixed=fixed))
    return TopicReport(tuple(outcomes))


def end_offsets(
    admin: AdminClient, topic: str, partitions: int | Iterable[int], timeout: float = DEFAULT_TIMEOUT_S
) -> dict[int, int]:
    """High watermark of every partition of ``topic`` (``partitions``: a count, or which ones).

    Right after a topic is created its partitions may have no leader yet: retriable
    errors are retried until ``timeout`` instead of being reported.
    """
    deadline = time.monotonic() + timeout
    delay = 0.1
    wanted = list(range(partitions)) if isinstance(partitions, int) else list(partitions)
    if not wanted:
        return {}
    while True:
        request = {TopicPartition(topic, p): OffsetSpec.latest() for p in wanted}
        try:
            return {
                tp.partition: future.result(timeout=timeout).offset
                for tp, future in admin.list_offsets(request, request_timeout=timeout).items()
            }
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            settling = error.retriable() or error.code() in _SETTLING
            if not settling or time.monotonic() + delay > deadline:
                raise TopicAdminError(f"cannot read end offsets of {topic}: {error.str()}") from None
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def describe_topics(
    settings: Settings, specs: Sequence[TopicSpec], timeout: float = DEFAULT_TIMEOUT_S
) -> list[TopicDescription]:
    """Declared vs live for each spec, with end offsets and partition health; changes nothing."""
    admin = admin_client(settings)
    specs = with_cluster_replication(settings, admin, specs, timeout)
    live = live_topics(admin, [s.name for s in specs], timeout)
    described: list[TopicDescription] = []
    for spec in specs:
        found = live.get(spec.name)
        if found is None:
            described.append(TopicDescription(spec, None, ()))
            continue
        found = LiveTopic(
            name=found.name,
            partitions=found.partitions,
            replication_factor=found.replication_factor,
            config=found.config,
            # an offline partition has no leader to ask: it would only time out
            end_offsets=end_offsets(admin, spec.name, [p for p, st in found.states.items() if not st.offline], timeout),
            states=found.states,
        )
        described.append(TopicDescription(spec, found, drift_of(spec, found) + health_of(found)))
    return described
