"""A decoded CDC envelope -> what the rule engine does with it (pure).

The engine needs little from a change: for ``product_snapshots``, which snapshot
(``asin``, ``scraped_at``) was inserted, updated or read by a snapshot (it reads the row, its predecessor
and its successor from the table itself when it evaluates); for ``alert_rules``, the row's
state as the rule cache knows it (``RuleState``: the alerts consumer's counter updates
change nothing the engine uses, and must not cost a reload of every rule); for the
competitive-group tables, only that something changed (its cache is reloaded). A
deleted or truncated snapshot fires nothing and retracts nothing: an alert is a fact
about what was observed (docs/alert-rules.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import RecordError

CACHE_TABLES = frozenset({"alert_rules", "competitive_groups", "competitive_group_members"})
_OPS = frozenset({"c", "u", "d", "r", "t"})


#: an ``alert_rules`` row as the rule cache sees it: (id, version, active, name, version_at).
#: ``version`` moves with the rule's meaning (ddl/0017's trigger: type, target, conditions,
#: severity), so these five columns are all a change must match for the cache to hold it
RuleState = tuple[int, int, bool, str | None, datetime | None]


@dataclass(frozen=True, slots=True)
class RuleChange:
    #: "snapshot" (evaluate asin/scraped_at), "cache" (reload rules and groups), "none"
    kind: str
    asin: str = ""
    scraped_at: datetime | None = None
    commit_time_us: int = 0
    #: op 'r': a snapshot read (``cdc resync``/``cdc snapshot``) republishing a stored row,
    #: not a change that happened now (the engine evaluates it only for rules that could
    #: have seen it live, ``conditions.could_have_seen``)
    read: bool = False
    #: a "cache" change of ``alert_rules`` whose row image says what the rule now is; None:
    #: anything else (groups, a delete, a row without those columns), which always reloads
    rule: RuleState | None = None


def _fail(message: str) -> RecordError:
    return RecordError(f"CDC event: {message}")


def _commit_us(value: Any) -> int:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return int(value.replace(microsecond=0).timestamp()) * 1_000_000 + value.microsecond
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0


def parse_change(record: dict[str, Any]) -> RuleChange:
    """Validate one decoded envelope; RecordError (a dead letter) when it cannot be used."""
    source = record.get("source")
    if not isinstance(source, dict):
        raise _fail("no source")
    table, op = source.get("table"), record.get("op")
    if op not in _OPS:
        raise _fail(f"unknown op {op!r}")
    commit_us = _commit_us(source.get("commit_time"))
    if table in CACHE_TABLES:
        state = _rule_state(record.get("after")) if table == "alert_rules" and op in ("c", "u", "r") else None
        return RuleChange("cache", commit_time_us=commit_us, rule=state)
    if table != "product_snapshots":
        raise _fail(f"table {table!r} is not one the rule engine consumes")
    if op in ("d", "t"):
        return RuleChange("none", commit_time_us=commit_us)
    row = record.get("after")
    if not isinstance(row, dict):
        raise _fail(f"op {op} without its row image")
    asin, at = row.get("asin"), row.get("scraped_at")
    if not isinstance(asin, str) or not asin:
        raise _fail("product_snapshots.asin must be a non-empty string")
    if not isinstance(at, str):
        raise _fail("product_snapshots.scraped_at is missing")
    try:
        scraped_at = datetime.fromisoformat(at)
    except ValueError:
        raise _fail(f"product_snapshots.scraped_at is not an ISO timestamp: {at[:40]!r}") from None
    if scraped_at.tzinfo is None:
        raise _fail("product_snapshots.scraped_at has no time zone")
    return RuleChange("snapshot", asin, scraped_at, commit_us, read=op == "r")


def _rule_state(row: Any) -> RuleState | None:
    """The cache's view of an ``alert_rules`` after-image; None when it does not carry it whole."""
    if not isinstance(row, dict) or not {"id", "version", "is_active", "name", "version_at"} <= row.keys():
        return None  # e.g. a column left out as unchanged TOAST: reload rather than guess
    rule_id, version, name, at = row["id"], row["version"], row["name"], row["version_at"]
    if not (type(rule_id) is int and type(version) is int and (name is None or isinstance(name, str))):
        return None
    if at is not None:
        if not isinstance(at, str):
            return None
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            return None
    return (rule_id, version, row["is_active"] is True, name, at)
