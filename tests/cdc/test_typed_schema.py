"""Typed change events: the Avro schema generated from a table's catalog description, pinned per type.

Each PostgreSQL type has a golden file ``tests/cdc/golden/typed/<type>.json`` with the
field a nullable and a NOT NULL column of that type become; ``products.avsc`` is the whole
envelope of a seed-shaped ``products`` table. After an intended change of the mapping,
rewrite them with

    INSIGHTS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/cdc/test_typed_schema.py

and read the diff: it is the diff of what consumers' contract tests see.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.cdc.typed import (
    ColumnInfo, TableInfo, avro_name, envelope_schema, field_names, may_be_toasted, nullable_fields,
    numeric_precision_scale,
)
from streams.cdc.errors import RegistryRefusedError
from streams.cdc.typed_schemas import TypedVersion, _registry_error, breaks, fingerprint
from streams.serde.errors import RegistryUnavailableError

GOLDEN = Path(__file__).parent / "golden" / "typed"
UPDATE = os.environ.get("INSIGHTS_UPDATE_GOLDEN") == "1"


def numeric(p: int, s: int) -> int:
    """``atttypmod`` of numeric(p,s), as PostgreSQL packs it."""
    return ((p << 16) | (s & 0x7FF)) + 4


#: golden name -> (type OID, typmod, format_type, element OID, storage not plain), one per mapping rule
TYPES: dict[str, tuple[int, int, str, int, bool]] = {
    "smallint": (21, -1, "smallint", 0, False),
    "integer": (23, -1, "integer", 0, False),
    "bigint": (20, -1, "bigint", 0, False),
    "oid": (26, -1, "oid", 0, False),
    "real": (700, -1, "real", 0, False),
    "double_precision": (701, -1, "double precision", 0, False),
    "numeric_10_2": (1700, numeric(10, 2), "numeric(10,2)", 0, True),
    "numeric_5_neg2": (1700, numeric(5, -2), "numeric(5,-2)", 0, True),
    "numeric_2_5": (1700, numeric(2, 5), "numeric(2,5)", 0, True),
    "numeric": (1700, -1, "numeric", 0, True),
    "text": (25, -1, "text", 0, True),
    "varchar_500": (1043, 504, "character varying(500)", 0, True),
    "char_3": (1042, 7, "character(3)", 0, True),
    "boolean": (16, -1, "boolean", 0, False),
    "timestamptz": (1184, -1, "timestamp with time zone", 0, False),
    "timestamp": (1114, -1, "timestamp without time zone", 0, False),
    "date": (1082, -1, "date", 0, False),
    "uuid": (2950, -1, "uuid", 0, False),
    "json": (114, -1, "json", 0, True),
    "jsonb": (3802, -1, "jsonb", 0, True),
    "bytea": (17, -1, "bytea", 0, True),
    "text_array": (1009, -1, "text[]", 25, True),
    "numeric_10_2_array": (1231, numeric(10, 2), "numeric(10,2)[]", 1700, True),
    "timestamptz_array": (1185, -1, "timestamp with time zone[]", 1184, True),
    "interval": (1186, -1, "interval", 0, False),
    "inet": (869, -1, "inet", 0, True),
}


def column(kind: str, name: str = "c", not_null: bool = False, **extra: Any) -> ColumnInfo:
    oid, typmod, type_name, element, not_plain = TYPES[kind]
    return ColumnInfo(name, oid, typmod, type_name, not_null, element, may_be_toasted(oid, typmod, not_plain), **extra)


def table_of(*columns: ColumnInfo, schema: str = "public", name: str = "t") -> TableInfo:
    key = ColumnInfo("id", 20, -1, "bigint", True, is_key=True)
    return TableInfo(schema, name, (key, *columns))


def value_fields(raw: dict[str, Any]) -> list[dict[str, Any]]:
    before = next(f for f in raw["fields"] if f["name"] == "before")
    return next(t for t in before["type"] if isinstance(t, dict) and t["name"] == "Value")["fields"]


def strict_parse(raw: dict[str, Any]) -> Any:
    # as streams.serde.store parses the project's own schemas: unknown logical types and bad defaults fail
    return fastavro.parse_schema(raw, _write_hint=True, _force=True)


def check_golden(path: Path, generated: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with INSIGHTS_UPDATE_GOLDEN=1 (module doc)"
    assert generated == path.read_text(encoding="utf-8"), (
        f"the typed schema changed for {path.name}; if intended, rewrite the golden files (module doc) and review the diff"
    )


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_each_type_maps_to_its_golden_field_and_the_envelope_parses(kind: str) -> None:
    table = table_of(column(kind, "c"), column(kind, "c_not_null", not_null=True))
    raw = envelope_schema(table)
    strict_parse(raw)
    fields = {f["name"]: f for f in value_fields(raw)}
    generated = json.dumps({"nullable": fields["c"], "not_null": fields["c_not_null"]}, indent=2) + "\n"
    check_golden(GOLDEN / f"{kind}.json", generated)


#: ddl/0001_products.sql, as the catalog describes it
PRODUCTS = TableInfo("public", "products", (
    ColumnInfo("asin", 1043, 14, "character varying(10)", True, 0, True, is_key=True),
    ColumnInfo("title", 1043, 504, "character varying(500)", True, 0, True),
    ColumnInfo("brand", 1043, 104, "character varying(100)", False, 0, True),
    ColumnInfo("category", 1043, 204, "character varying(200)", False, 0, True),
    ColumnInfo("manufacturer", 1043, 104, "character varying(100)", False, 0, True),
    ColumnInfo("model", 1043, 104, "character varying(100)", False, 0, True),
    ColumnInfo("dimensions", 3802, -1, "jsonb", False, 0, True),
    ColumnInfo("weight", 1700, numeric(8, 2), "numeric(8,2)", False, 0, True),
    ColumnInfo("first_tracked_at", 1184, -1, "timestamp with time zone", True),
    ColumnInfo("last_updated_at", 1184, -1, "timestamp with time zone", True),
    ColumnInfo("is_active", 16, -1, "boolean", True),
    ColumnInfo("tracking_frequency", 1186, -1, "interval", False),
    ColumnInfo("metadata", 3802, -1, "jsonb", False, 0, True),
    ColumnInfo("last_scraped_at", 1184, -1, "timestamp with time zone", False),
    ColumnInfo("created_at", 1184, -1, "timestamp with time zone", True),
    ColumnInfo("updated_at", 1184, -1, "timestamp with time zone", True),
))


def test_the_whole_envelope_of_a_seed_shaped_table_is_the_golden_file() -> None:
    raw = envelope_schema(PRODUCTS)
    strict_parse(raw)
    check_golden(GOLDEN / "products.avsc", json.dumps(raw, indent=2) + "\n")
    # the fields besides before/after are the generic envelope's, so consumers share their code
    generic = json.loads((Path(__file__).parents[2] / "schemas/avro/cdc_change/v1.avsc").read_text())
    ours = {f["name"]: f for f in raw["fields"]}
    for name in ("op", "key_columns", "source"):
        assert ours[name] == next(f for f in generic["fields"] if f["name"] == name)
    assert ours["unchanged_toast"]["type"] == {"type": "array", "items": "string"}


def test_nullability_follows_not_null_except_toastable_non_key_columns() -> None:
    raw = envelope_schema(PRODUCTS)
    fields = {f["name"]: f for f in value_fields(raw)}
    assert fields["asin"]["type"] == "string"  # the key: never unsent
    assert fields["is_active"]["type"] == "boolean"  # NOT NULL, fixed width: never TOASTed
    assert fields["title"]["type"] == ["null", "string"]  # NOT NULL but may be TOASTed and left unsent
    assert "null only when the value was not sent" in fields["title"]["doc"]
    assert fields["brand"]["type"] == ["null", "string"] and fields["brand"]["default"] is None
    assert nullable_fields(raw) == {n for n, f in fields.items() if isinstance(f["type"], list)}
    # a NOT NULL column a NULL arrived for (widened) admits null
    widened = envelope_schema(PRODUCTS, frozenset({"is_active"}))
    assert {f["name"]: f for f in value_fields(widened)}["is_active"]["type"] == ["null", "boolean"]


def test_key_record_has_the_key_columns_only() -> None:
    raw = envelope_schema(PRODUCTS)
    before = next(f for f in raw["fields"] if f["name"] == "before")
    assert [t if isinstance(t, str) else t["name"] for t in before["type"]] == ["null", "Value", "Key"]
    assert [f["name"] for f in before["type"][2]["fields"]] == ["asin"]
    after = next(f for f in raw["fields"] if f["name"] == "after")
    assert after["type"] == ["null", "Value"]


def test_names_are_valid_avro_and_unique() -> None:
    assert avro_name("user-agent") == "user_agent"
    assert avro_name("2fa") == "_2fa"
    assert avro_name("prix_€") == "prix__"
    odd = table_of(column("text", "a-b"), column("text", "a_b"), column("text", "1st"), schema="my-schema", name="Été")
    assert field_names(odd.columns) == ["id", "a_b", "a_b_2", "_1st"]
    raw = envelope_schema(odd)
    strict_parse(raw)
    assert raw["namespace"] == "insights.cdc.my_schema._t_"
    docs = {f["name"]: f["doc"] for f in value_fields(raw)}
    assert "column 'a-b'" in docs["a_b"] and "column '1st'" in docs["_1st"]


def test_masked_columns_are_strings() -> None:
    masked = table_of(column("numeric_10_2", "price", masked=True))
    field = {f["name"]: f for f in value_fields(envelope_schema(masked))}["price"]
    assert field["type"] == ["null", "string"] and "SHA-256" in field["doc"]


def test_only_values_bigger_than_a_toast_pointer_may_be_left_unsent() -> None:
    assert not may_be_toasted(1700, numeric(10, 2), True)  # at most 14 bytes: never out of line
    assert may_be_toasted(1700, numeric(60, 2), True) and may_be_toasted(1700, -1, True)
    assert not may_be_toasted(1043, 8, True) and may_be_toasted(1043, 14, True)  # varchar(4), varchar(10)
    assert may_be_toasted(25, -1, True) and not may_be_toasted(1184, -1, False)


def test_numeric_typmod_unpacks_precision_and_signed_scale() -> None:
    assert numeric_precision_scale(numeric(10, 2)) == (10, 2)
    assert numeric_precision_scale(numeric(5, -2)) == (5, -2)
    assert numeric_precision_scale(numeric(1000, 1000)) == (1000, 1000)
    assert numeric_precision_scale(-1) is None


# --- evolution: what the compatibility check says ---------------------------------------------
def version(n: int, table: TableInfo, widened: frozenset[str] = frozenset()) -> TypedVersion:
    raw = envelope_schema(table, widened)
    return TypedVersion("t-value", n, raw, fingerprint(raw))


BASE = table_of(column("numeric_10_2", "price"), column("integer", "qty", not_null=True))


def test_a_new_nullable_column_is_compatible_at_every_level() -> None:
    added = table_of(*BASE.columns[1:], column("text", "note"))
    for level in ("BACKWARD", "FORWARD", "FULL", "FULL_TRANSITIVE"):
        assert breaks(level, [version(1, BASE)], version(2, added)) == [], level


def test_dropping_a_not_null_column_breaks_forward_and_full_but_not_backward() -> None:
    dropped = table_of(BASE.columns[1])
    assert breaks("BACKWARD", [version(1, BASE)], version(2, dropped)) == []
    [reason] = breaks("FULL", [version(1, BASE)], version(2, dropped))
    assert "qty" in reason


def test_a_type_change_breaks() -> None:
    changed = table_of(column("numeric_10_2", "price"), column("text", "qty", not_null=True))
    reasons = breaks("BACKWARD", [version(1, BASE)], version(2, changed))
    assert reasons and any("qty" in r for r in reasons)


def test_numeric_to_text_breaks_though_avro_promotes_bytes_to_string() -> None:
    as_text = table_of(column("text", "price"), BASE.columns[2])
    [reason] = breaks("FULL", [version(1, BASE)], version(2, as_text))
    assert "column price changes the meaning" in reason and "decimal(10,2)" in reason


def test_a_decimal_scale_change_breaks_though_avro_checker_passes_it() -> None:
    rescaled = TableInfo("public", "t", (
        BASE.columns[0],
        ColumnInfo("price", 1700, numeric(12, 3), "numeric(12,3)", False, 0, True),
        BASE.columns[2],
    ))
    [reason] = breaks("BACKWARD", [version(1, BASE)], version(2, rescaled))
    assert "column price changes the meaning" in reason
    # precision alone does not change how the bytes read
    wider = TableInfo("public", "t", (
        BASE.columns[0],
        ColumnInfo("price", 1700, numeric(12, 2), "numeric(12,2)", False, 0, True),
        BASE.columns[2],
    ))
    assert breaks("FULL", [version(1, BASE)], version(2, wider)) == []


def test_transitive_levels_check_every_version_and_none_checks_nothing() -> None:
    v1 = version(1, BASE)
    v2 = version(2, table_of(*BASE.columns[1:], column("text", "note")))
    v3 = version(3, table_of(BASE.columns[1], column("text", "note")))  # qty (NOT NULL) dropped
    assert breaks("FULL", [v1, v2], v3) != []
    assert breaks("NONE", [v1, v2], v3) == []


def test_the_fingerprint_tells_logical_types_apart() -> None:
    a = envelope_schema(BASE)
    b = envelope_schema(TableInfo("public", "t", (
        BASE.columns[0], ColumnInfo("price", 1700, numeric(10, 3), "numeric(10,3)", False, 0, True), BASE.columns[2],
    )))
    assert a != b and fingerprint(a) != fingerprint(b) and len(fingerprint(a)) == 8
    assert fingerprint(a) == fingerprint(json.loads(json.dumps(a)))  # key order does not matter


# --- a registry's error answers: waited out or final ----------------------------------------------
@pytest.mark.parametrize(("status", "final"), [
    (401, True), (403, True), (422, True), (400, True),
    (500, False), (502, False), (503, False), (408, False), (429, False), (-1, False),
])
def test_a_registry_error_answer_is_waited_out_unless_it_is_final(status: int, final: bool) -> None:
    error = _registry_error(SchemaRegistryError(status, status * 100, "msg"), "registering s-value")
    assert isinstance(error, RegistryRefusedError if final else RegistryUnavailableError), (status, error)
