"""Where the repository's own files are (the project is installed editable from its clone)."""

from __future__ import annotations

from pathlib import Path

#: The repository root, where ``ddl/``, ``schemas/avro/`` and ``stack/`` live.
REPO_ROOT = Path(__file__).resolve().parent.parent
DDL_DIR = REPO_ROOT / "ddl"
SCHEMAS_DIR = REPO_ROOT / "schemas" / "avro"
