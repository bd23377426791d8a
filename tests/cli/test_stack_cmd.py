"""`insights stack up` prints the variables a user pastes into .env: each one whole on one
line however narrow the terminal (a TLS stack's DSN runs to ~150 characters)."""

from __future__ import annotations

import os

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.cli.helpers import run_cli
from tests.fix_services import Services

pytestmark = pytest.mark.integration


def test_stack_up_prints_each_variable_on_one_line_in_a_narrow_terminal(services: Services) -> None:
    # the running stack answers `stack up` at once (idempotent); COLUMNS narrower than any DSN
    done = run_cli("stack", "up", env={**os.environ, "COLUMNS": "30"}, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    dsn_lines = [line for line in lines if line.startswith("INSIGHTS_PG_DSN=")]
    assert len(dsn_lines) == 1, done.stdout
    dsn = dsn_lines[0].removeprefix("INSIGHTS_PG_DSN=")
    assert len(dsn) > 30
    assert conninfo_to_dict(dsn)["dbname"] == "insights", dsn
    bootstrap = next(line for line in lines if line.startswith("INSIGHTS_KAFKA_BOOTSTRAP_SERVERS="))
    assert bootstrap.split("=", 1)[1].count(":") >= 1
