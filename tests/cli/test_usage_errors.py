"""Item 1 of issue 10: usage mistakes print typer's usage and exit 2, never a traceback;
--version and shell completion work."""

from __future__ import annotations

import pytest

from insights.cli.main import version
from tests.cli.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
        (["consume", "bogus"], "'bogus' is not one of"),
        (["produce", "scrape", "-m", "-5"], "--events"),
        (["status", "--bogus"], "No such option: --bogus"),
        (["db", "partitions", "prune", "--bogus"], "No such option: --bogus"),
        (["db", "partitions", "policy", "--retention", "1 day"], "say which table"),
        # a quorum of more than five voters only slows elections; nothing is started
        (["stack", "up", "--brokers", "6"], "--brokers"),
    ],
    ids=[
        "unknown-command", "bad-sink", "negative-events", "unknown-option", "unknown-sub-option", "policy-no-table",
        "too-many-brokers",
    ],
)
def test_usage_error_prints_usage_and_exits_2(args, says):
    done = run_cli(*args, INSIGHTS_PG_DSN="postgresql://insights@127.0.0.1:1/none")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Usage: insights" in done.stderr
    assert f"Try 'insights" in done.stderr
    assert says in " ".join(done.stderr.replace("│", " ").split()), done.stderr


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"insights {version()}\n"
    assert version()[0].isdigit()


def test_shell_completion_is_enabled_and_completes_commands_and_options():
    done = run_cli("--help")
    assert "--install-completion" in done.stdout and "--show-completion" in done.stdout
    script = run_cli("--show-completion", "bash")
    assert script.returncode == 0 and "_INSIGHTS_COMPLETE=complete_bash" in script.stdout
    words = run_cli(COMP_WORDS="insights db parti", COMP_CWORD="2", _INSIGHTS_COMPLETE="complete_bash")
    assert words.stdout.split() == ["partitions"]
    options = run_cli(COMP_WORDS="insights produce scrape --create", COMP_CWORD="3", _INSIGHTS_COMPLETE="complete_bash")
    assert options.stdout.split() == ["--create-topics"]
