"""deploy/: the systemd units and Kubernetes manifests run real commands with real settings.

Nothing here can start a unit or a pod, so each file is checked for what would make it
fail in production: a command or option the CLI does not have, a setting name that does
not exist, a secret outside a secret, a reference to a file, ConfigMap key or Secret key
that is not there, a probe on a port nothing serves, a schedule that is not the one
documented. `systemd-analyze verify` checks the units as systemd reads them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from core.paths import REPO_ROOT
from core.settings import CONCERNS, env_name, load_settings

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
ENV_EXAMPLES = SYSTEMD / "env"
K8S = REPO_ROOT / "deploy" / "k8s"
INSTALL_ROOT = "/opt/insights"  # where docs/operations.md installs the clone
INSIGHTS_BIN = f"{INSTALL_ROOT}/.venv/bin/insights"
SINKS = {"scrape", "alerts", "summaries", "rules", "competitive"}

SETTING_NAMES = {env_name(concern, field) for concern in CONCERNS.values() for field in concern.model_fields}


# --- the CLI as the units and pods call it --------------------------------------------------
@functools.cache
def cli_help(args: tuple[str, ...]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `insights ARGS --help`, run in this process.

    --help after the real arguments: the command path and every option name must exist,
    else the CLI stops with a usage error before printing help. In-process through the
    installed entry point (what the units and pods run): a subprocess per command costs
    seconds of imports on a loaded machine.
    """
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="insights")
    main = entry.load()
    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["insights", *args, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception as exc:  # what a usage error may end in today: not accepted either
                code = 1
                err.write(f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
    return code, out.getvalue(), err.getvalue()


def sink_choices(help_text: str) -> set[str]:
    """The ``<a|b|c>`` choices of the sink argument, joined again where rich folded them
    inside their cell (at 80 columns, with four sinks, it does)."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        found = re.search(r"\bsink\s+(<\S*)", line)
        if found is None:
            continue
        column, text = found.start(1), found.group(1)
        for following in lines[i + 1:]:
            if text.endswith(">") or not following[column:].strip():
                break
            text += following[column:].split()[0]
        return set(text.strip("<>").split("|")) if text.endswith(">") else set()
    return set()


def check_cli(args: list[str]) -> None:
    code, _, err = cli_help(tuple(args))
    assert code == 0, f"`insights {' '.join(args)}` is not a command line the CLI accepts: {err[-500:]}"
    if args[:1] == ["consume"]:
        # --help does not validate argument values: the sink is checked against the
        # choices the CLI itself lists
        choices = sink_choices(cli_help(("consume",))[1])
        assert choices, "consume --help lists no sink choices"
        assert args[1] in choices, args
    for option, value in zip(args, args[1:]):
        if option == "--metrics-port":
            assert 0 <= int(value) <= 65535


def test_the_cli_check_refuses_what_the_cli_refuses():
    for wrong in (["cdc", "runn"], ["consume", "scrape", "--no-such-option", "1"], ["db", "maintian"]):
        with pytest.raises(AssertionError, match="not a command line"):
            check_cli(wrong)
    with pytest.raises(AssertionError):
        check_cli(["consume", "nosuchsink"])


# --- systemd --------------------------------------------------------------------------------
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys such as EnvironmentFile= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= expected once, found {values}"
    return values[0]


def expand_specifiers(text: str, instance: str) -> str:
    """systemd's %i/%I and %% (the only specifiers these units use), then $$ -> $."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            spec = text[i + 1]
            assert spec in "iI%", f"specifier %{spec} not handled by this test"
            out.append("%" if spec == "%" else instance)
            i += 2
        elif text[i] == "$":
            # a single $ would be systemd's own environment substitution: none is used
            assert text[i + 1] == "$", f"unescaped $ in {text!r}"
            out.append("$")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def exec_start(unit: dict[str, dict[str, list[str]]], instance: str, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """(environment set on the command line, insights arguments) of ExecStart= for one instance."""
    argv = shlex.split(expand_specifiers(one(unit, "Service", "ExecStart"), instance))
    env: dict[str, str] = {}
    if argv[:2] == ["/bin/sh", "-c"]:
        # run the unit's own shell code with a stand-in for insights that prints its argv
        stub = tmp_path / "insights-stub"
        stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
        stub.chmod(0o755)
        script = argv[2].replace(INSIGHTS_BIN, str(stub))
        assert script != argv[2], "the shell code does not exec insights"
        done = subprocess.run(["/bin/sh", "-c", script, *argv[3:]], capture_output=True, text=True, timeout=10, check=True)
        return env, json.loads(done.stdout)
    if argv[0] == "/usr/bin/env":
        argv = argv[1:]
        while "=" in argv[0]:
            name, _, value = argv.pop(0).partition("=")
            env[name] = value
    assert argv[0] == INSIGHTS_BIN, argv
    return env, argv[1:]


UNITS = {p.name: parse_unit(p) for p in sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer"))}
LONG_RUNNING = ["insights-consume@.service", "insights-cdc@.service"]
SCHEDULED = {"insights-summaries-sweep.timer": "minutely", "insights-db-maintain.timer": "*-*-* 03:30:00"}


def test_the_expected_units_are_there():
    assert set(UNITS) == {*LONG_RUNNING, *SCHEDULED, *(t.replace(".timer", ".service") for t in SCHEDULED)}


@pytest.mark.parametrize(
    "instance, args",
    [
        ("scrape:9471", ["consume", "scrape", "--metrics-port", "9471"]),
        ("alerts:9473", ["consume", "alerts", "--metrics-port", "9473"]),
        ("summaries:9474", ["consume", "summaries", "--metrics-port", "9474"]),
    ],
)
def test_a_consumer_instance_name_gives_its_sink_and_port(instance, args, tmp_path):
    env, got = exec_start(UNITS["insights-consume@.service"], instance, tmp_path)
    assert (env, got) == ({}, args)
    check_cli(got)


def test_cdc_instances_run_the_reader_on_their_own_port(tmp_path):
    unit = UNITS["insights-cdc@.service"]
    for port in ("9481", "9482"):
        env, args = exec_start(unit, port, tmp_path)
        assert env == {"INSIGHTS_METRICS_PORT": port}
        assert args == ["cdc", "run"]
    assert "INSIGHTS_METRICS_PORT" in SETTING_NAMES
    check_cli(args)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_services_restart_on_failure_within_a_start_limit(name):
    unit = UNITS[name]
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 2
    assert int(one(unit, "Unit", "StartLimitIntervalSec")) >= 60
    # a configuration error (exit 2) is not retried in a loop
    assert "2" in one(unit, "Service", "RestartPreventExitStatus").split()
    # long enough for the graceful stop (finish and commit the batch in hand)
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 30
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("timer, calendar", SCHEDULED.items())
def test_timers_start_a_oneshot_service_on_the_documented_schedule(timer, calendar, tmp_path):
    unit = UNITS[timer]
    assert one(unit, "Timer", "OnCalendar") == calendar
    service = UNITS[one(unit, "Timer", "Unit")]
    assert one(service, "Service", "Type") == "oneshot"
    _, args = exec_start(service, "", tmp_path)
    assert args == {"insights-summaries-sweep.timer": ["summaries", "sweep"],
                    "insights-db-maintain.timer": ["db", "maintain"]}[timer]
    check_cli(args)


def env_file_lines(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r}"
            values[name] = value
    return values


ROLE_OF_UNIT = {
    "insights-consume@.service": "insights_ingest",
    "insights-cdc@.service": "insights_cdc",
    "insights-summaries-sweep.service": "insights",
    "insights-db-maintain.service": "insights",
}


@pytest.mark.parametrize("name", sorted(ROLE_OF_UNIT))
def test_services_run_unprivileged_with_settings_from_root_only_files(name, monkeypatch, tmp_path):
    unit = UNITS[name]
    assert one(unit, "Service", "User") not in {"root", "0"}
    # no .env from a working directory: settings come from the environment files only
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/insights"
    files = unit["Service"]["EnvironmentFile"]
    assert files[0] == "/etc/insights/insights.env"
    required = [f for f in files if not f.startswith("-")]
    pg_files = [f for f in required if Path(f).name.startswith("pg-")]
    assert len(pg_files) == 1, files
    env: dict[str, str] = {}
    for entry in files:
        example = ENV_EXAMPLES / Path(entry.lstrip("-")).name
        if "%i" in entry:
            continue  # the per-instance override, checked below
        assert example.exists(), f"{entry} has no example in deploy/systemd/env/"
        env.update(env_file_lines(example))
    # the database role matches the service's needs (least privilege)
    assert conninfo_to_dict(env["INSIGHTS_PG_DSN"])["user"] == ROLE_OF_UNIT[name]
    # the examples are settings this version reads and accepts
    monkeypatch.chdir(tmp_path)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.pg.password is not None and settings.kafka.bootstrap_servers == env["INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"]


def test_env_examples_name_real_settings_and_keep_secrets_in_root_only_files():
    for path in sorted(ENV_EXAMPLES.glob("*.env")):
        values = env_file_lines(path)
        assert values, path.name
        unknown = set(values) - SETTING_NAMES
        assert unknown == set(), f"{path.name}: not settings: {unknown}"
        secret = any("PASSWORD" in name for name in values)
        header = path.read_text().splitlines()[0]
        assert header.startswith("# /etc/insights/"), header
        # the file says where it goes and with which mode: 0600 whenever it holds a secret
        assert ("0600" in header) == secret, f"{path.name}: {header}"
        assert all(v == "CHANGE-ME" for n, v in values.items() if "PASSWORD" in n), path.name
    shared = env_file_lines(ENV_EXAMPLES / "insights.env")
    # each instance sets its own port; one here would collide or be overridden
    assert "INSIGHTS_METRICS_PORT" not in shared


def test_the_summaries_instance_override_gives_the_owner_role():
    values = env_file_lines(ENV_EXAMPLES / "consume-summaries-instance.env")
    assert conninfo_to_dict(values["INSIGHTS_PG_DSN"])["user"] == "insights"
    assert "EnvironmentFile" in UNITS["insights-consume@.service"]["Service"]
    assert "-/etc/insights/consume-%i.env" in UNITS["insights-consume@.service"]["Service"]["EnvironmentFile"]


def test_systemd_analyze_verifies_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed here; the parsing tests above still ran")
    # the units as installed, with /opt/insights pointing at this clone and its venv so
    # that verify can check that every ExecStart= program exists
    for path in sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer")):
        text = path.read_text().replace(INSIGHTS_BIN, str(Path(sys.executable).parent / "insights"))
        (tmp_path / path.name).write_text(text.replace(INSTALL_ROOT, str(REPO_ROOT)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    for calendar in SCHEDULED.values():
        check = subprocess.run([analyze, "calendar", calendar], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and "Next elapse" in check.stdout, check.stderr


# --- Kubernetes -----------------------------------------------------------------------------
def k8s_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
APPLIED = [doc for name in KUSTOMIZATION["resources"] for doc in k8s_docs(name)]
NOT_APPLIED = {"secrets.example.yaml", "setup-job.yaml"}  # applied by hand, docs/operations.md
SECRETS = {d["metadata"]["name"]: d for d in k8s_docs("secrets.example.yaml")}
(SETUP_JOB,) = k8s_docs("setup-job.yaml")
CONFIGMAPS = {d["metadata"]["name"]: d for d in APPLIED if d["kind"] == "ConfigMap"}
DEPLOYMENTS = {d["metadata"]["name"]: d for d in APPLIED if d["kind"] == "Deployment"}
CRONJOBS = {d["metadata"]["name"]: d for d in APPLIED if d["kind"] == "CronJob"}


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def container(doc: dict) -> dict:
    (only,) = pod_spec(doc)["containers"]
    return only


def all_containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def test_every_manifest_is_applied_except_the_secret_example():
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk - NOT_APPLIED
    for doc in APPLIED + list(SECRETS.values()) + [SETUP_JOB]:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert set(SECRETS) == {"insights-pg", "insights-kafka"}
    assert all(d["kind"] == "Secret" for d in SECRETS.values())


def test_workloads_run_real_commands(tmp_path):
    workloads = {**DEPLOYMENTS, **CRONJOBS}
    assert workloads
    for name, doc in workloads.items():
        command = container(doc)["command"]
        assert command[0] == "insights", name
        check_cli(command[1:])
    sinks = {container(d)["command"][2] for d in DEPLOYMENTS.values() if container(d)["command"][1] == "consume"}
    assert sinks == SINKS


def test_the_setup_job_runs_the_one_time_steps_in_order():
    commands = [c["command"] for c in all_containers(SETUP_JOB)]
    assert commands == [
        ["insights", "db", "migrate"],
        ["insights", "db", "passwords"],
        ["insights", "topics", "create"],
        ["insights", "cdc", "setup"],
    ]
    for command in commands:
        check_cli(command[1:])
    # `db passwords` sets the service roles' passwords from the same Secret they log in with
    passwords = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in all_containers(SETUP_JOB)[1]["env"]
        if "secretKeyRef" in e["valueFrom"]
    }
    assert passwords["INSIGHTS_PG_INGEST_PASSWORD"] == "ingest-password"
    assert passwords["INSIGHTS_PG_CDC_PASSWORD"] == "cdc-password"
    assert pod_spec(SETUP_JOB)["restartPolicy"] == "Never"


def test_consumers_and_the_cdc_reader_with_its_standby():
    for name, doc in DEPLOYMENTS.items():
        spec = doc["spec"]
        assert spec["replicas"] >= 2, name
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        assert pod_spec(doc)["terminationGracePeriodSeconds"] >= 30, name
    cdc = DEPLOYMENTS["insights-cdc"]
    assert container(cdc)["command"] == ["insights", "cdc", "run"]
    # the active reader and one hot standby waiting for the slot; an update replaces one
    # pod at a time and never runs a third
    assert cdc["spec"]["replicas"] == 2
    assert cdc["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_probes_ask_healthz_on_the_port_the_process_serves():
    port = int(CONFIGMAPS["insights-env"]["data"]["INSIGHTS_METRICS_PORT"])
    for name, doc in DEPLOYMENTS.items():
        c = container(doc)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] == "/healthz", (name, probe)
            assert ports[get["port"]] == port, (name, probe)
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port


def test_cronjobs_schedule_the_sweep_every_minute_and_maintenance_nightly():
    sweep, maintain = CRONJOBS["insights-summaries-sweep"], CRONJOBS["insights-db-maintain"]
    assert container(sweep)["command"] == ["insights", "summaries", "sweep"]
    assert sweep["spec"]["schedule"] == "* * * * *"
    assert container(maintain)["command"] == ["insights", "db", "maintain"]
    minute, hour, *rest = maintain["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"]
    for doc in CRONJOBS.values():
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        assert pod_spec(doc)["restartPolicy"] in {"Never", "OnFailure"}


ROLE_OF_WORKLOAD = {
    "insights-consume-scrape": "insights_ingest",
    "insights-consume-alerts": "insights_ingest",
    "insights-consume-summaries": "insights",
    "insights-consume-rules": "insights",
    "insights-consume-competitive": "insights",
    "insights-cdc": "insights_cdc",
    "insights-summaries-sweep": "insights",
    "insights-db-maintain": "insights",
    "insights-setup": "insights",
}


def test_settings_come_from_configmaps_and_secrets_that_exist(monkeypatch, tmp_path):
    workloads = {**DEPLOYMENTS, **CRONJOBS, "insights-setup": SETUP_JOB}
    assert set(ROLE_OF_WORKLOAD) == set(workloads)
    shared = CONFIGMAPS["insights-env"]["data"]
    assert set(shared) <= SETTING_NAMES, set(shared) - SETTING_NAMES
    assert not [k for k in shared if "PASSWORD" in k]
    monkeypatch.chdir(tmp_path)
    for name, doc, c in [(n, d, c) for n, d in workloads.items() for c in all_containers(d)]:
        assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["insights-env"]
        env: dict[str, str] = dict(shared)
        for var in c["env"]:
            assert var["name"] in SETTING_NAMES, var["name"]
            source = var["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["key"] in SECRETS[ref["name"]]["stringData"], (name, ref)
                env[var["name"]] = SECRETS[ref["name"]]["stringData"][ref["key"]]
            else:
                # a password never comes from anything but a Secret
                assert "PASSWORD" not in var["name"], (name, var)
                ref = source["configMapKeyRef"]
                env[var["name"]] = CONFIGMAPS[ref["name"]]["data"][ref["key"]]
        assert conninfo_to_dict(env["INSIGHTS_PG_DSN"])["user"] == ROLE_OF_WORKLOAD[name], name
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = load_settings()
        assert settings.pg.password is not None and settings.service.metrics_port == 9464
        for variable in env:
            monkeypatch.delenv(variable)


def test_operations_doc_covers_every_unit_and_manifest():
    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    stems = {p.name.split("@")[0].removesuffix(".service").removesuffix(".timer") for p in SYSTEMD.glob("insights-*")}
    missing = sorted(s for s in stems if s not in doc)
    missing += sorted(p.name for p in ENV_EXAMPLES.glob("*.env") if p.name.removesuffix(".env") not in doc)
    missing += sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml" and p.name not in doc
                      and not any(d.get("metadata", {}).get("name", "") in doc for d in k8s_docs(p.name)))
    assert missing == []
