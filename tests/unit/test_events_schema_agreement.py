"""Each event model and its latest .avsc agree field by field: names, order, nullability, types, defaults."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

import pytest
from pydantic import AwareDatetime, BaseModel

from core.paths import SCHEMAS_DIR
from core.events import MODELS
from core.settings import load_settings
from streams.serde.store import SchemaStore

STORE = SchemaStore(SCHEMAS_DIR)


def _split_optional(annotation):
    """(inner type, nullable) of ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        assert len(args) == 1, f"only X | None unions are modelled, got {annotation}"
        return args[0], nullable
    return annotation, False


def _strip_annotated(annotation):
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _named(schema, names):
    if isinstance(schema, str):
        return names.get(schema, schema)
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum"):
        names[schema["name"]] = schema
        names[f"{schema.get('namespace', '')}.{schema['name']}"] = schema
    return schema


def _agree(avro_type, annotation, where: str, names: dict) -> None:
    avro_type = _named(avro_type, names)
    annotation = _strip_annotated(annotation)
    if isinstance(avro_type, list):
        assert "null" in avro_type and len(avro_type) == 2, f"{where}: only [null, X] unions are modelled"
        inner, nullable = _split_optional(annotation)
        assert nullable, f"{where}: Avro is nullable, the model is not"
        _agree(next(b for b in avro_type if b != "null"), inner, where, names)
        return
    inner, nullable = _split_optional(annotation)
    assert not nullable, f"{where}: the model is nullable, Avro is not"
    annotation = _strip_annotated(inner)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        kind = avro_type["type"]
        if logical == "decimal":
            assert annotation is Decimal, f"{where}: decimal needs Decimal, got {annotation}"
        elif logical == "uuid":
            assert annotation is UUID, where
        elif logical == "timestamp-micros":
            assert annotation in (datetime, AwareDatetime), f"{where}: timestamp needs an (aware) datetime"
        elif kind == "enum":
            assert isinstance(annotation, type) and issubclass(annotation, StrEnum), where
            assert [m.value for m in annotation] == avro_type["symbols"], f"{where}: enum symbols differ"
        elif kind == "record":
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), where
            _agree_record(avro_type, annotation, names)
        elif kind == "array":
            assert typing.get_origin(annotation) is list, where
            _agree(avro_type["items"], typing.get_args(annotation)[0], f"{where}[]", names)
        elif kind == "map":
            assert typing.get_origin(annotation) is dict and typing.get_args(annotation)[0] is str, where
            _agree(avro_type["values"], typing.get_args(annotation)[1], f"{where}{{}}", names)
        else:
            _agree(kind, annotation, where, names)
        return
    python = {"string": str, "int": int, "long": int, "boolean": bool, "double": float, "float": float, "bytes": bytes}
    assert annotation is python[avro_type], f"{where}: Avro {avro_type} vs model {annotation}"


def _agree_record(record: dict, model: type[BaseModel], names: dict) -> None:
    avro_fields = record["fields"]
    assert [f["name"] for f in avro_fields] == list(model.model_fields), f"{record['name']}: field names or order differ"
    for field in avro_fields:
        info = model.model_fields[field["name"]]
        where = f"{record['name']}.{field['name']}"
        _agree(field["type"], info.rebuild_annotation() if hasattr(info, "rebuild_annotation") else info.annotation, where, names)
        if "default" in field:
            assert not info.is_required(), f"{where}: Avro has a default, the model requires the field"
            default = info.get_default(call_default_factory=True)
            assert default == field["default"], f"{where}: defaults differ ({default!r} vs {field['default']!r})"


@pytest.mark.parametrize("subject", sorted(MODELS))
def test_model_and_latest_schema_agree(subject: str) -> None:
    model = MODELS[subject]
    assert model.subject == subject
    _agree_record(STORE.subject(subject).latest.raw, model, {})


def test_a_drifted_model_is_caught() -> None:
    """The agreement check itself can fail: a model with a renamed field does not pass."""
    from pydantic import create_model

    from core.events import AlertTriggered

    fields = {name: (info.annotation, info) for name, info in AlertTriggered.model_fields.items() if name != "message"}
    drifted = create_model("Drifted", **fields, msg=(str, ...))
    with pytest.raises(AssertionError, match="field names or order differ"):
        _agree_record(STORE.subject("alert_triggered").latest.raw, drifted, {})
