"""Event ids are unique per run, reproducible per (seed, run id): the identity contract's
producer side (ddl/README.md "Event identity")."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from insights.generate.run import Plan, plan_events

START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _ids(plan: Plan) -> list[uuid.UUID]:
    return [d.event.event_id for d in plan_events(plan) if not d.duplicate]


@pytest.mark.parametrize("kind", ["scrape", "alerts"])
def test_runs_without_a_run_id_never_share_an_event_id(kind):
    plan = Plan(kind, products=10, events=300, seed=3, start=START, span=timedelta(days=2))
    first, second = _ids(plan), _ids(plan)
    assert len(first) == len(second) == 300
    assert set(first).isdisjoint(second)


@pytest.mark.parametrize("kind", ["scrape", "alerts"])
def test_a_given_run_id_reproduces_the_very_events(kind):
    plan = Plan(kind, products=10, events=300, seed=3, start=START, span=timedelta(days=2), duplicates=0.2)
    fixed = plan.with_run_id()
    assert fixed.run_id is not None and fixed.with_run_id() == fixed
    again = [(d.event, d.duplicate) for d in plan_events(fixed)]
    assert again == [(d.event, d.duplicate) for d in plan_events(fixed)]
    # duplicates are redeliveries: the same event, the same id
    copies = [event for event, duplicate in again if duplicate]
    originals = {event.event_id for event, duplicate in again if not duplicate}
    assert copies and all(event.event_id in originals for event in copies)
