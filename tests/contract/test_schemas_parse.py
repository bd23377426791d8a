"""Every schema file parses strictly and follows the house rules of a public contract."""

from __future__ import annotations

import json

import avro.schema
import fastavro
import pytest

from core.events import MODELS
from tests.contract.helpers import SCHEMAS, repo_store

ALL_VERSIONS = [(s.name, v.version) for s in repo_store().subjects.values() for v in s.versions]


def _walk(node, found):
    if isinstance(node, list):
        for branch in node:
            _walk(branch, found)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            found.append(node)
        for field in node.get("fields", []):
            found.append(("field", node["name"], field))
            _walk(field["type"], found)
        for key in ("items", "values"):
            if key in node:
                _walk(node[key], found)
        if isinstance(node.get("type"), (dict, list)):
            _walk(node["type"], found)


@pytest.mark.parametrize(("subject", "version"), ALL_VERSIONS)
def test_schema_parses_strictly_in_both_libraries(subject: str, version: int) -> None:
    raw = json.loads((SCHEMAS / subject / f"v{version}.avsc").read_text(encoding="utf-8"))
    fastavro.parse_schema(raw, _force=True)
    avro.schema.parse(json.dumps(raw), validate_enum_symbols=True, validate_names=True)


@pytest.mark.parametrize("subject", sorted(MODELS))
def test_event_schemas_are_documented_namespaced_and_enums_have_defaults(subject: str) -> None:
    for version in repo_store().subject(subject).versions:
        nodes: list = []
        _walk(version.raw, nodes)
        assert version.raw.get("namespace"), f"{version.label} has no namespace"
        for node in nodes:
            if isinstance(node, tuple):
                _, record, field = node
                assert field.get("doc"), f"{version.label}: field {record}.{field['name']} has no doc"
                continue
            assert node.get("doc"), f"{version.label}: {node['name']} has no doc"
            if node["type"] == "enum":
                assert node.get("default") in node["symbols"], f"{version.label}: enum {node['name']} lacks a default symbol"


def test_decimals_carry_the_seed_precision_and_scale() -> None:
    fields = {f["name"]: f for f in repo_store().subject("product_scraped").latest.raw["fields"]}
    expected = {"price": (10, 2), "buybox_price": (10, 2), "rating": (3, 2), "weight": (8, 2)}
    for name, (precision, scale) in expected.items():
        decimal = fields[name]["type"][1]
        assert (decimal["logicalType"], decimal["precision"], decimal["scale"]) == ("decimal", precision, scale)
    alert = {f["name"]: f for f in repo_store().subject("alert_triggered").latest.raw["fields"]}
    assert alert["change_percentage"]["type"][1]["precision"] == 8
    assert alert["event_id"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert alert["triggered_at"]["type"] == {"type": "long", "logicalType": "timestamp-micros"}


def test_store_discovers_every_subject_folder(tmp_path) -> None:
    from streams.serde.store import SchemaStore

    for name in ("zeta_new", "alpha"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v1.avsc").write_text('{"type":"record","name":"R","fields":[]}')
    (tmp_path / "examples").mkdir()  # no vN.avsc: not a subject
    assert sorted(SchemaStore(tmp_path).subjects) == ["alpha", "zeta_new"]


def test_a_gap_in_versions_is_refused(tmp_path) -> None:
    from streams.serde.store import SchemaStore, SchemaStoreError

    (tmp_path / "s").mkdir()
    for v in (1, 3):
        (tmp_path / "s" / f"v{v}.avsc").write_text('{"type":"record","name":"R","fields":[]}')
    with pytest.raises(SchemaStoreError, match="without gaps"):
        SchemaStore(tmp_path)


def test_an_invalid_schema_is_refused_with_its_path(tmp_path) -> None:
    from streams.serde.store import SchemaStore, SchemaStoreError

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "v1.avsc").write_text('{"type":"record","name":"R","fields":[{"name":"x","type":"strnig"}]}')
    with pytest.raises(SchemaStoreError, match="v1.avsc: not a valid Avro schema"):
        SchemaStore(tmp_path)
