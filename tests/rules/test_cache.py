"""Which alert_rules changes reload the engine's rule cache (pure: envelopes and Cache.holds).

Every alert the alerts consumer stores updates its rule's ``trigger_count`` and
``last_triggered_at``: a change of ``alert_rules`` per alert. The cache is reloaded only
when a change says something it does not hold (a new version, a rename, an enable or
disable, a version_at moved by hand) or when the change cannot say (groups, deletes,
a row image without those columns). The same on the real stream:
tests/rules/test_rules_cache_live.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.rules.changes import parse_change
from consumers.rules.store import Cache

AT = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)


def envelope(op: str = "u", table: str = "alert_rules", **after: Any) -> dict[str, Any]:
    row = {"id": 7, "version": 2, "is_active": True, "name": "drop", "version_at": AT.isoformat(),
           "trigger_count": 41, "conditions": '{"percent": 10, "direction": "down"}'}
    row.update(after)
    return {"op": op, "source": {"table": table, "commit_time": 1}, "after": row}


def loaded() -> Cache:
    return Cache(loaded={7: (2, "drop", AT)})


def test_a_counter_update_is_held_by_the_cache() -> None:
    change = parse_change(envelope(trigger_count=42))
    assert change.kind == "cache" and change.rule == (7, 2, True, "drop", AT)
    assert loaded().holds(change.rule)
    # the same instant written with another offset is the same version_at
    other_zone = AT.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
    assert loaded().holds(parse_change(envelope(version_at=other_zone)).rule)  # type: ignore[arg-type]


@pytest.mark.parametrize("after", [
    {"version": 3},  # conditions, type, target or severity changed (the trigger moved the version)
    {"name": "price drop"},  # a rename: the alerts carry the rule's name
    {"is_active": False},  # disabled
    {"version_at": (AT - timedelta(days=30)).isoformat()},  # set back by hand for a resync (ddl/0026)
    {"id": 8},  # a rule the cache has never seen
])
def test_a_change_of_what_the_engine_uses_is_not_held(after: dict[str, Any]) -> None:
    change = parse_change(envelope(**after))
    assert change.rule is not None and not loaded().holds(change.rule)


def test_an_inactive_rule_the_cache_does_not_hold_stays_unheld_until_enabled() -> None:
    assert loaded().holds(parse_change(envelope(id=9, is_active=False)).rule)  # type: ignore[arg-type]
    assert loaded().holds(parse_change(envelope(id=9, is_active=None)).rule)  # type: ignore[arg-type]
    assert not loaded().holds(parse_change(envelope(id=9, is_active=True)).rule)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [
    envelope(op="d"),
    {"op": "t", "source": {"table": "alert_rules"}},
    envelope(table="competitive_group_members"),
    envelope(table="competitive_groups"),
    {"op": "u", "source": {"table": "alert_rules"}, "after": {"id": 7, "version": 2, "is_active": True}},
    envelope(version_at="yesterday"),
    envelope(version="2"),
    envelope(id=True),
])
def test_changes_that_cannot_say_what_the_rule_is_always_reload(record: dict[str, Any]) -> None:
    change = parse_change(record)
    assert change.kind == "cache" and change.rule is None


def test_the_snapshot_path_is_unchanged() -> None:
    change = parse_change({"op": "c", "source": {"table": "product_snapshots"},
                           "after": {"asin": "B000000001", "scraped_at": AT.isoformat()}})
    assert change.kind == "snapshot" and change.rule is None
