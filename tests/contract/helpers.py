"""Shared bits of the contract tests: the repository's schema store and copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from core.paths import REPO_ROOT
from streams.serde.store import SchemaStore

SCHEMAS = REPO_ROOT / "schemas" / "avro"
EXAMPLES = SCHEMAS / "examples"


def repo_store() -> SchemaStore:
    return SchemaStore(SCHEMAS)


def store_with(tmp: Path, subject: str, versions: list[int], extra: dict[int, Any] | None = None) -> SchemaStore:
    """A schema directory holding some of ``subject``'s versions (old code), plus extra ones."""
    folder = tmp / subject
    folder.mkdir(parents=True, exist_ok=True)
    for v in versions:
        shutil.copy(SCHEMAS / subject / f"v{v}.avsc", folder / f"v{v}.avsc")
    for v, schema in (extra or {}).items():
        (folder / f"v{v}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    return SchemaStore(tmp)


def golden_pairs() -> list[tuple[str, int]]:
    return sorted(
        (folder.name, int(path.stem[1:]))
        for folder in EXAMPLES.iterdir()
        if folder.is_dir()
        for path in folder.glob("v*.bin")
    )
