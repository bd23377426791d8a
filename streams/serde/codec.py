"""Avro serializers and deserializers: ``(value, ctx) -> bytes`` and ``(bytes, ctx) -> dict``.

Every schema is parsed once when a serde is built. Decoding a record is then: look at
the header, one dict lookup for the writer's route (the reader is fixed), and one decode:
cavro's compiled decoder for the plain-decode plans (native.py), fastavro's
``schemaless_reader`` for a pair that needs full resolution or when cavro is unavailable
(see resolution.py for why old data usually needs no per-field resolution). On the same
bytes, a generated ProductScraped (~1.1 kB) costs 40-42 µs of process CPU with fastavro
and 24-28 µs with cavro (``bench/decode_cost.py``); header parsing + the lookup is 0.3 µs.
Both paths return equal records and raise the same errors (tests/unit/test_native_decode.py).
``tests/unit/test_serde_speed.py`` checks structurally that nothing is parsed per call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from streams.serde.context import error_at
from streams.serde.native import NativeDecode, native_decoder
from streams.serde.errors import (
    CorruptPayloadError,
    EncodeError,
    IncompatibleSchemaError,
    RegistryUnavailableError,
    UnknownSchemaError,
)
from streams.serde.framing import (
    CONFLUENT_HEADER_LEN,
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_HEADER_LEN,
    SINGLE_OBJECT_MAGIC,
    confluent_header,
    single_object_header,
)
from streams.serde.registry import is_not_found, registry_error, registry_schema, value_subject_name
from streams.serde.resolution import ReadPlan, apply_fill, plan
from streams.serde.store import SchemaStore, SchemaVersion

if TYPE_CHECKING:  # imported by a process that uses a registry (streams/serde/registry.py)
    from confluent_kafka.schema_registry import SchemaRegistryClient

#: what fastavro raises on bytes that are not what the writer's schema says
_DECODE_ERRORS = (EOFError, ValueError, IndexError, TypeError, OverflowError, UnicodeDecodeError, KeyError)
#: what fastavro raises on a value that does not fit the schema
_ENCODE_ERRORS = (ValueError, TypeError, OverflowError, AttributeError, KeyError)

Serializer = Callable[[Any, Any], bytes]
Deserializer = Callable[[bytes, Any], dict]


class _Route:
    """How records of one writer schema are read: the plan, and cavro's decoder when the
    plan is a plain decode with the writer's schema (None: fastavro)."""

    __slots__ = ("plan", "native")

    def __init__(self, pair: ReadPlan, writer_raw: Any, use_native: bool) -> None:
        self.plan = pair
        self.native: NativeDecode | None = (
            native_decoder(writer_raw) if use_native and pair.reader is None else None
        )


def as_record(value: Any) -> Mapping[str, Any]:
    """A pydantic event model becomes its Avro dict; a mapping is taken as it is."""
    to_avro = getattr(value, "to_avro", None)
    if to_avro is not None:
        return to_avro()
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"cannot serialize a {type(value).__name__}: give a mapping or an event model")


def _encode_body(schema: Any, value: Any, ctx: Any, label: str) -> bytes:
    out = BytesIO()
    try:
        schemaless_writer(out, schema, as_record(value))
    except _ENCODE_ERRORS as exc:
        raise error_at(EncodeError, f"value does not fit {label}: {exc}", ctx) from exc
    return out.getvalue()


class SingleObjectSerializer:
    """Writes Avro single-object encoding with one local schema version."""

    def __init__(self, version: SchemaVersion) -> None:
        self.version = version
        self._header = single_object_header(version.fingerprint)

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        return self._header + _encode_body(self.version.parsed, value, ctx, self.version.label)


class RegistrySerializer:
    """Writes the Confluent wire format; the schema is registered under ``<topic>-value``
    once per topic (registering an existing schema returns its id, so this is idempotent)."""

    def __init__(self, version: SchemaVersion, client: SchemaRegistryClient, default_topic: str | None) -> None:
        self.version = version
        self._client = client
        self._default_topic = default_topic
        self._headers: dict[str, bytes] = {}

    def _header_for(self, topic: str | None, ctx: Any) -> bytes:
        topic = topic or self._default_topic
        header = self._headers.get(topic) if topic else None
        if header is not None:
            return header
        if topic is None:
            raise error_at(EncodeError, f"no topic to name the registry subject of {self.version.label}", ctx)
        try:
            schema_id = self._client.register_schema(value_subject_name(topic), registry_schema(self.version.text))
        except registry_error() as exc:
            if exc.http_status_code is not None and 400 <= exc.http_status_code < 500:
                raise error_at(EncodeError, f"registry refused {self.version.label}: {exc}", ctx) from exc
            raise RegistryUnavailableError(f"schema registry error: {exc}") from exc
        except Exception as exc:  # connection refused, timeouts: requests/httpx errors
            raise RegistryUnavailableError(f"schema registry unreachable: {exc}") from exc
        header = confluent_header(schema_id)
        self._headers[topic] = header
        return header

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        header = self._header_for(getattr(ctx, "topic", None), ctx)
        return header + _encode_body(self.version.parsed, value, ctx, self.version.label)


class AvroDeserializer:
    """Reads both wire formats into the reader schema (the subject's latest version unless pinned)."""

    def __init__(
        self,
        store: SchemaStore,
        subject: str,
        client: SchemaRegistryClient | None = None,
        reader_version: int | None = None,
        native: bool = True,
    ) -> None:
        self._store = store
        self.subject = store.subject(subject)
        # code built against an older model pins its reader version; every local version
        # stays a known writer, so it reads data of versions newer than itself
        self.reader = self.subject.latest if reader_version is None else self.subject.version(reader_version)
        # writer fingerprint (or registry id) -> the plan for the (writer, reader) pair;
        # the reader is fixed, so one dict lookup finds everything a decode needs
        # ``native=False`` forces fastavro everywhere: the reference the tests compare cavro to
        self._native = native
        self._by_fingerprint: dict[bytes, _Route] = {
            v.fingerprint: _Route(plan(v.raw, v.parsed, self.reader.raw, self.reader.parsed), v.raw, native)
            for v in self.subject.versions
        }
        self._client = client
        self._by_id: dict[int, _Route] = {}
        self._unknown_ids: set[int] = set()

    def __call__(self, data: bytes, ctx: Any = None) -> dict:
        if not data:
            raise error_at(CorruptPayloadError, "empty payload (a tombstone or a missing value)", ctx)
        magic = data[0]
        if magic == 0xC3:
            if len(data) < SINGLE_OBJECT_HEADER_LEN:
                raise error_at(CorruptPayloadError, f"truncated single-object header ({len(data)} bytes)", ctx)
            if data[1] != SINGLE_OBJECT_MAGIC[1]:
                raise error_at(CorruptPayloadError, f"wrong magic bytes {data[:2].hex()}", ctx)
            fingerprint = bytes(data[2:SINGLE_OBJECT_HEADER_LEN])
            pair = self._by_fingerprint.get(fingerprint)
            if pair is None:
                raise self._unknown_fingerprint(fingerprint, ctx)
            start = SINGLE_OBJECT_HEADER_LEN
        elif magic == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER_LEN:
                raise error_at(CorruptPayloadError, f"truncated registry header ({len(data)} bytes)", ctx)
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big", signed=True)
            pair = self._by_id.get(schema_id)
            if pair is None:
                pair = self._fetch(schema_id, ctx)
            start = CONFLUENT_HEADER_LEN
        else:
            raise error_at(CorruptPayloadError, f"wrong magic byte 0x{magic:02x}: neither single-object nor registry framing", ctx)
        # cavro when it vouches for the whole body; else fastavro, whose verdict is the reference
        record = pair.native(data[start:]) if pair.native is not None else None
        if record is None:
            body = BytesIO(data)
            body.seek(start)
            try:
                record = schemaless_reader(body, pair.plan.writer, pair.plan.reader)
            except SchemaResolutionError as exc:
                raise error_at(IncompatibleSchemaError, f"writer schema does not resolve to {self.reader.label}: {exc}", ctx) from exc
            except _DECODE_ERRORS as exc:
                raise error_at(CorruptPayloadError, f"undecodable or truncated body: {type(exc).__name__}: {exc}", ctx) from exc
            if body.tell() != len(data):
                extra = len(data) - body.tell()
                raise error_at(CorruptPayloadError, f"{extra} bytes left after the record: wrong schema or corrupt body", ctx)
        pair = pair.plan
        if pair.fill:
            apply_fill(record, pair.fill)
        return record

    def _unknown_fingerprint(self, fingerprint: bytes, ctx: Any) -> Exception:
        other = self._store.by_fingerprint.get(fingerprint)
        if other is not None:
            return error_at(
                UnknownSchemaError,
                f"fingerprint {fingerprint.hex()} is {other.label}, not a version of {self.subject.name}",
                ctx,
            )
        return error_at(UnknownSchemaError, f"unknown schema fingerprint {fingerprint.hex()} for {self.subject.name}", ctx)

    def _fetch(self, schema_id: int, ctx: Any) -> _Route:
        """First sight of a registry id: fetch its schema once (I/O off the hot path)."""
        if self._client is None:
            raise error_at(UnknownSchemaError, f"registry schema id {schema_id} but no schema registry is configured", ctx)
        if schema_id in self._unknown_ids:
            raise error_at(UnknownSchemaError, f"registry has no schema id {schema_id}", ctx)
        try:
            registered = self._client.get_schema(schema_id)
        except registry_error() as exc:
            if is_not_found(exc):
                self._unknown_ids.add(schema_id)
                raise error_at(UnknownSchemaError, f"registry has no schema id {schema_id}", ctx) from exc
            raise RegistryUnavailableError(f"schema registry error fetching id {schema_id}: {exc}") from exc
        except Exception as exc:
            raise RegistryUnavailableError(f"schema registry unreachable fetching id {schema_id}: {exc}") from exc
        if (registered.schema_type or "AVRO") != "AVRO":
            raise error_at(UnknownSchemaError, f"schema id {schema_id} is {registered.schema_type}, not Avro", ctx)
        try:
            raw = json.loads(registered.schema_str)
            parsed = parse_schema(raw)
        except Exception as exc:
            raise error_at(UnknownSchemaError, f"schema id {schema_id} is not valid Avro: {exc}", ctx) from exc
        route = _Route(plan(raw, parsed, self.reader.raw, self.reader.parsed), raw, self._native)
        self._by_id[schema_id] = route
        return route
