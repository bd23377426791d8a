"""``insights dlq list | show | replay | purge`` against the real broker and database:
an alert for a rule that did not exist yet is re-driven after the rule is created."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.cli.helpers import run_cli
from tests.consumers.conftest import count, produce, run_until_idle
from tests.consumers.events import alert
from tests.fix_services import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def _head(out: str) -> dict[str, int]:
    """The counts of `dlq list`'s first line."""
    line = out.splitlines()[0]
    found = {name: int(n) for n, name in re.findall(
        r"(\d+) (in the log|pending|replayed|failed again|purged)", line)}
    assert len(found) == 5, line
    return found


def test_dead_letters_are_redriven_after_the_fix(settings, topics, pg, seed_rule):
    seed_rule(1)
    events = [alert(1, n, 0) for n in range(3)]
    events += [alert(99, n, 1) for n in range(4)]  # rule 99 does not exist yet
    events += [alert(98, n, 2) for n in range(2)]  # nor 98, which will not be created
    produce(settings, topics.alerts, "alert_triggered", events, key=lambda e: str(e.event_id).encode())
    produce(settings, topics.alerts, "alert_triggered", [(b"poison", b"\x00not avro at all")])
    run_until_idle(settings, "alerts", idle=3.0)
    assert count(pg, "SELECT count(*) FROM alerts") == 3
    env = child_env(settings)

    before = _ok(run_cli("dlq", "list", "--topic", topics.alerts, env=env))
    assert _head(before) == {"in the log": 7, "pending": 7, "replayed": 0, "failed again": 0, "purged": 0}
    assert "  constraint: 6 (oldest " in before and "  unknown_schema: 1 (oldest " in before
    assert "    6 × ForeignKeyViolation [23503]: " in before and "fk_alerts_rule" in before  # one kind, whatever the rule
    shown = _ok(run_cli("dlq", "show", "--topic", topics.alerts, "--class", "constraint", "--limit", "1", env=env))
    assert "insights.error.class: constraint" in shown and re.search(r'"rule_id": 9[89]', shown)
    poison = _ok(run_cli("dlq", "show", "--topic", topics.alerts, "--class", "unknown_schema", env=env))
    assert "hex: 006e6f7420" in poison

    # the fix: the rule is created; re-drive only its alerts first
    seed_rule(99)
    dry = _ok(run_cli("dlq", "replay", "--topic", topics.alerts, "--reason", "(99)", "--dry-run", env=env))
    assert "would replay 4" in dry
    first = _ok(run_cli("dlq", "replay", "--topic", topics.alerts, "--reason", "(99)", env=env))
    assert "replayed 4" in first and "left by the filters, constraint: 2" in first
    assert "left by the filters, unknown_schema: 1" in first
    # then the rest: rule 98's alerts (the 99s are not sent twice); the poison stays skipped
    rest = _ok(run_cli("dlq", "replay", "--topic", topics.alerts, env=env))
    assert "3 pending" in rest and "replayed 2 to" in rest and "skipped unknown_schema: 1" in rest
    run_until_idle(settings, "alerts", idle=3.0)

    assert count(pg, "SELECT count(*) FROM alerts") == 7
    assert count(pg, "SELECT count(*) FROM alerts WHERE rule_id = 99") == 4
    assert count(pg, "SELECT trigger_count FROM alert_rules WHERE id = 99") == 4
    after = _ok(run_cli("dlq", "list", "--topic", topics.alerts, env=env))
    # rule 98's two alerts are back with their new reason; the poison is still pending
    assert _head(after) == {"in the log": 9, "pending": 3, "replayed": 6, "failed again": 2, "purged": 0}
    again = _ok(run_cli("dlq", "show", "--topic", topics.alerts, "--offset", "0:7", env=env))
    assert "fk_alerts_rule" in again and "(rule_id)=(98)" in again
    assert "insights.original.offset" in again

    # purge: asks, or wants --yes without a terminal
    refused = run_cli("dlq", "purge", "--topic", topics.alerts, "--before", "0:7", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    gone = _ok(run_cli("dlq", "purge", "--topic", topics.alerts, "--before", "0:7", "--yes", env=env))
    assert "would drop 7 record(s), 1 of them never replayed" in gone and "purged 7" in gone
    final = _head(_ok(run_cli("dlq", "list", "--topic", topics.alerts, env=env)))
    assert final == {"in the log": 2, "pending": 2, "replayed": 6, "failed again": 2, "purged": 7}
