"""Golden payloads: they validate, round-trip byte for byte, and every version reads every other's."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import schemaless_reader, schemaless_writer

from core.events import MODELS
from streams.serde.resolution import apply_fill, plan
from tests.contract.helpers import EXAMPLES, golden_pairs, repo_store

GOLDEN = golden_pairs()


def _golden(subject: str, version: int) -> tuple[dict, bytes]:
    folder = EXAMPLES / subject
    return json.loads((folder / f"v{version}.json").read_text(encoding="utf-8")), (folder / f"v{version}.bin").read_bytes()


def test_every_version_of_every_event_subject_has_a_golden_example() -> None:
    store = repo_store()
    expected = sorted((name, v.version) for name in MODELS for v in store.subject(name).versions)
    assert GOLDEN == expected


@pytest.mark.parametrize(("subject", "version"), GOLDEN)
def test_golden_json_validates_and_encodes_to_the_golden_bytes(subject: str, version: int) -> None:
    document, golden = _golden(subject, version)
    event = MODELS[subject].model_validate(document)
    schema = repo_store().subject(subject).version(version)
    out = io.BytesIO()
    schemaless_writer(out, schema.parsed, event.to_avro())
    assert out.getvalue() == golden


@pytest.mark.parametrize(("subject", "version"), GOLDEN)
def test_golden_bytes_decode_and_reencode_byte_for_byte(subject: str, version: int) -> None:
    document, golden = _golden(subject, version)
    schema = repo_store().subject(subject).version(version).parsed
    record = schemaless_reader(io.BytesIO(golden), schema, None)
    assert MODELS[subject].from_avro(record) == MODELS[subject].model_validate(document)
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    assert out.getvalue() == golden


PAIRS = [
    (subject, reader.version, writer)
    for subject, writer in GOLDEN
    for reader in repo_store().subject(subject).versions
    if reader.version != writer
]


@pytest.mark.parametrize(("subject", "reader_version", "writer_version"), PAIRS)
def test_every_version_reads_every_other_versions_golden_data(subject: str, reader_version: int, writer_version: int) -> None:
    document, golden = _golden(subject, writer_version)
    store = repo_store().subject(subject)
    reader, writer = store.version(reader_version), store.version(writer_version)
    record = schemaless_reader(io.BytesIO(golden), writer.parsed, reader.parsed)
    reader_fields = {f["name"]: f for f in reader.raw["fields"]}
    assert set(record) == set(reader_fields)
    written = MODELS[subject].model_validate(document).to_avro()
    for name, field in reader_fields.items():
        if name in document:
            assert record[name] == written[name], name
        else:  # a field the writer did not have: the reader's default
            assert record[name] == field["default"], name


@pytest.mark.parametrize(("subject", "reader_version", "writer_version"), PAIRS)
def test_fast_read_plan_equals_full_resolution(subject: str, reader_version: int, writer_version: int) -> None:
    _, golden = _golden(subject, writer_version)
    store = repo_store().subject(subject)
    reader, writer = store.version(reader_version), store.version(writer_version)
    full = schemaless_reader(io.BytesIO(golden), writer.parsed, reader.parsed)
    chosen = plan(writer.raw, writer.parsed, reader.raw, reader.parsed)
    fast = schemaless_reader(io.BytesIO(golden), chosen.writer, chosen.reader)
    assert apply_fill(fast, chosen.fill) == full
    if reader_version > writer_version:
        # appended optional fields: the plan must take the fast path, or decode cost doubles
        assert chosen.reader is None and chosen.fill
