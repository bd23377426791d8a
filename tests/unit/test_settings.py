"""Settings: defaults work with no configuration; bad input is one clear line, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.errors import ConfigError
from core.settings import load_settings


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "insights", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_defaults_point_at_the_local_stack(monkeypatch):
    for key in list(os.environ):
        if key.startswith("INSIGHTS_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:59092"
    assert "55432" in settings.pg.dsn
    assert settings.kafka.topic("events.x") == "insights.events.x"


def test_malformed_setting_is_one_line_exit_2_no_traceback():
    done = run_cli("stack", "status", INSIGHTS_BATCH_SIZE="lots")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "INSIGHTS_BATCH_SIZE" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_malformed_json_override_names_the_variable():
    done = run_cli("stack", "status", INSIGHTS_KAFKA_OVERRIDES="{not json")
    assert done.returncode == 2
    assert "INSIGHTS_KAFKA_OVERRIDES" in done.stderr
    assert "Traceback" not in done.stderr


def test_password_never_printed_and_folded_into_conninfo(monkeypatch):
    monkeypatch.setenv("INSIGHTS_PG_PASSWORD", "s3cr3t-value")
    settings = load_settings()
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.model_dump())
    assert "password=s3cr3t-value" in settings.pg.conninfo()


def test_password_inside_dsn_is_refused():
    with pytest.raises(ConfigError, match="INSIGHTS_PG_DSN"):
        load_settings(pg_dsn="postgresql://u:pw@127.0.0.1:5432/db")


def test_kafka_client_overrides_apply_last(monkeypatch):
    monkeypatch.setenv("INSIGHTS_KAFKA_OVERRIDES", '{"client.id": "x", "bootstrap.servers": "h:1"}')
    monkeypatch.setenv("INSIGHTS_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("INSIGHTS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    conf = load_settings().kafka.client_config()
    assert conf["client.id"] == "x"
    assert conf["bootstrap.servers"] == "h:1"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.password"] == "pw"


def test_every_command_group_has_help():
    done = run_cli("--help")
    assert done.returncode == 0
    groups = [g for g in ("stack", "db", "topics", "consume", "cdc", "replay", "schemas", "produce", "status")
              if f" {g} " in done.stdout]
    assert "stack" in groups
    for group in groups:
        sub = run_cli(group, "--help")
        assert sub.returncode == 0, (group, sub.stderr)
        assert "Usage" in sub.stdout


def test_readme_documents_every_setting():
    from core.paths import REPO_ROOT
    from core.settings import CONCERNS, env_name

    readme = (REPO_ROOT / "README.md").read_text()
    variables = [env_name(concern, field) for concern in CONCERNS.values() for field in concern.model_fields]
    assert "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS" in variables and "INSIGHTS_BATCH_SIZE" in variables
    missing = [name for name in variables if f"`{name}`" not in readme]
    assert missing == [], f"README configuration table lacks {missing}"


def test_to_env_round_trips_through_the_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith("INSIGHTS_"):
            monkeypatch.delenv(key)
    original = load_settings(
        pg_password="s3cret", kafka_overrides={"client.id": "x"}, cdc_tables=["products"], log_json=True,
        batch_size=7,
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again == original
    assert again.pg.password.get_secret_value() == "s3cret"
