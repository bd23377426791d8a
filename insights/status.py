"""``insights status``: one look at the whole pipeline, for the operator at 3 a.m. and for a pager.

Every check yields :class:`Check` rows: an area, a name, a state, a reason in words and
the figures behind it as numbers (``metrics``). The CLI renders the same rows as a table
and as JSON, so the two cannot disagree.

States and the exit code (Nagios plugin convention, so any monitoring system can run it):

========  =========  ======================================================
state     exit code  meaning
========  =========  ======================================================
ok        0          within the thresholds (``StatusSettings``)
warn      1          beyond a ``*_warn`` threshold: look at it today
fail      2          beyond a ``*_fail`` threshold, or broken (missing, lost)
unknown   3          a service did not answer, so its checks could not run
========  =========  ======================================================

The overall state is the worst row, ordered ok < warn < unknown < fail: a definite
failure is the most urgent finding, and a service that does not answer may hide one,
so it outranks a warning.

Nothing here raises for an unreachable service: that is itself the finding. Each
service gets ``INSIGHTS_STATUS_TIMEOUT_S`` once; when it does not answer, the checks
that need it are skipped instead of each waiting for it in turn. librdkafka's own log
lines (``%3|…|FAIL|…``) go to a logger of this module, never to stderr: the reason of
the Kafka row says what they said.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from consumers.rules.store import invalid_rules
from core.errors import InsightsError, ServiceUnavailableError
from core.settings import Settings, StatusSettings
from insights.db.errors import MigrationError
from insights.db.migrations import discover, plan
from streams.admin import drift_of, live_topics
from streams.cdc.slot import slot_status
from streams.kafka.clients import admin_client, consumer_config
from streams.pg.connect import connect
from streams.replay import dlq_depths
from streams.topics import declared_topics

try:  # moved between confluent-kafka releases
    from confluent_kafka import ConsumerGroupTopicPartitions
except ImportError:  # pragma: no cover
    from confluent_kafka.admin import ConsumerGroupTopicPartitions  # type: ignore[no-redef]

Metric = int | float | str | bool | None

STATES = ("ok", "warn", "fail", "unknown")
EXIT_CODES = {"ok": 0, "warn": 1, "fail": 2, "unknown": 3}
#: how the overall state is chosen (see the module doc)
SEVERITY = {"ok": 0, "warn": 1, "unknown": 2, "fail": 3}


class StatusError(ServiceUnavailableError):
    """A service the lag view needs did not answer (exit code 3, as status's UNKNOWN)."""

    exit_code = 3


@dataclass(frozen=True)
class Check:
    area: str
    #: what was checked; no spaces, so a piped table splits on whitespace
    name: str
    state: str
    reason: str
    metrics: dict[str, Metric] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"area": self.area, "name": self.name, "state": self.state, "reason": self.reason,
                "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    thresholds: dict[str, Metric]

    @property
    def state(self) -> str:
        return max((c.state for c in self.checks), key=SEVERITY.__getitem__, default="ok")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "exit_code": self.exit_code,
            "checks": [c.as_dict() for c in self.checks],
            "thresholds": dict(self.thresholds),
        }


# --- grading (pure) ----------------------------------------------------------------------


def grade_high(value: float, warn: float, fail: float) -> str:
    """More is worse: at or above ``fail`` fails, at or above ``warn`` warns."""
    return "fail" if value >= fail else "warn" if value >= warn else "ok"


def grade_low(value: float, warn: float, fail: float) -> str:
    """Less is worse: below ``fail`` fails, below ``warn`` warns."""
    return "fail" if value < fail else "warn" if value < warn else "ok"


def worst(states: Iterable[str]) -> str:
    return max(states, key=SEVERITY.__getitem__, default="ok")


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _finite(x: float | None) -> float | None:
    """JSON has no infinity: an unbounded figure is null."""
    return None if x is None or math.isinf(x) or math.isnan(x) else round(x, 3)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    if isinstance(exc, psycopg.Error) and exc.diag is not None and exc.diag.message_primary:
        return exc.diag.message_primary
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- Kafka, quietly and briefly ------------------------------------------------------------


class _LastLines(logging.Handler):
    """Keeps librdkafka's last log lines: the Kafka row quotes them instead of stderr."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=20)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def last_failure(self) -> str | None:
        for line in reversed(self.lines):
            # "FAIL [rdkafka#producer-1] [thrd:…]: host:port/bootstrap: Connect to … failed: …"
            if "FAIL" in line.split(" ", 1)[0] or "ERROR" in line.split(" ", 1)[0]:
                return line.rsplit("]: ", 1)[-1]
        return None


class KafkaView:
    """One admin client for a whole status run, with short timeouts and no stderr output."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.lines = _LastLines()
        # not registered with logging.getLogger: nothing the CLI configures can print it
        self.logger = logging.Logger("insights.status.librdkafka")
        self.logger.addHandler(self.lines)
        ms = max(int(timeout * 1000), 1000)
        self._quiet = {"logger": self.logger, "socket.timeout.ms": ms, "socket.connection.setup.timeout.ms": ms}
        self.all_down = False
        self._quiet["error_cb"] = self._on_error
        self.admin: AdminClient = admin_client(settings.kafka, **self._quiet)
        #: topic -> partition count, as of the last metadata()
        self.partitions: dict[str, int] = {}

    def why(self, exc: BaseException) -> str:
        """The broker's or librdkafka's own words for a failure."""
        self.admin.poll(0)  # librdkafka's log lines reach the logger on poll
        line = self.lines.last_failure()
        # librdkafka's line names the broker and the cause; the exception only "transport failure"
        return line or _one_line(exc)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_down = True

    def metadata(self):  # type: ignore[no-untyped-def]
        """Topic metadata; the first call is also the probe whether Kafka answers at all.

        Asked in short slices: once every bootstrap broker refused the connection
        (librdkafka reports _ALL_BROKERS_DOWN) there is nothing to wait for.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                found = self.admin.list_topics(timeout=max(min(0.5, deadline - time.monotonic()), 0.05))
                self.partitions = _partition_counts(found)
                return found
            except KafkaException:
                self.admin.poll(0)  # serves error_cb
                if self.all_down or time.monotonic() >= deadline:
                    raise

    def offsets(self, tps: Sequence[tuple[str, int]], spec: OffsetSpec) -> dict[tuple[str, int], int | None]:
        """Log start or end per partition; None for a partition that does not exist.

        Only partitions the metadata knows are asked for: one unknown partition fails the
        whole request ("No leaders found"), and stale offsets of a deleted topic are common.
        """
        found: dict[tuple[str, int], int | None] = {tp: None for tp in tps}
        request = {TopicPartition(t, p): spec for t, p in tps if p < self.partitions.get(t, 0)}
        if not request:
            return found
        for tp, future in self.admin.list_offsets(request, request_timeout=self.timeout).items():
            found[(tp.topic, tp.partition)] = future.result(timeout=self.timeout).offset
        return found

    def members(self, groups: Sequence[str]) -> dict[str, list[Any]]:
        """Active members of each group (MemberDescription: member_id, client_id, host, assignment)."""
        if not groups:
            return {}
        futures = self.admin.describe_consumer_groups(list(groups), request_timeout=self.timeout)
        return {g: list(f.result(timeout=self.timeout).members) for g, f in futures.items()}

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        request = [ConsumerGroupTopicPartitions(group)]
        result = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)[group]
        tps = result.result(timeout=self.timeout).topic_partitions or []
        return {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}

    def record_times(self, positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], float]:
        """Timestamp (epoch seconds) of the record at each position, as far as read in time.

        One small fetch per partition through an assigned consumer: it joins no group
        and commits nothing, so no consumer of the pipeline notices it.
        """
        if not positions:
            return {}
        conf = consumer_config(
            self.settings.kafka,
            f"{self.settings.kafka.topic_prefix}.status-probe",
            **self._quiet,
            # one record per partition is all we want: do not prefetch megabytes
            **{"fetch.message.max.bytes": 65536, "queued.min.messages": 1, "fetch.wait.max.ms": 100},
        )
        consumer = Consumer(conf)
        found: dict[tuple[str, int], float] = {}
        try:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
            deadline = time.monotonic() + self.timeout
            while len(found) < len(positions) and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                key = (msg.topic(), msg.partition())
                kind, ms = msg.timestamp()
                if key in positions and key not in found and ms > 0:
                    found[key] = ms / 1000.0
        finally:
            consumer.close()
        return found


# --- per-partition lag (status's consumer rows and ``insights status lag``) -------------


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    #: next offset the group stored in PostgreSQL (consumer_offsets): where it resumes
    pg_offset: int | None
    #: Kafka's committed offset of the group (for standard tools; None when not read)
    kafka_offset: int | None
    log_start: int | None
    log_end: int | None
    member_id: str | None = None
    client_id: str | None = None
    host: str | None = None
    #: seconds since the group last stored this partition's offset in PostgreSQL
    stored_age_s: float | None = None

    @property
    def position(self) -> int | None:
        """Where the group resumes: PostgreSQL is the truth the consumers seek to; with no
        offset stored anywhere, the log start (the consumers' ``--auto-offset-reset earliest``)."""
        for offset in (self.pg_offset, self.kafka_offset, self.log_start):
            if offset is not None:
                return offset
        return None

    @property
    def lag(self) -> int | None:
        if self.log_end is None or self.position is None:
            return None
        return max(self.log_end - self.position, 0)

    @property
    def expired(self) -> int:
        """Records removed by retention before the group stored them: lost to this group."""
        if self.log_start is None or self.position is None:
            return 0
        return max(self.log_start - self.position, 0)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["lag"] = self.lag
        doc["stored_age_s"] = _finite(self.stored_age_s)
        return doc


_STORED = """
SELECT consumer_group, topic, partition, next_offset,
       extract(epoch FROM now() - updated_at)::float8
FROM consumer_offsets
WHERE %(groups)s::text[] IS NULL OR consumer_group = ANY(%(groups)s::text[])
ORDER BY 1, 2, 3
"""


def _stored_offsets(conn: psycopg.Connection, groups: Sequence[str] | None) -> list[tuple[str, str, int, int, float]]:
    return conn.execute(_STORED, {"groups": list(groups) if groups else None}).fetchall()


def _partition_lags(
    kafka: KafkaView,
    stored: list[tuple[str, str, int, int, float]],
    *,
    groups: Sequence[str] | None = None,
    with_kafka_offsets: bool = True,
) -> tuple[list[PartitionLag], dict[str, list[Any]]]:
    """Per partition of each group, and each group's active members (call ``kafka.metadata()`` first)."""
    names = sorted({g for g, *_ in stored} | set(groups or ()))
    pg: dict[tuple[str, str, int], tuple[int, float]] = {(g, t, p): (o, age) for g, t, p, o, age in stored}
    kafka_committed: dict[tuple[str, str, int], int] = {}
    if with_kafka_offsets:
        for group in names:
            for (t, p), o in kafka.committed(group).items():
                kafka_committed[(group, t, p)] = o
    members = kafka.members(names)
    owner: dict[tuple[str, str, int], Any] = {}
    for group, found in members.items():
        for member in found:
            for tp in member.assignment.topic_partitions:
                owner[(group, tp.topic, tp.partition)] = member
    keys = set(pg) | set(kafka_committed) | set(owner)
    # every partition of a topic the group reads: one it never stored an offset for has
    # records waiting too (kafka-consumer-groups leaves them out, the lag would look smaller)
    keys |= {(g, t, p) for g, t, _ in list(keys) for p in range(kafka.partitions.get(t, 0))}
    keys = sorted(keys)
    tps = sorted({(t, p) for _, t, p in keys})
    starts = kafka.offsets(tps, OffsetSpec.earliest())
    ends = kafka.offsets(tps, OffsetSpec.latest())
    rows = []
    for key in keys:
        group, topic, partition = key
        stored_offset, age = pg.get(key, (None, None))
        member = owner.get(key)
        rows.append(
            PartitionLag(
                group, topic, partition, stored_offset, kafka_committed.get(key),
                starts.get((topic, partition)), ends.get((topic, partition)),
                member.member_id if member else None, member.client_id if member else None,
                member.host if member else None, age,
            )
        )
    return rows, members


def _partition_counts(metadata: Any) -> dict[str, int]:
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()
            if meta.error is None and meta.partitions}


def _pg(settings: Settings, timeout: float) -> psycopg.Connection[Any]:
    # libpq counts connect_timeout in whole seconds, and treats 1 as 2
    conn = connect(settings.pg, "status", connect_timeout=max(2, math.ceil(timeout)))
    # a status that hangs on a lock is no status: every query gets the same budget
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))
    return conn


def partition_lags(settings: Settings, groups: Sequence[str] | None = None) -> list[PartitionLag]:
    """Every partition of the groups in ``consumer_offsets`` (or of ``groups``), both offsets side by side."""
    timeout = settings.status.timeout_s
    try:
        conn = _pg(settings, timeout)
    except psycopg.Error as exc:
        raise StatusError(f"PostgreSQL does not answer: {_one_line(exc)}") from None
    with conn:
        try:
            stored = _stored_offsets(conn, groups)
        except psycopg.errors.UndefinedTable:
            raise StatusError("no consumer_offsets table in this database: run insights db migrate") from None
        except psycopg.Error as exc:
            raise StatusError(f"cannot read consumer_offsets: {_one_line(exc)}") from None
    kafka = KafkaView(settings, timeout)
    try:
        kafka.metadata()
        return _partition_lags(kafka, stored, groups=groups)[0]
    except KafkaException as exc:
        raise StatusError(f"Kafka does not answer at {settings.kafka.bootstrap_servers}: {kafka.why(exc)}") from None


# --- the checks -----------------------------------------------------------------------------


def _pg_name(settings: Settings) -> str:
    """host:port/database of the DSN (never its password): the same name whether it answers or not."""
    parts = conninfo_to_dict(settings.pg.dsn)
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or '-'}"


def _postgres_row(settings: Settings, conn: psycopg.Connection[Any]) -> Check:
    version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return Check("postgres", _pg_name(settings), "ok", f"PostgreSQL {version} answers",
                 {"reachable": True, "server_version": version})


def _migrations(conn: psycopg.Connection[Any]) -> Check:
    exists = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()) if exists else {}
    try:
        pending = [m.name for m in plan(applied, discover())]
    except MigrationError as exc:
        return Check("database", "migrations", "fail", str(exc), {"applied": len(applied), "pending": None})
    metrics: dict[str, Metric] = {"applied": len(applied), "pending": len(pending)}
    if pending:
        more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
        return Check("database", "migrations", "fail",
                     f"{len(pending)} pending ({pending[0]}{more}): run insights db migrate; "
                     "lag, summaries and partitions are checked once migrated", metrics)
    return Check("database", "migrations", "ok", f"{len(applied)} applied, none pending", metrics)


def _cdc_slot(settings: Settings, conn: psycopg.Connection[Any]) -> Check:
    t = settings.status
    name = settings.cdc.slot_name
    found = slot_status(conn, name)
    if found is None:
        if t.slot_required:
            return Check("cdc", name, "fail", "slot missing: changes are not captured; run insights cdc setup",
                         {"exists": False})
        return Check("cdc", name, "ok", "no slot (INSIGHTS_STATUS_SLOT_REQUIRED=false)", {"exists": False})
    metrics: dict[str, Metric] = {
        "exists": True,
        "active": found.active,
        "retained_bytes": found.retained_bytes,
        "confirmed_lag_bytes": found.lag_bytes,
        "safe_wal_size": found.safe_wal_size,
        "wal_status": found.wal_status,
        "lag_seconds": _finite(found.lag_seconds),
    }
    reader = "streaming" if found.active else "idle (no reader)"
    if found.wal_status in ("lost", "unreserved"):
        # lost: the WAL it needed is gone; unreserved: it goes at the next checkpoint
        return Check("cdc", name, "fail", f"{reader}, wal_status {found.wal_status}: rebuild with "
                     "insights cdc drop, setup and snapshot (docs/cdc.md)", metrics)
    findings: list[tuple[str, str]] = []
    retained = found.retained_bytes or 0
    state = grade_high(retained, t.slot_retained_warn, t.slot_retained_fail)
    limit = t.slot_retained_fail if state == "fail" else t.slot_retained_warn
    # an idle slot keeps every WAL segment written since (by anything on the cluster) until
    # a reader confirms it: name both ways out
    fix = "; start insights cdc run, or insights cdc drop if nothing reads it" if not found.active else ""
    findings.append((state, f"{reader}, holding {size(retained)} of WAL" +
                     (f" (threshold {size(limit)}){fix}" if state != "ok" else "")))
    if found.safe_wal_size is not None:
        state = grade_low(found.safe_wal_size, t.slot_safe_wal_warn, t.slot_safe_wal_fail)
        if state != "ok":
            limit = t.slot_safe_wal_fail if state == "fail" else t.slot_safe_wal_warn
            findings.append((state, f"safe_wal_size {size(found.safe_wal_size)} before the slot is lost "
                             f"(threshold {size(limit)})"))
    state = worst(s for s, _ in findings)
    reason = "; ".join(text for s, text in findings if s == state or state == "ok")
    return Check("cdc", name, state, reason, metrics)


def _summaries(settings: Settings, conn: psycopg.Connection[Any]) -> Check | None:
    t = settings.status
    if not conn.execute("SELECT to_regclass('summaries.product_summary') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return None
    total, overdue, stale = conn.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE window_expires_at <= now()),
               extract(epoch FROM now() - min(window_expires_at) FILTER (WHERE window_expires_at <= now()))::float8
        FROM summaries.product_summary
        """
    ).fetchone()  # type: ignore[misc]
    metrics: dict[str, Metric] = {"summaries": total, "overdue": overdue, "overdue_seconds": _finite(stale or 0.0)}
    if not overdue:
        return Check("summaries", "product_summary", "ok", f"{total} summaries, none overdue for the sweep", metrics)
    state = grade_high(stale, t.summaries_stale_warn_s, t.summaries_stale_fail_s)
    hint = ": is insights summaries sweep scheduled?" if state != "ok" else ""
    return Check("summaries", "product_summary", state,
                 f"{overdue} of {total} overdue for the sweep, the oldest by {duration(stale)}{hint}", metrics)


def _freshness_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    if not conn.execute("SELECT to_regclass('downstream_freshness') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return []
    return conn.execute(
        "SELECT consumer, consumer_group, extract(epoch FROM now() - applied_commit_at)::float8, scrape_lag_seconds "
        "FROM downstream_freshness ORDER BY consumer, consumer_group"
    ).fetchall()


def _freshness(settings: Settings, rows: list[tuple[Any, ...]], consumers: list[Check] | None) -> list[Check]:
    """Per downstream consumer (and group): how old the newest source commit it applied is.

    The age alone would alarm on a quiet source, so it is graded only while changes wait
    for the group on its topics (the consumers rows' lag); without Kafka the wait is unknown.
    """
    t = settings.status
    out = []
    for consumer, group, age, scrape_lag in rows:
        waiting = None if consumers is None else sum(
            int(c.metrics.get("lag_records") or 0) for c in consumers if c.metrics.get("group") == group)
        metrics: dict[str, Metric] = {"consumer": consumer, "group": group, "applied_commit_age_seconds": _finite(age),
                                      "scrape_to_applied_seconds": _finite(scrape_lag), "waiting_records": waiting}
        newest = f"newest applied commit {duration(age)} old"
        scraped = f"; last batch applied {duration(scrape_lag)} after its newest scrape" if scrape_lag is not None else ""
        if waiting is None:
            out.append(Check("freshness", f"{consumer}/{group}", "unknown", f"{newest}{scraped}; waiting changes unknown (Kafka)", metrics))
        elif not waiting:
            out.append(Check("freshness", f"{consumer}/{group}", "ok", f"caught up, {newest}{scraped}", metrics))
        else:
            state = grade_high(age, t.freshness_warn_s, t.freshness_fail_s)
            out.append(Check("freshness", f"{consumer}/{group}", state,
                             f"{waiting} change(s) waiting, {newest}{scraped}", metrics))
    return out


def _rules(conn: psycopg.Connection[Any]) -> Check | None:
    """Active alert rules the engine skips because they do not validate (inserted by SQL)."""
    if not conn.execute("SELECT to_regclass('rules.firings') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return None
    active = conn.execute("SELECT count(*) FROM alert_rules WHERE is_active IS TRUE").fetchone()[0]  # type: ignore[index]
    invalid = invalid_rules(conn)
    metrics: dict[str, Metric] = {"active": active, "invalid": len(invalid)}
    if not invalid:
        return Check("rules", "alert_rules", "ok", f"{active} active rule(s), all valid", metrics)
    (rule_id, _version), why = min(invalid.items())
    return Check("rules", "alert_rules", "warn",
                 f"{len(invalid)} of {active} active rule(s) do not validate and are skipped (rule {rule_id}: {why}); "
                 "fix or disable them: insights rules show/disable", metrics)


_COVERAGE = """
SELECT c.parent::text, p.period, c.is_default,
       extract(epoch FROM c.lower_bound)::float8, extract(epoch FROM c.upper_bound)::float8,
       n.nspname, r.relname
FROM partition_catalog c
JOIN partition_policy p ON p.parent = c.parent
JOIN pg_class r ON r.oid = c."partition"
JOIN pg_namespace n ON n.oid = r.relnamespace
ORDER BY 1, 4
"""

#: rows counted in a DEFAULT partition at most: the finding is "not empty", not the exact figure
DEFAULT_COUNT_CAP = 10_000


def covered_until(bounds: Sequence[tuple[float, float]], now: float) -> float | None:
    """End of the unbroken run of partitions from ``now`` on (None: no partition holds now)."""
    end: float | None = None
    for lower, upper in sorted(bounds):
        if end is None:
            if lower <= now < upper:
                end = upper
        elif lower == end:
            end = upper
        elif lower > end:
            break
    return end


def _partitions(settings: Settings, conn: psycopg.Connection[Any]) -> list[Check]:
    t = settings.status
    if not conn.execute("SELECT to_regclass('public.partition_policy') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return []
    now = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()[0]  # type: ignore[index]
    tables: dict[str, dict[str, Any]] = {}
    for parent, period, is_default, lower, upper, nsp, rel in conn.execute(_COVERAGE).fetchall():
        entry = tables.setdefault(parent, {"period": period, "bounds": [], "default": None})
        if is_default:
            entry["default"] = sql.Identifier(nsp, rel)
        else:
            entry["bounds"].append((lower, upper))
    rows = []
    for parent, entry in sorted(tables.items()):
        until = covered_until(entry["bounds"], now)
        ahead_days = 0.0 if until is None else (until - now) / 86400
        in_default = 0
        if entry["default"] is not None:
            in_default = conn.execute(
                sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) AS d").format(
                    entry["default"], sql.Literal(DEFAULT_COUNT_CAP)
                )
            ).fetchone()[0]  # type: ignore[index]
        metrics: dict[str, Metric] = {"period": entry["period"], "partitions": len(entry["bounds"]),
                                      "ahead_days": _finite(ahead_days), "rows_in_default": in_default}
        state = grade_low(ahead_days, t.partitions_ahead_warn_days, t.partitions_ahead_fail_days)
        if until is None:
            reason = "no partition holds today's rows: run insights db partitions ensure"
        elif math.isinf(ahead_days):
            reason = "covered without end"
        else:
            reason = f"partitions exist {ahead_days:.1f} days ahead"
            if state != "ok":
                reason += ": run insights db partitions ensure (or schedule insights db maintain)"
        if in_default:
            state = worst((state, "warn"))
            more = "+" if in_default >= DEFAULT_COUNT_CAP else ""
            reason += f"; {in_default}{more} row(s) wait in the DEFAULT partition: run insights db partitions ensure"
        rows.append(Check("partitions", parent, state, reason, metrics))
    return rows


def _topics(settings: Settings, kafka: KafkaView) -> list[Check]:
    specs = declared_topics(settings)
    live = live_topics(kafka.admin, [s.name for s in specs], kafka.timeout)
    rows = []
    for spec in specs:
        found = live.get(spec.name)
        if found is None:
            rows.append(Check("topics", spec.name, "fail", "missing: run insights topics create", {"exists": False}))
            continue
        metrics: dict[str, Metric] = {"exists": True, "partitions": found.partitions,
                                      "replication_factor": found.replication_factor}
        drift = drift_of(spec, found)
        if drift:
            rows.append(Check("topics", spec.name, "warn",
                              "drift: " + "; ".join(map(str, drift)) + " (insights topics create --fix)", metrics))
        else:
            rows.append(Check("topics", spec.name, "ok", "as declared", metrics))
    return rows


def _dlqs(settings: Settings, kafka: KafkaView) -> list[Check]:
    """Declared DLQs and any other ``<prefix>.….dlq`` (the summaries consumer makes its own)."""
    t = settings.status
    prefix = settings.kafka.topic_prefix + "."
    present = kafka.partitions
    names = {s.name for s in declared_topics(settings) if s.name.endswith(".dlq")}
    names |= {n for n in present if n.startswith(prefix) and n.endswith(".dlq")}
    depths = dlq_depths(kafka.admin, settings.kafka, {n: present[n] for n in sorted(names) if n in present},
                        kafka.timeout)
    rows = []
    for name, depth in sorted(depths.items()):
        pending = depth.depth
        metrics: dict[str, Metric] = {"depth": pending, "written": depth.log_end, "purged": depth.log_start,
                                      "replayed": depth.log_end - depth.log_start - pending}
        source = name.removesuffix(".dlq")
        if not pending:
            rows.append(Check("dlq", name, "ok", f"none pending ({depth.log_end} written, all replayed or purged)"
                              if depth.log_end else "empty", metrics))
            continue
        state = grade_high(pending, t.dlq_depth_warn, t.dlq_depth_fail)
        rows.append(Check("dlq", name, state,
                          f"{pending} dead letter(s) pending: insights replay dlq -t {source} (or replay purge)",
                          metrics))
    return rows


def _consumers(settings: Settings, kafka: KafkaView, stored: list[tuple[str, str, int, int, float]]) -> list[Check]:
    t = settings.status
    if not stored:
        return [Check("consumers", "-", "ok", "no consumer has stored offsets yet", {"groups": 0})]
    lags, members = _partition_lags(kafka, stored, with_kafka_offsets=False)
    by_key: dict[tuple[str, str], list[PartitionLag]] = {}
    for row in lags:
        by_key.setdefault((row.group, row.topic), []).append(row)
    # the age of the oldest record a group has not stored, read where it would resume
    # (per group: two groups on one topic wait at different offsets)
    times: dict[tuple[str, str, int], float] = {}
    for group in sorted({g for g, _ in by_key}):
        waiting = {(r.topic, r.partition): max(r.position or 0, r.log_start or 0)
                   for (g, _), rs in by_key.items() if g == group for r in rs if r.lag}
        times.update({(group, t, p): ts for (t, p), ts in kafka.record_times(waiting).items()})
    now = time.time()
    rows = []
    for (group, topic), parts in sorted(by_key.items()):
        name = f"{group}/{topic}"
        active = len(members.get(group, []))
        if any(p.log_end is None for p in parts):
            rows.append(Check("consumers", name, "warn",
                              "topic (or partition) does not exist: stale offsets in consumer_offsets",
                              {"group": group, "topic": topic, "members": active}))
            continue
        lag = sum(p.lag or 0 for p in parts)
        expired = sum(p.expired for p in parts)
        ages = [now - times[(group, p.topic, p.partition)] for p in parts
                if p.lag and (group, p.topic, p.partition) in times]
        lag_s = max(max(ages), 0.0) if ages else (0.0 if not lag else None)
        stored_ages = [p.stored_age_s for p in parts if p.stored_age_s is not None]
        if lag and lag_s is None and stored_ages:
            # the records could not be read in time: the last progress is the honest lower bound
            lag_s = min(stored_ages)
        metrics: dict[str, Metric] = {
            "group": group, "topic": topic, "partitions": len(parts), "members": active,
            "lag_records": lag, "lag_seconds": _finite(lag_s), "expired_records": expired,
            "last_stored_seconds": _finite(min(stored_ages)) if stored_ages else None,
        }
        by_records = grade_high(lag, t.lag_records_warn, t.lag_records_fail)
        by_seconds = grade_high(lag_s or 0.0, t.lag_seconds_warn, t.lag_seconds_fail)
        state = worst((by_records, by_seconds, "fail" if expired else "ok"))
        who = f"{active} member(s)" if active else "no active member"
        if not lag:
            reason = f"caught up, {who}"
        else:
            age = f"oldest {duration(lag_s)} old" if lag_s is not None else "age unknown"
            reason = f"lag {lag} record(s), {age}, {who}"
            over = []
            if by_records != "ok":
                over.append(f"records {'fail' if by_records == 'fail' else 'warn'} at "
                            f"{t.lag_records_fail if by_records == 'fail' else t.lag_records_warn}")
            if by_seconds != "ok":
                over.append(f"seconds {'fail' if by_seconds == 'fail' else 'warn'} at "
                            f"{t.lag_seconds_fail if by_seconds == 'fail' else t.lag_seconds_warn:.0f}")
            if over:
                reason += " (threshold " + ", ".join(over) + ")"
        if expired:
            reason += f"; {expired} record(s) expired by retention before being stored"
        rows.append(Check("consumers", name, state, reason, metrics))
    return rows


def _guarded(area: str, name: str, check: Any) -> list[Check]:
    """A check that breaks on something unexpected says so in its row; the others still run."""
    try:
        found = check()
    except (psycopg.Error, KafkaException, InsightsError) as exc:
        return [Check(area, name, "unknown", f"check failed: {_one_line(exc)}")]
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def thresholds(status: StatusSettings) -> dict[str, Metric]:
    return {k: (int(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in status.model_dump().items()}


@contextmanager
def _read_connection(
    settings: Settings, conn: psycopg.Connection[Any], timeout: float
) -> Iterator[psycopg.Connection[Any]]:
    """Where status's heavier reads go: INSIGHTS_PG_READ_DSN when set (a replica first), else
    the primary's connection already open; the primary's too when nothing answers there.

    Routed: the summaries' counts (a scan of one row per product), the rules, the partition
    coverage and the consumers' stored offsets (their lag then includes the replica's replay
    delay, at most the replica-lag threshold shown in the same report). Not routed: what only
    the primary can say (the CDC slot, replication, the archiver) and the downstream
    freshness, whose age would otherwise include the replay delay of the replica asked."""
    if settings.pg.read_dsn is None:
        yield conn
        return
    try:
        read = connect(settings.pg, "status-read", read_only=True, connect_timeout=max(2, math.ceil(timeout)))
    except psycopg.Error:
        yield conn  # no replica and no primary through it: the one we have
        return
    with read:
        read.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))
        yield read


def _operations(settings: Settings) -> list[Check]:
    """Replica lag, WAL archive and backups, pg_cron jobs: ``insights/ops/health.py``'s findings."""
    from insights.ops.health import CHECKS

    rows: list[Check] = []
    for area, check in CHECKS:
        rows += _guarded(area, "-", lambda check=check: [
            Check(f.area, f.what, f.level, f"{f.state}: {f.detail}" if f.detail else f.state, dict(f.metrics))
            for f in check(settings)
        ])
    return rows


def gather(settings: Settings) -> Report:
    timeout = settings.status.timeout_s
    checks: list[Check] = []
    stored: list[tuple[str, str, int, int, float]] | None = None
    freshness_rows: list[Any] = []

    # PostgreSQL: one connection for every check that needs it
    try:
        conn = _pg(settings, timeout)
    except psycopg.Error as exc:
        checks.append(Check("postgres", _pg_name(settings), "unknown", f"unreachable: {_one_line(exc)}",
                            {"reachable": False}))
        conn = None
    if conn is not None:
        with conn:
            checks.append(_postgres_row(settings, conn))
            checks += _operations(settings)
            migrations = _guarded("database", "migrations", lambda: _migrations(conn))
            checks += migrations
            migrated = all(c.state == "ok" for c in migrations)
            checks += _guarded("cdc", settings.cdc.slot_name, lambda: _cdc_slot(settings, conn))
            if migrated:
                fresh = _guarded("freshness", "-", lambda: _freshness_rows(conn))
                if fresh and isinstance(fresh[0], Check):
                    checks += fresh
                    freshness_rows = []
                else:
                    freshness_rows = fresh
                with _read_connection(settings, conn, timeout) as read:
                    checks += _guarded("summaries", "product_summary", lambda: _summaries(settings, read))
                    checks += _guarded("rules", "alert_rules", lambda: _rules(read))
                    checks += _guarded("partitions", "-", lambda: _partitions(settings, read))
                    try:
                        stored = _stored_offsets(read, None)
                    except psycopg.Error as exc:
                        checks.append(Check("consumers", "-", "unknown", f"check failed: {_one_line(exc)}"))

    # Kafka: asked once whether it answers; if not, its checks are not attempted
    kafka = KafkaView(settings, timeout)
    servers = settings.kafka.bootstrap_servers
    try:
        metadata = kafka.metadata()
    except KafkaException as exc:
        checks.append(Check("kafka", servers, "unknown", f"unreachable: {kafka.why(exc)}", {"reachable": False}))
        metadata = None
    if metadata is not None:
        brokers = len(metadata.brokers)
        checks.append(Check("kafka", servers, "ok", f"{brokers} broker(s) answer",
                            {"reachable": True, "brokers": brokers}))
        checks += _guarded("topics", "-", lambda: _topics(settings, kafka))
        checks += _guarded("dlq", "-", lambda: _dlqs(settings, kafka))
        if stored is not None:
            checks += _guarded("consumers", "-", lambda: _consumers(settings, kafka, stored))
    consumer_rows = [c for c in checks if c.area == "consumers"] if metadata is not None else None
    checks += _freshness(settings, freshness_rows, consumer_rows)
    order = ["postgres", "database", "kafka", "topics", "dlq", "consumers", "cdc", "summaries", "rules", "freshness", "partitions",
             "replicas", "backups", "schedule"]
    checks.sort(key=lambda c: order.index(c.area) if c.area in order else len(order))
    return Report(tuple(checks), thresholds(settings.status))
