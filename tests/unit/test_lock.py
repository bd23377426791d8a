"""requirements.lock agrees with pyproject.toml, and this venv holds exactly the lock.

The lock is what `scripts/bootstrap.sh` installs (`pip install --require-hashes`), so a
fresh clone gets these versions and bytes. When pyproject.toml changes, `make lock`
regenerates it; these tests say so when someone forgot.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from core.paths import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
PYPROJECT = REPO_ROOT / "pyproject.toml"
FIX = "run `make lock` and commit requirements.lock"


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def parse_lock(text: str) -> dict[str, Pin]:
    # pip's requirements format: a requirement and its --hash options on one logical
    # line continued with backslashes; comments ("# via ...") on lines of their own
    logical = re.sub(r"\\\n", " ", text)
    pins: dict[str, Pin] = {}
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hashes = tuple(re.findall(r"--hash=(\S+)", line))
        spec = re.sub(r"--hash=\S+", "", line).strip()
        req = Requirement(spec)
        assert len(req.specifier) == 1, f"not an exact pin: {spec}"
        (only,) = req.specifier
        assert only.operator == "==", f"not an exact pin: {spec}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} pinned twice in the lock"
        pins[name] = Pin(name, Version(only.version), req.marker, hashes)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared.extend(extra)
    return [Requirement(r) for r in declared]


@pytest.fixture(scope="module")
def pins() -> dict[str, Pin]:
    return parse_lock(LOCK.read_text())


def test_the_parser_reads_markers_hashes_and_refuses_ranges():
    text = (
        "# header\n"
        "typer==0.29.2 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\n"
        "pywin32==312 ; sys_platform == 'win32' \\\n    --hash=sha256:cc\n"
    )
    parsed = parse_lock(text)
    assert parsed["typer"].version == Version("0.29.2")
    assert parsed["typer"].hashes == ("sha256:aa", "sha256:bb")
    assert parsed["pywin32"].marker == Marker("sys_platform == 'win32'")
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("typer>=0.12 \\\n    --hash=sha256:aa\n")


def test_every_pin_is_exact_and_hashed(pins):
    assert len(pins) > 20
    unhashed = [p.name for p in pins.values() if not p.hashes]
    assert unhashed == []
    for pin in pins.values():
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in pin.hashes), pin.name


def test_every_declared_dependency_is_locked_within_its_specifier(pins):
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in the lock: {FIX}"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"the lock pins {name}=={pins[name].version}, outside pyproject.toml's {req}: {FIX}"
        )


def test_the_lock_is_closed_under_dependencies(pins):
    """Every dependency of a locked package (with the extras asked for) is locked too.

    `pip install --require-hashes` refuses an unhashed, unlocked dependency, so a gap
    here breaks a fresh clone's install; the metadata comes from this venv.
    """
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in project_requirements()]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} is declared but not installed in this venv: {FIX}")
        for raw in requires:
            dep = Requirement(raw)
            if dep.marker and not any(dep.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            dep_name = canonicalize_name(dep.name)
            assert dep_name in pins, f"{dep_name} (needed by {name}) is not in the lock: {FIX}"
            assert dep.specifier.contains(pins[dep_name].version, prereleases=True), (
                f"{name} needs {dep}, the lock pins {pins[dep_name].version}: {FIX}"
            )
            todo.append((dep_name, frozenset(dep.extras)))
    # the walk reached every pin that applies here: the lock carries nothing stale
    reached = {name for name, _ in seen}
    stale = sorted(p.name for p in pins.values() if p.applies() and p.name not in reached)
    assert stale == [], f"locked but needed by nothing in pyproject.toml: {stale}: {FIX}"


def test_this_venv_holds_exactly_the_locked_versions(pins):
    # what a fresh clone gets from scripts/bootstrap.sh: if this fails, run `make install`
    wrong = {}
    for pin in pins.values():
        if not pin.applies():
            continue
        try:
            installed = Version(importlib.metadata.version(pin.name))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong[pin.name] = (str(pin.version), str(installed) if installed else "missing")
    assert wrong == {}, f"(locked, installed): {wrong}"


def test_the_lock_names_its_regeneration_command():
    assert "make lock" in LOCK.read_text().split("\n", 3)[1]
