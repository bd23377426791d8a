"""The local schema store: every ``schemas/avro/<subject>/vN.avsc``, parsed once.

Subjects are discovered, not listed: any folder holding at least one ``vN.avsc`` is a
subject (so a new one, e.g. ``cdc_change``, needs no code change). A subject may carry a
``subject.json`` with its compatibility level; FULL_TRANSITIVE when absent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from core.errors import ConfigError

VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")
DEFAULT_COMPATIBILITY = "FULL_TRANSITIVE"
COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


class SchemaStoreError(ConfigError):
    """A schema file is missing, malformed or not valid Avro."""


def crc64_fingerprint(schema: Any) -> bytes:
    """The 8-byte CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form,
    in the little-endian byte order single-object encoding puts on the wire."""
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    path: Path
    #: the schema as written in the file (for registries, docs and the compatibility checker)
    raw: dict[str, Any] = field(repr=False)
    #: fastavro's parsed form, what the readers and writers use
    parsed: Any = field(repr=False)
    fingerprint: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"))

    @property
    def label(self) -> str:
        return f"{self.subject} v{self.version}"


@dataclass(frozen=True)
class Subject:
    name: str
    versions: tuple[SchemaVersion, ...]
    compatibility: str = DEFAULT_COMPATIBILITY

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    def version(self, number: int) -> SchemaVersion:
        for candidate in self.versions:
            if candidate.version == number:
                return candidate
        known = ", ".join(f"v{v.version}" for v in self.versions)
        raise SchemaStoreError(f"subject {self.name} has no version v{number} (it has {known})")


def _load_version(subject: str, number: int, path: Path) -> SchemaVersion:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaStoreError(f"{path}: not readable JSON: {exc}") from None
    try:
        # strict: unknown logical types, bad defaults and misspelt types are errors here,
        # not surprises on the first record
        parsed = fastavro.parse_schema(raw, _write_hint=True, _force=True)
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, ...
        raise SchemaStoreError(f"{path}: not a valid Avro schema: {exc}") from None
    return SchemaVersion(subject, number, path, raw, parsed, crc64_fingerprint(raw))


def _load_subject(folder: Path) -> Subject | None:
    numbered = []
    for path in folder.iterdir():
        match = VERSION_FILE.match(path.name)
        if match and path.is_file():
            numbered.append((int(match.group(1)), path))
    if not numbered:
        return None
    numbered.sort()
    expected = list(range(1, len(numbered) + 1))
    if [n for n, _ in numbered] != expected:
        found = ", ".join(f"v{n}" for n, _ in numbered)
        raise SchemaStoreError(f"{folder}: versions must be v1..vN without gaps, found {found}")
    compatibility = DEFAULT_COMPATIBILITY
    config = folder / "subject.json"
    if config.exists():
        try:
            compatibility = str(json.loads(config.read_text(encoding="utf-8")).get("compatibility", compatibility))
        except ValueError as exc:
            raise SchemaStoreError(f"{config}: not JSON: {exc}") from None
        if compatibility not in COMPATIBILITY_LEVELS:
            raise SchemaStoreError(
                f"{config}: compatibility {compatibility!r} is not one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
    versions = tuple(_load_version(folder.name, n, path) for n, path in numbered)
    return Subject(folder.name, versions, compatibility)


class SchemaStore:
    """All subjects of one schemas directory, with a fingerprint index over every version."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SchemaStoreError(f"schema directory {root} does not exist")
        self.root = root
        subjects = (_load_subject(folder) for folder in sorted(root.iterdir()) if folder.is_dir())
        self.subjects: dict[str, Subject] = {s.name: s for s in subjects if s is not None}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for subject in self.subjects.values():
            for version in subject.versions:
                self.by_fingerprint.setdefault(version.fingerprint, version)

    def subject(self, name: str) -> Subject:
        try:
            return self.subjects[name]
        except KeyError:
            known = ", ".join(self.subjects) or "none"
            raise SchemaStoreError(f"unknown subject {name!r} in {self.root} (known: {known})") from None


@lru_cache(maxsize=8)
def load_store(root: Path) -> SchemaStore:
    """The store of a directory, parsed once per process."""
    return SchemaStore(root)
