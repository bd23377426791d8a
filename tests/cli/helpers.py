"""Run ``python -m insights`` as an operator would, and check what they would read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import ENV_PREFIX


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, stdin not a terminal (like cron or CI). ``env``: a full
    environment (e.g. ``child_env(settings)``); else this one without INSIGHTS_* variables."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env = {**env, **extra}
    return subprocess.run(
        [sys.executable, "-m", "insights", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def assert_one_line_error(
    done: subprocess.CompletedProcess[str], code: int, *fragments: str, after_progress: bool = False
) -> str:
    """Exit ``code``, no traceback anywhere, and the failure as one stderr line containing
    every fragment: the only line, or (``after_progress``) the last, after progress lines."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if after_progress:
        assert lines and not any(line.startswith("insights:") for line in lines[:-1]), done.stderr
    else:
        assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]
