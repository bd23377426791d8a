"""`insights status` after `make demo` exits 0 (issue 10): the demo's own poison records,
its CDC slot (idle once the demo ends) and its downstream consumers leave nothing that
status grades as a warning or a failure.

The demo runs on this session's local stack (`insights demo` starts it if needed, and uses
the default `insights` database and topic prefix, as `make demo` does)."""

from __future__ import annotations

import json
import os

import pytest

from core.settings import ENV_PREFIX
from tests.cli.helpers import run_cli
from tests.fix_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def test_status_after_the_demo_exits_0(services: Services) -> None:
    # the stack this session uses (INSIGHTS_STACK_*), nothing else of the test run's settings:
    # the demo and status see what `make demo` and an operator would
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k.startswith(f"{ENV_PREFIX}STACK_")}
    demo = run_cli("demo", env=env, timeout=800)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo finished" in demo.stdout + demo.stderr
    status = run_cli("status", "--json", env=env, timeout=120)
    report = json.loads(status.stdout)
    not_ok = [f"{c['area']} {c['name']}: {c['state']} ({c['reason']})" for c in report["checks"] if c["state"] != "ok"]
    assert status.returncode == 0 and not not_ok, "\n".join(not_ok) or status.stderr
