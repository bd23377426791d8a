"""Status rows rendered twice from one model, grading, and a table that fits 80 columns (no services)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from core.errors import ConfigError
from core.settings import load_settings
from insights.cli.status_cmd import render
from insights.cli.tables import _could_be, elide_unique
from insights.status import Check, Report, covered_until, grade_high, grade_low, thresholds

LONG_NAMES = [
    "insights.events.product_scraped",
    "insights.events.alert_triggered",
    "insights.events.product_scraped.dlq",
    "insights.events.alert_triggered.dlq",
    "insights.cdc.public.products",
    "insights.cdc.public.product_snapshots",
    "insights.cdc.public.products.dlq",
    "insights.cdc.public.product_snapshots.dlq",
    "insights.cdc.public.competitive_groups",
    "insights.cdc.public.competitive_group_members",
    "insights-ingest.scrape/insights.events.product_scraped",
    "insights-ingest.alerts/insights.events.alert_triggered",
    # differ only in the middle: the end alone cannot tell them apart
    "insights.cdc.public.aaaaaaaaaaaaaaa.table_with_a_long_name",
    "insights.cdc.public.bbbbbbbbbbbbbbb.table_with_a_long_name",
]


def _report() -> Report:
    checks = [Check("postgres", "127.0.0.1:55432/insights", "ok", "PostgreSQL 15 answers", {"reachable": True})]
    for i, name in enumerate(LONG_NAMES):
        state = ("ok", "warn", "fail", "unknown")[i % 4]
        checks.append(Check("topics", name, state, f"reason number {i} " + "with many words " * (i % 5),
                            {"depth": i, "lag_seconds": i / 3, "exists": True, "wal_status": None}))
    return Report(tuple(checks), thresholds(load_settings().status))


def _render(terminal: bool, width: int = 80) -> str:
    out = io.StringIO()
    render(Console(file=out, force_terminal=terminal, width=width, color_system=None), _report())
    return out.getvalue()


def test_table_and_json_are_the_same_rows():
    report = _report()
    doc = json.loads(json.dumps(report.as_dict()))
    lines = _render(terminal=False).splitlines()
    assert lines[0].split() == ["STATE", "AREA", "NAME", "REASON"]
    table = [line.split(None, 3) for line in lines[1:-1]]
    assert [[c["state"], c["area"], c["name"], c["reason"].strip()] for c in doc["checks"]] == table
    assert lines[-1] == "FAIL (exit 2)" and doc["state"] == "fail" and doc["exit_code"] == 2
    # numbers stay numbers
    assert doc["checks"][3]["metrics"] == {"depth": 2, "lag_seconds": 2 / 3, "exists": True, "wal_status": None}
    assert doc["thresholds"]["slot_retained_warn"] == 256 * 2**20


def test_terminal_table_fits_80_columns_and_never_shortens_two_names_alike():
    text = _render(terminal=True, width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    shown = []
    for line in lines:
        cells = line.split()
        if cells and cells[0] in ("ok", "warn", "fail", "unknown"):
            shown.append(cells[2])
    assert len(shown) == len(LONG_NAMES) + 1
    assert len(set(shown)) == len(shown), shown
    assert any("…" in name for name in shown)


def test_elide_unique_keeps_names_apart():
    short = elide_unique(LONG_NAMES, 20)
    assert len(set(short.values())) == len(LONG_NAMES)
    assert all(len(v) <= 20 for v in short.values())
    assert short["insights.cdc.public.products"].endswith("products")
    # not merely different strings: no short form reads as another name with parts elided
    for name, shown in short.items():
        assert all(not _could_be(shown, other) for other in LONG_NAMES if other != name), (name, shown)
    assert elide_unique(["short", "names"], 20) == {"short": "short", "names": "names"}


def test_overall_state_orders_fail_over_unknown_over_warn():
    def report(*states: str) -> Report:
        return Report(tuple(Check("a", str(i), s, "") for i, s in enumerate(states)), {})

    assert report().exit_code == 0
    assert report("ok", "warn").exit_code == 1
    assert report("warn", "unknown").exit_code == 3
    assert report("unknown", "fail", "warn").exit_code == 2


def test_grading_at_the_thresholds():
    assert [grade_high(v, 10, 20) for v in (9, 10, 19, 20)] == ["ok", "warn", "warn", "fail"]
    assert [grade_low(v, 7, 1) for v in (7, 6.9, 1, 0.5)] == ["ok", "warn", "warn", "fail"]


def test_partition_coverage_follows_unbroken_partitions_from_now():
    day = 86400.0
    bounds = [(0, day), (day, 2 * day), (2 * day, 3 * day), (4 * day, 5 * day)]
    assert covered_until(bounds, 0.5 * day) == 3 * day  # the gap at day 3 ends it
    assert covered_until(bounds, 3.5 * day) is None  # nothing holds now
    assert covered_until([(0, float("inf"))], day) == float("inf")


def test_status_thresholds_are_settings_and_must_be_ordered():
    s = load_settings(status_lag_records_warn=5, status_lag_records_fail=50, status_slot_retained_warn="64MiB")
    assert (s.status.lag_records_warn, s.status.slot_retained_warn) == (5, 64 * 2**20)
    with pytest.raises(ConfigError, match="INSIGHTS_STATUS_LAG_RECORDS_FAIL: .*at least INSIGHTS_STATUS_LAG_RECORDS_WARN"):
        load_settings(status_lag_records_warn=100, status_lag_records_fail=10)
    with pytest.raises(ConfigError, match="INSIGHTS_STATUS_PARTITIONS_AHEAD_FAIL_DAYS"):
        load_settings(status_partitions_ahead_warn_days=1, status_partitions_ahead_fail_days=3)
