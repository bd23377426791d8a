"""Item 8 of issue 10: `produce` never creates topics silently, and Ctrl-C says what was sent."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from core.settings import Settings
from insights.generate.run import topic_for
from streams.admin import admin_client, end_offsets
from streams.topics import declared_topics
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.fix_services import child_env

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _drop_the_topics(settings: Settings, kafka_bootstrap: str) -> Iterator[None]:
    """These tests create the declared topics under their own prefix: remove them after."""
    yield
    admin = admin_client(settings)
    names = [spec.name for spec in declared_topics(settings)]
    present = [n for n in names if n in admin.list_topics(timeout=30).topics]
    for future in (admin.delete_topics(present).values() if present else []):
        try:
            future.result(timeout=30)
        except Exception:
            pass  # best effort: a leftover topic under a uuid prefix harms nobody


def _records(settings: Settings, topic: str) -> int:
    return sum(end_offsets(admin_client(settings), topic, 6).values())


def test_produce_refuses_a_missing_topic_and_creates_only_when_asked(settings: Settings, kafka_bootstrap: str) -> None:
    env = child_env(settings)
    topic = topic_for(settings, "scrape").name
    missing = run_cli("produce", "scrape", "-m", "5", "-n", "2", env=env)
    assert_one_line_error(missing, 1, f"topic {topic} does not exist", "`insights topics create`", "--create-topics")

    done = run_cli("produce", "scrape", "-m", "5", "-n", "2", "--create-topics", env=env)
    assert done.returncode == 0, done.stderr
    assert f"created topic {topic}" in done.stderr.splitlines()
    assert re.search(r"run id\s+[0-9a-f-]{36}", done.stdout)
    assert _records(settings, topic) == 5


def test_ctrl_c_during_produce_says_what_was_sent_and_exits_130(settings: Settings, kafka_bootstrap: str) -> None:
    env = child_env(settings)
    topic = topic_for(settings, "alerts").name
    created = run_cli("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    child = subprocess.Popen(
        [sys.executable, "-m", "insights", "produce", "alerts", "-m", "100000", "-n", "5", "--rate", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        before: list[str] = []
        while not (line := child.stderr.readline()).startswith("produce: producing alerts: "):
            before.append(line)  # anything else here is a failure to show
            assert line and len(before) < 20, "".join(before)
        # the first progress line: sending has begun
        assert before == [], "".join(before)
        time.sleep(2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"insights: interrupted: sent ([\d,]+) of 100,000 events \(\+0 duplicates\) to {re.escape(topic)}: "
        r"([\d,]+) record\(s\) acknowledged by Kafka; run id [0-9a-f-]{36} \(--run-id re-sends the same events\)",
        last,
    )
    assert found, (out, err)
    sent, acknowledged = (int(g.replace(",", "")) for g in found.groups())
    assert 0 < acknowledged == sent < 100_000
    assert re.search(rf"events\s+{sent:,}\s", out), out  # the summary table, printed before the line
    # what it says is what Kafka holds
    assert _records(settings, topic) == acknowledged
