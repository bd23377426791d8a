"""ensure_topics / describe_topics against the real broker."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from core.settings import load_settings
from streams.admin import describe_topics, ensure_topics
from streams.topics import declared_topics, dlq_name, event_topics, summaries_source_topics
from tests.fix_services import child_env

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


def _insights(settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, wide enough that no topic name is folded."""
    cli = Path(sys.executable).parent / "insights"
    return subprocess.run(
        [str(cli), *args],
        env=child_env(settings, COLUMNS="240", NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def cli_settings(kafka_bootstrap, topic_prefix):
    """Kafka only (the topics commands touch no database); every declared topic deleted after."""
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, metrics_port=0)
    yield settings
    admin = AdminClient(settings.kafka.client_config())
    names = [s.name for s in declared_topics(settings)]
    for future in admin.delete_topics(names).values():
        try:
            future.result(timeout=30)
        except Exception:
            pass


def test_cli_creates_and_describes_every_declared_topic_without_drift(cli_settings):
    """``topics create`` then ``topics describe``: the CDC topics and the summaries' DLQs too."""
    names = [s.name for s in declared_topics(cli_settings)]
    summaries_dlqs = [dlq_name(t) for t in summaries_source_topics(cli_settings)]
    assert set(summaries_dlqs) <= set(names)

    created = _insights(cli_settings, "topics", "create")
    assert created.returncode == 0, created.stdout + created.stderr
    lines = created.stdout.splitlines()
    for name in names:
        assert any(name in line and "created" in line for line in lines), f"{name} not created:\n{created.stdout}"

    again = _insights(cli_settings, "topics", "create")
    assert again.returncode == 0, again.stdout + again.stderr
    for name in names:
        # checked against the broker, not skipped: each has a row, and it says ok
        assert any(name in line and " ok " in line for line in again.stdout.splitlines()), again.stdout

    described = _insights(cli_settings, "topics", "describe")
    assert described.returncode == 0, described.stdout + described.stderr
    for name in names:
        assert f"{name} (ok)" in described.stdout, described.stdout
    assert "drift" not in described.stdout and "missing" not in described.stdout
