"""The base of every event model: strict field set, Avro dicts in and out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict


class AvroModel(BaseModel):
    """A pydantic model whose field names are the Avro schema's field names.

    ``to_avro`` gives the dict fastavro writes (Decimal, aware datetime, UUID, enum
    symbols as ``str``); ``from_avro`` validates what a deserializer returns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    #: the folder under schemas/avro/ this model follows (its latest version)
    subject: ClassVar[str | None] = None

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Self:
        return cls.model_validate(record)

    def to_avro(self) -> dict[str, Any]:
        # mode="python" keeps Decimal/datetime/UUID for the logical types; StrEnum
        # members are str, which is what the Avro writer wants for enum symbols
        return self.model_dump(mode="python")
