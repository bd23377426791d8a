"""The freshness rows of `insights status` (pure): graded only while changes wait for the group."""

from __future__ import annotations

from core.settings import load_settings
from insights.status import Check, _freshness


def test_freshness_is_graded_by_the_applied_commit_age_only_while_changes_wait() -> None:
    settings = load_settings(status_freshness_warn_s=60, status_freshness_fail_s=600)
    rows = [("rules", "g1", 5.0, 0.4), ("summaries", "g2", 900.0, 2.0), ("competitive", "g3", 120.0, None)]
    consumers = [
        Check("consumers", "g2/t", "ok", "", {"group": "g2", "lag_records": 40}),
        Check("consumers", "g3/t", "ok", "", {"group": "g3", "lag_records": 3}),
        Check("consumers", "g1/t", "ok", "", {"group": "g1", "lag_records": 0}),
    ]
    found = {c.name: c for c in _freshness(settings, rows, consumers)}
    assert found["rules/g1"].state == "ok" and "caught up" in found["rules/g1"].reason
    assert found["summaries/g2"].state == "fail" and found["summaries/g2"].metrics["waiting_records"] == 40
    assert found["competitive/g3"].state == "warn"
    assert found["rules/g1"].metrics["scrape_to_applied_seconds"] == 0.4
    # a quiet source is not stale: nothing waits, whatever the age
    quiet = _freshness(settings, [("summaries", "g2", 99999.0, None)], [consumers[2]])
    assert quiet[0].state == "ok"
    assert _freshness(settings, rows[:1], None)[0].state == "unknown"  # Kafka did not answer
