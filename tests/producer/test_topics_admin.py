"""ensure_topics / describe_topics against the real broker."""

from __future__ import annotations

import dataclasses

import pytest
from confluent_kafka.admin import AdminClient

from streams.admin import describe_topics, ensure_topics
from streams.topics import event_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def specs(settings):
    declared = event_topics(settings)
    yield declared
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.delete_topics([s.name for s in declared]).values():
        try:
            future.result(timeout=30)
        except Exception:
            pass


def test_creates_once_then_reports_ok(settings, specs):
    first = ensure_topics(settings, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    again = ensure_topics(settings, specs)
    assert again.created == [] and again.ok
    described = {d.spec.name: d for d in describe_topics(settings, specs)}
    scrape = described[specs[0].name]
    assert scrape.live.partitions == specs[0].partitions
    assert scrape.live.config["retention.ms"] == str(specs[0].retention_ms)
    assert scrape.live.end_offsets == {p: 0 for p in range(specs[0].partitions)}


def test_drift_is_reported_not_applied_until_fix(settings, specs):
    ensure_topics(settings, specs)
    changed = [dataclasses.replace(specs[0], partitions=specs[0].partitions + 2, retention_ms=3_600_000), *specs[1:]]
    report = ensure_topics(settings, changed)
    assert report.drifted == [specs[0].name]
    assert {d.name for d in report.topics[0].drift} == {"partitions", "retention.ms"}
    live = describe_topics(settings, changed)[0].live
    assert live.partitions == specs[0].partitions  # nothing changed silently

    fixed = ensure_topics(settings, changed, fix=True)
    assert fixed.fixed == [specs[0].name] and fixed.ok
    after = describe_topics(settings, changed)[0]
    assert after.live.partitions == specs[0].partitions + 2
    assert after.live.config["retention.ms"] == "3600000" and after.drift == ()


def test_fewer_declared_partitions_cannot_be_fixed(settings, specs):
    ensure_topics(settings, specs)
    shrunk = [dataclasses.replace(specs[0], partitions=2), *specs[1:]]
    report = ensure_topics(settings, shrunk, fix=True)
    assert report.drifted == [specs[0].name]
    assert [(d.name, d.fixable) for d in report.topics[0].drift] == [("partitions", False)]
