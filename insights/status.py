"""``insights status``: one look at the whole pipeline, for the operator at 3 a.m.

Each check returns :class:`Check` rows (what, state, detail, healthy) and never raises
for an unreachable service: an unreachable service is itself the finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from core.settings import Settings
from insights.db.migrations import migrate
from streams.admin import admin_client, describe_topics, end_offsets
from streams.cdc.slot import slot_status
from streams.topics import declared_topics


@dataclass(frozen=True)
class Check:
    area: str
    what: str
    state: str
    detail: str = ""
    healthy: bool = True


def _guard(area: str, check: Callable[[], list[Check]]) -> list[Check]:
    try:
        return check()
    except Exception as exc:  # the finding is that it failed; say what failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Check(area, "-", "unreachable", first, healthy=False)]


def database(settings: Settings) -> list[Check]:
    pending = migrate(settings.pg.conninfo(), dry_run=True)
    return [
        Check(
            "database",
            "migrations",
            "pending" if pending else "up to date",
            ", ".join(pending),
            healthy=not pending,
        )
    ]


def topics(settings: Settings) -> list[Check]:
    rows = []
    for desc in describe_topics(settings, declared_topics(settings)):
        messages = sum(desc.live.end_offsets.values()) if desc.live else 0
        is_dlq = desc.spec.name.endswith(".dlq")
        if desc.live is None:
            rows.append(Check("topics", desc.spec.name, "missing", "run: insights topics create", healthy=False))
        elif desc.drift:
            rows.append(Check("topics", desc.spec.name, "drift", "; ".join(map(str, desc.drift)), healthy=False))
        else:
            detail = f"{messages} dead letters" if is_dlq else f"{messages} records"
            rows.append(Check("topics", desc.spec.name, "ok", detail, healthy=not (is_dlq and messages)))
    return rows


def consumers(settings: Settings) -> list[Check]:
    """Lag per group and topic, from the offsets the consumers store in PostgreSQL."""
    with psycopg.connect(settings.pg.conninfo(), connect_timeout=5) as conn:
        stored = conn.execute(
            "SELECT consumer_group, topic, partition, next_offset, now() - updated_at "
            "FROM consumer_offsets ORDER BY 1, 2, 3"
        ).fetchall()
    admin = admin_client(settings)
    by_group: dict[tuple[str, str], dict[int, int]] = {}
    ages: dict[tuple[str, str], object] = {}
    for group, topic, partition, next_offset, age in stored:
        by_group.setdefault((group, topic), {})[partition] = next_offset
        ages[(group, topic)] = min(age, ages.get((group, topic), age))  # type: ignore[type-var]
    rows = []
    for (group, topic), offsets in by_group.items():
        try:
            ends = end_offsets(admin, topic, max(offsets) + 1, timeout=5)
        except Exception as exc:
            rows.append(Check("consumers", f"{group} / {topic}", "unknown", str(exc), healthy=False))
            continue
        lag = sum(max(ends.get(p, 0) - o, 0) for p, o in offsets.items())
        age = int(ages[(group, topic)].total_seconds())  # type: ignore[attr-defined]
        rows.append(Check("consumers", f"{group} / {topic}", f"lag {lag}", f"last commit {age}s ago"))
    return rows or [Check("consumers", "-", "no stored offsets yet")]


def cdc(settings: Settings) -> list[Check]:
    with psycopg.connect(settings.pg.conninfo(), connect_timeout=5) as conn:
        found = slot_status(conn, settings.cdc.slot_name)
    if found is None:
        return [Check("cdc", settings.cdc.slot_name, "no slot", "run: insights cdc setup")]
    healthy = found.wal_status in ("reserved", "extended")
    detail = (
        f"confirmed {found.confirmed_flush_lsn}, lag {found.lag_bytes} bytes, "
        f"wal_status {found.wal_status}, safe_wal_size {found.safe_wal_size}"
    )
    state = "streaming" if found.active else "idle (no reader)"
    return [Check("cdc", found.slot, state if healthy else "LOST", detail, healthy=healthy)]


def gather(settings: Settings) -> list[Check]:
    rows: list[Check] = []
    for area, check in (("database", database), ("topics", topics), ("consumers", consumers), ("cdc", cdc)):
        rows += _guard(area, lambda check=check: check(settings))
    return rows
