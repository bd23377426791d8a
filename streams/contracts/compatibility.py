"""Compatibility of a subject's versions with the ``avro`` package's reader/writer checker.

A subject's level (``subject.json``, FULL_TRANSITIVE by default) says which (reader,
writer) pairs must be compatible; the report holds the full matrix anyway, so a person
sees at a glance which versions read which, and a sentence for each required pair that
breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from streams.contracts.explain import sentence
from streams.serde.store import SchemaVersion, Subject


@dataclass(frozen=True)
class PairResult:
    reader: int
    writer: int
    explanations: tuple[str, ...]

    @property
    def compatible(self) -> bool:
        return not self.explanations


@dataclass
class SubjectReport:
    subject: str
    level: str
    versions: tuple[int, ...]
    pairs: dict[tuple[int, int], PairResult] = field(default_factory=dict)
    required: frozenset[tuple[int, int]] = frozenset()

    @property
    def breaks(self) -> list[PairResult]:
        return [self.pairs[p] for p in sorted(self.required) if not self.pairs[p].compatible]

    @property
    def ok(self) -> bool:
        return not self.breaks


def required_pairs(level: str, versions: tuple[int, ...]) -> frozenset[tuple[int, int]]:
    """(reader, writer) pairs a level promises, for a history of versions in order."""
    pairs: set[tuple[int, int]] = set()
    consecutive = list(zip(versions, versions[1:]))
    every = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1 :]]
    backward = {"BACKWARD": consecutive, "BACKWARD_TRANSITIVE": every, "FULL": consecutive, "FULL_TRANSITIVE": every}
    forward = {"FORWARD": consecutive, "FORWARD_TRANSITIVE": every, "FULL": consecutive, "FULL_TRANSITIVE": every}
    for old, new in backward.get(level, []):
        pairs.add((new, old))  # new code reads old data
    for old, new in forward.get(level, []):
        pairs.add((old, new))  # old code reads new data
    return frozenset(pairs)


@cache
def _avro_schema(text: str) -> avro.schema.Schema:
    return avro.schema.parse(text)


def check_pair(reader: SchemaVersion, writer: SchemaVersion) -> PairResult:
    result = ReaderWriterCompatibilityChecker().get_compatibility(_avro_schema(reader.text), _avro_schema(writer.text))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return PairResult(reader.version, writer.version, ())
    r_label, w_label = f"v{reader.version}", f"v{writer.version}"
    kinds = list(dict.fromkeys(result.incompatibilities))
    # "/" is the checker's placeholder location, meaningful only when it is the only one
    locations = sorted(result.locations - {"/"}) or ["/"]
    messages = sorted(result.messages)
    explanations: list[str] = []
    if len(kinds) == 1 and len(locations) == len(messages):
        # the checker's sets are aligned only when one kind of break occurred; sorting both
        # keeps field order for repeated breaks of that kind (messages name the fields)
        for location, message in zip(locations, messages):
            explanations.append(sentence(kinds[0], message, location, reader.raw, writer.raw, r_label, w_label))
    else:
        for location in locations:
            explanations.append(
                sentence(None, "; ".join(messages), location, reader.raw, writer.raw, r_label, w_label, kinds)
            )
    return PairResult(reader.version, writer.version, tuple(dict.fromkeys(explanations)))


def check_subject(subject: Subject) -> SubjectReport:
    numbers = tuple(v.version for v in subject.versions)
    report = SubjectReport(subject.name, subject.compatibility, numbers, required=required_pairs(subject.compatibility, numbers))
    for reader in subject.versions:
        for writer in subject.versions:
            if reader.version != writer.version:
                report.pairs[(reader.version, writer.version)] = check_pair(reader, writer)
    return report
