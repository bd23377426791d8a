"""The layers of docs/architecture.md hold: imports point down, and nothing imports in a circle.

``insights > consumers > streams > core``: each package imports only those to its right.
The rules are import-linter contracts in pyproject.toml (``[tool.importlinter]``); these
tests run them on the repository, and on a copy of it with one deliberate violation each,
to show that the contracts do catch what they are meant to (a lazy import included).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.paths import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"
LAYERS = ["insights", "consumers", "streams", "core"]


def _config() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on the packages under ``root`` with ``root``'s pyproject.toml.

    A subprocess whose working directory is ``root``: the packages found first on its
    sys.path are the ones under ``root`` (the editable install's finder comes after).
    """
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            str(root / "pyproject.toml"),
            "--no-cache",
            "--no-logo",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_keeps_every_import_contract() -> None:
    result = lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    names = [c["name"] for c in _config()["tool"]["importlinter"]["contracts"]]
    for name in names:
        assert f"{name} KEPT" in result.stdout, result.stdout


def test_the_contracts_cover_every_package_in_the_layer_order() -> None:
    config = _config()
    linter = config["tool"]["importlinter"]
    packaged = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    # a new top-level package must be given a place in the layers, not slip past them
    assert set(linter["root_packages"]) == packaged == set(LAYERS)
    by_id = {c["id"]: c for c in linter["contracts"]}
    assert by_id["layers"]["type"] == "layers"
    assert by_id["layers"]["layers"] == LAYERS
    assert by_id["acyclic"]["type"] == "acyclic_siblings"
    assert set(by_id["acyclic"]["ancestors"]) == set(LAYERS)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four packages and pyproject.toml, copied (sources only)."""
    root = tmp_path_factory.mktemp("layers")
    for package in LAYERS:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, root / "pyproject.toml")
    return root


@pytest.fixture()
def probe(copy: Path):  # type: ignore[no-untyped-def]
    """Write one extra module (or append to one) in the copy; undone after the test."""
    undo: list[tuple[Path, str | None]] = []

    def write(relative: str, source: str, append: bool = False) -> None:
        path = copy / relative
        before = path.read_text() if path.exists() else None
        undo.append((path, before))
        path.write_text((before or "") + source if append else source)

    yield write
    for path, before in reversed(undo):
        if before is None:
            path.unlink()
        else:
            path.write_text(before)


def test_an_unchanged_copy_passes(copy: Path) -> None:
    # the control for the tests below: the copy itself is clean, so each failure is the probe's
    result = lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_base_layer_module_importing_streams_fails(copy: Path, probe) -> None:  # type: ignore[no-untyped-def]
    probe("core/_probe.py", "from streams.topics import TopicSpec\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "Layers point down: insights > consumers > streams > core BROKEN" in result.stdout
    assert "core is not allowed to import streams" in result.stdout
    assert "core._probe -> streams.topics" in result.stdout


def test_a_lazy_back_import_inside_a_function_fails(copy: Path, probe) -> None:  # type: ignore[no-untyped-def]
    # what streams/consumer/loop.py once did to reach insights.db.partitions
    probe("streams/_probe.py", "def ensure():\n    from insights.db import partitions\n\n    return partitions\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "streams is not allowed to import insights" in result.stdout
    assert "streams._probe -> insights.db.partitions" in result.stdout


def test_a_sink_importing_the_application_fails(copy: Path, probe) -> None:  # type: ignore[no-untyped-def]
    probe("consumers/_probe.py", "import insights.status\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "consumers is not allowed to import insights" in result.stdout


def test_an_import_circle_inside_streams_fails(copy: Path, probe) -> None:  # type: ignore[no-untyped-def]
    # the circle topics.py once closed through the CDC package (streams.cdc imports streams.topics)
    probe("streams/topics.py", "\n\ndef _tables():\n    from streams.cdc import slot\n\n    return slot\n", append=True)
    result = lint(copy)
    assert result.returncode != 0
    assert "No import circles between sibling packages/modules BROKEN" in result.stdout
    assert "No cycles are allowed in streams" in result.stdout
    # the layers themselves are still fine: it is the circle that is reported
    assert "Layers point down: insights > consumers > streams > core KEPT" in result.stdout


def test_the_consumer_path_importing_the_cdc_reader_fails(copy: Path, probe) -> None:  # type: ignore[no-untyped-def]
    probe("streams/consumer/_probe.py", "from streams.cdc.lsn import format_lsn\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "The consumer write path and the CDC reader are independent BROKEN" in result.stdout
    assert "streams.consumer is not allowed to import streams.cdc" in result.stdout


def test_nothing_below_the_application_loads_settings() -> None:
    # settings are read once at the entry point and passed down (docs/architecture.md)
    offenders = []
    for package in ("core", "streams", "consumers"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path == REPO_ROOT / "core" / "settings.py":
                continue  # where load_settings is defined
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
                if name == "load_settings" or (
                    isinstance(node, ast.ImportFrom) and any(a.name == "load_settings" for a in node.names)
                ):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert offenders == []


#: files the doc names before they exist (another branch adds them). A trip-wire, not a
#: skip: once one is in the tree the test below fails until it is taken off this list,
#: which is the moment to read docs/architecture.md against what landed.
PLANNED: set[str] = set()


def test_the_architecture_doc_names_files_that_exist() -> None:
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    # every path into the four packages, in the text and in the diagrams' labels
    full = set(re.findall(r"\b(?:core|streams|consumers|insights)/[\w./]*", doc))
    assert len(full) > 30, "the doc should name the files of both data paths"
    landed = sorted(p for p in PLANNED if (REPO_ROOT / p).exists())
    assert landed == [], "now in the tree: take them off PLANNED and check the doc against them"
    missing = sorted(p for p in full - PLANNED if not (REPO_ROOT / p).exists())
    # short `dir/` or `dir/file.py` mentions in the layer table are relative to their package
    short = set(re.findall(r"`([a-z_]+/(?:[\w.]+\.py)?)`", doc)) - full
    missing += sorted(p for p in short if not any((REPO_ROOT / pkg / p).exists() for pkg in ["", *LAYERS]))
    assert missing == [], "docs/architecture.md names files that are not in the tree"
