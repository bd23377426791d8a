"""Typed change events: the versions of each table's schema, where they are kept, how they
evolve, and how a consumer reads an event back.

**Subject**: ``<topic>-value`` (``streams.serde.registry.value_subject_name``, Confluent's
TopicNameStrategy), one per table, as for every other topic of the project.

**Where the versions are kept**:

* with a Confluent-compatible registry (``INSIGHTS_SCHEMA_REGISTRY_URL``): in the registry;
  events carry the Confluent wire format (``00`` + schema id), any Confluent deserializer
  reads them;
* without one (the local stack): in PostgreSQL, table ``cdc_schemas`` (``ddl/0022``), one row
  per version; events carry Avro single-object encoding (``C3 01`` + an 8-byte fingerprint)
  and a consumer finds the writer's schema by that fingerprint (:class:`TypedDecoder`).

**The fingerprint** is CRC-64-AVRO over the schema's JSON with sorted keys and no spaces,
*not* over Avro's Parsing Canonical Form: that form drops logical types and properties, so
numeric(10,2) and numeric(10,3) would share a fingerprint and a decoder would read every
decimal of one with the scale of the other.

**Evolution** (:meth:`SchemaVersions.resolve`, called for every Relation message): the
same schema keeps its version; a new one is checked against the registered versions at the
subject's level (the registry's subject or global level when a registry has one, else
``INSIGHTS_CDC_TYPED_COMPATIBILITY``, default FULL) with the ``avro`` package's checker
(``streams.contracts.compatibility``, as for the project's own subjects), plus one rule that
checker lacks: a column whose bytes stay the same but mean something else (a decimal's scale,
timestamptz <-> timestamp, a logical type appearing or going) breaks too. Compatible: a new
version, used from that change on. Not: :class:`~streams.cdc.errors.IncompatibleSchemaChangeError`
(exit code 4) unless ``INSIGHTS_CDC_TYPED_ALLOW_INCOMPATIBLE`` is set.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import avro.errors
import fastavro
import psycopg
from fastavro.schema import fingerprint as _crc64
from psycopg.types.json import Jsonb

from core.settings import PostgresSettings, Settings
from streams.cdc.errors import CdcError, IncompatibleSchemaChangeError, RegistryRefusedError
from streams.contracts.compatibility import PairResult, check_pair, required_pairs
from streams.contracts.explain import describe
from streams.pg.connect import connect
from streams.serde.context import error_at
from streams.serde.errors import CorruptPayloadError, RegistryUnavailableError, UnknownSchemaError
from streams.serde.framing import (
    CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, SINGLE_OBJECT_HEADER_LEN, SINGLE_OBJECT_MAGIC, confluent_header,
    single_object_header,
)
from streams.serde.registry import is_not_found, registry_client, registry_error, registry_schema

if TYPE_CHECKING:  # loaded where a registry is used (streams/serde/registry.py says why)
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

log = logging.getLogger(__name__)

TABLE = "cdc_schemas"


def fingerprint(raw: Any) -> bytes:
    """CRC-64-AVRO of the whole schema (sorted keys), little-endian as single-object encoding writes it."""
    return bytes.fromhex(_crc64(json.dumps(raw, sort_keys=True, separators=(",", ":")), "CRC-64-AVRO"))


@dataclass(frozen=True)
class TypedVersion:
    subject: str
    version: int
    raw: dict[str, Any] = field(repr=False)
    fingerprint: bytes = field(repr=False)
    #: the framing every event of this version starts with (single-object or Confluent)
    header: bytes = field(repr=False, default=b"")

    @property
    def text(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"))

    @property
    def label(self) -> str:
        return f"{self.subject} v{self.version}"

    @cached_property
    def parsed(self) -> Any:
        return fastavro.parse_schema(self.raw)

    def encode(self, value: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.parsed, value)
        return out.getvalue()


# --- where the versions are kept ------------------------------------------------------------
class PgSchemaStore:
    """The versions in PostgreSQL's ``cdc_schemas`` (no registry): single-object framing."""

    def __init__(self, pg: PostgresSettings) -> None:
        self.pg = pg
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.pg, "cdc-schemas")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def level(self, subject: str) -> str | None:
        return None  # the setting's

    def versions(self, subject: str) -> list[TypedVersion]:
        rows = self._connection().execute(
            "SELECT version, fingerprint, schema FROM cdc_schemas WHERE subject = %s ORDER BY version", (subject,)
        ).fetchall()
        return [TypedVersion(subject, v, raw, bytes(fp), single_object_header(bytes(fp))) for v, fp, raw in rows]

    def register(self, subject: str, raw: dict[str, Any]) -> TypedVersion:
        """The version of ``raw`` under ``subject``: the existing one for a schema seen before, else the next."""
        fp = fingerprint(raw)
        conn = self._connection()
        for _ in range(5):  # a concurrent registration may take the number we computed: compute again
            conn.execute(
                """
                INSERT INTO cdc_schemas (subject, version, fingerprint, schema)
                SELECT %(subject)s, coalesce(max(version), 0) + 1, %(fp)s, %(schema)s
                  FROM cdc_schemas WHERE subject = %(subject)s
                ON CONFLICT DO NOTHING
                """,
                {"subject": subject, "fp": fp, "schema": Jsonb(raw)},
            )
            row = conn.execute(
                "SELECT version FROM cdc_schemas WHERE subject = %s AND fingerprint = %s", (subject, fp)
            ).fetchone()
            if row is not None:
                return TypedVersion(subject, row[0], raw, fp, single_object_header(fp))
        raise CdcError(f"could not register a version of {subject} in {TABLE}: every attempt raced another writer")


class RegistrySchemaStore:
    """The versions in a Confluent-compatible registry: Confluent framing (schema id)."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client

    def close(self) -> None:
        pass

    def level(self, subject: str) -> str | None:
        """The subject's compatibility level, else the registry's global one; None when it has none (mock)."""
        for name in (subject, None):
            try:
                config = self._call(self.client.get_config, name)
            except _NotFound:
                continue
            # Confluent answers GET /config with compatibilityLevel (ServerConfig.compatibility_level);
            # PUT-style answers and some registries with compatibility
            level = (getattr(config, "compatibility", None) or getattr(config, "compatibility_level", None)
                     if config is not None else None)
            if level is not None:
                return str(getattr(level, "value", level))
        return None

    def versions(self, subject: str) -> list[TypedVersion]:
        try:
            numbers = sorted(self._call(self.client.get_versions, subject))
        except _NotFound:
            return []
        out = []
        for n in numbers:
            registered = self._call(self.client.get_version, subject, n)
            raw = json.loads(registered.schema.schema_str)
            out.append(TypedVersion(subject, n, raw, fingerprint(raw), confluent_header(registered.schema_id)))
        return out

    def register(self, subject: str, raw: dict[str, Any]) -> TypedVersion:
        schema = registry_schema(json.dumps(raw, separators=(",", ":")))
        try:
            registered = self.client.register_schema_full_response(subject, schema)
        except registry_error() as exc:
            if exc.http_status_code == 409:  # the registry's own compatibility check refused it
                raise IncompatibleSchemaChangeError(
                    subject, "registry", "the registered versions", [f"the schema registry refused it: {exc}"]
                ) from None
            raise _registry_error(exc, f"registering {subject}") from exc
        except Exception as exc:
            raise RegistryUnavailableError(f"schema registry unreachable registering {subject}: {exc}") from exc
        version = registered.version
        if version is None:  # some registries answer the id only
            version = self._call(self.client.lookup_schema, subject, schema).version
        return TypedVersion(subject, int(version), raw, fingerprint(raw), confluent_header(registered.schema_id))

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except registry_error() as exc:
            if is_not_found(exc):
                raise _NotFound() from None
            raise _registry_error(exc, "") from exc
        except Exception as exc:
            raise RegistryUnavailableError(f"schema registry unreachable: {exc}") from exc


class _NotFound(Exception):
    pass


#: HTTP answers of a registry that may answer otherwise later (confluent-kafka's own retriable set)
_TRANSIENT_HTTP = (408, 429)


def _registry_error(exc: SchemaRegistryError, doing: str) -> Exception:
    """A registry's error answer: waited out (unavailable: 5xx, 408, 429, no HTTP status) or final
    (refused: 401/403 credentials, any other 4xx); the reader retries only the first kind."""
    status = getattr(exc, "http_status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in _TRANSIENT_HTTP:
        return RegistryRefusedError(status, f"{exc}{' ' + doing if doing else ''}")
    return RegistryUnavailableError(f"schema registry error{' ' + doing if doing else ''}: {exc}")


SchemaStore = PgSchemaStore | RegistrySchemaStore


# --- evolution --------------------------------------------------------------------------------
def _shape(avro_type: Any, logical: bool) -> Any:
    """An Avro type without null branches and docs: its bytes' shape, with or without the logical
    meaning (logical type, decimal scale; not the precision, which changes no value)."""
    if isinstance(avro_type, list):
        branches = tuple(_shape(t, logical) for t in avro_type if t != "null")
        return branches[0] if len(branches) == 1 else branches  # ["null", T] reads T's values as T does
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            return ("array", _shape(avro_type["items"], logical))
        if logical:
            return (avro_type.get("type"), avro_type.get("logicalType"), avro_type.get("scale"))
        return avro_type.get("type")
    return (avro_type, None, None) if logical else avro_type


def _records(version: TypedVersion) -> list[dict[str, Any]]:
    """The ``Value`` and ``Key`` records of a typed envelope."""
    before = next(f for f in version.raw["fields"] if f["name"] == "before")
    return [t for t in before["type"] if isinstance(t, dict)]


def _compatible(reader: TypedVersion, reader_raw: Any, writer: TypedVersion, writer_raw: Any) -> PairResult:
    with warnings.catch_warnings():
        # the avro package knows no local-timestamp-micros; a long to its checker, as it should be
        warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
        return check_pair(  # type: ignore[arg-type]
            TypedVersion(reader.subject, reader.version, reader_raw, b""),
            TypedVersion(writer.subject, writer.version, writer_raw, b""),
        )


def _check(reader: TypedVersion, writer: TypedVersion) -> list[str]:
    """Why ``reader`` cannot read data written by ``writer``, column by column: checked whole, the
    checker only says that the ``before`` union breaks, not which column."""
    r_label, w_label = f"v{reader.version}", f"v{writer.version}"
    reasons = []
    for r_record, w_record in zip(_records(reader), _records(writer)):
        written = {f["name"]: f for f in w_record["fields"]}
        for field in r_record["fields"]:
            w_field = written.get(field["name"])
            one = {**r_record, "namespace": reader.raw["namespace"], "fields": [field]}
            other = {**w_record, "namespace": writer.raw["namespace"], "fields": [w_field] if w_field else []}
            name = field["name"]
            if _compatible(reader, one, writer, other).compatible:
                if w_field is not None and _shape(w_field["type"], True) != _shape(field["type"], True):
                    # the checker reads decimal bytes as a string, and a scale or a time zone it ignores
                    old, new = (w_field, field) if writer.version < reader.version else (field, w_field)
                    reasons.append(f"column {name} changes the meaning of its values ({describe(old['type'])} -> "
                                   f"{describe(new['type'])}): the same bytes would read as something else")
                continue
            if w_field is None:
                reasons.append(f"{r_label} cannot read data written by {w_label}: column {name} is not in {w_label} "
                               f"and has no default in {r_label}")
            else:
                reasons.append(f"{r_label} cannot read data written by {w_label}: column {name} is "
                               f"{describe(w_field['type'])} in {w_label} but {describe(field['type'])} in {r_label}")
    # the rest of the envelope is the same in every version; checked whole in case it is not
    return reasons or list(_compatible(reader, reader.raw, writer, writer.raw).explanations)


def breaks(level: str, history: list[TypedVersion], new: TypedVersion) -> list[str]:
    """Why ``new`` fails ``level`` against ``history`` (oldest first); [] when it passes."""
    numbers = tuple(v.version for v in history) + (new.version,)
    by_number = {v.version: v for v in history} | {new.version: new}
    reasons: list[str] = []
    for reader, writer in sorted(p for p in required_pairs(level, numbers) if new.version in p):
        reasons += _check(by_number[reader], by_number[writer])
    return list(dict.fromkeys(reasons))


class SchemaVersions:
    """The version each table's events are written with, registered and checked as the module doc says."""

    def __init__(self, store: SchemaStore, level: str, allow_incompatible: bool) -> None:
        self.store = store
        self.level = level
        self.allow_incompatible = allow_incompatible
        self._current: dict[str, TypedVersion] = {}

    def latest(self, subject: str) -> TypedVersion | None:
        """The version in use for ``subject``, else the newest registered; None before the first."""
        current = self._current.get(subject)
        if current is not None:
            return current
        history = self.store.versions(subject)
        return history[-1] if history else None

    def resolve(self, subject: str, raw: dict[str, Any]) -> TypedVersion:
        fp = fingerprint(raw)
        current = self._current.get(subject)
        if current is not None and current.fingerprint == fp:
            return current
        history = self.store.versions(subject)
        if history and history[-1].fingerprint == fp:
            self._current[subject] = history[-1]
            return history[-1]
        if history:
            level = self.store.level(subject) or self.level
            candidate = TypedVersion(subject, history[-1].version + 1, raw, fp)
            reasons = breaks(level, history, candidate)
            if reasons and not self.allow_incompatible:
                raise IncompatibleSchemaChangeError(subject, level, f"v{history[-1].version}", reasons)
            if reasons:
                log.warning(
                    "%s: registering an incompatible schema change (%s) because INSIGHTS_CDC_TYPED_ALLOW_INCOMPATIBLE "
                    "is set: %s", subject, level, "; ".join(reasons),
                    extra={"subject": subject, "level": level},
                )
        version = self.store.register(subject, raw)
        if current is not None or history:
            log.info("%s: schema v%d from now on", subject, version.version,
                     extra={"subject": subject, "version": version.version})
        self._current[subject] = version
        return version

    def close(self) -> None:
        self.store.close()


def make_versions(settings: Settings) -> SchemaVersions:
    """The registry when one is configured, else ``cdc_schemas`` in the database of ``settings.pg``."""
    url = settings.kafka.schema_registry_url
    store: SchemaStore = RegistrySchemaStore(registry_client(url)) if url else PgSchemaStore(settings.pg)
    return SchemaVersions(store, settings.cdc.typed_compatibility, settings.cdc.typed_allow_incompatible)


# --- the consumer's side --------------------------------------------------------------------
class TypedDecoder:
    """Typed change events -> dicts, each read with the schema it was written with.

    ``conn`` reads ``cdc_schemas`` (single-object framing, no registry); ``registry`` fetches
    schemas by id (Confluent framing). Every schema is looked up once.
    """

    def __init__(self, conn: psycopg.Connection[Any] | None = None, registry: SchemaRegistryClient | None = None) -> None:
        self.conn = conn
        self.registry = registry
        self._by_fingerprint: dict[bytes, TypedVersion] = {}
        self._by_id: dict[int, TypedVersion] = {}

    def version(self, data: bytes, ctx: Any = None) -> TypedVersion:
        """The version an event was written with (for the registry framing: version 0, the id is what counts)."""
        if len(data) >= SINGLE_OBJECT_HEADER_LEN and data[:2] == SINGLE_OBJECT_MAGIC:
            fp = bytes(data[2:SINGLE_OBJECT_HEADER_LEN])
            found = self._by_fingerprint.get(fp)
            if found is None:
                found = self._by_fingerprint[fp] = self._lookup(fp, ctx)
            return found
        if len(data) >= CONFLUENT_HEADER_LEN and data[0] == CONFLUENT_MAGIC:
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big", signed=True)
            found = self._by_id.get(schema_id)
            if found is None:
                found = self._by_id[schema_id] = self._fetch(schema_id, ctx)
            return found
        raise error_at(CorruptPayloadError, f"not a typed change event: header {bytes(data[:2]).hex()}", ctx)

    def __call__(self, data: bytes, ctx: Any = None) -> dict[str, Any]:
        version = self.version(data, ctx)
        body = io.BytesIO(data)
        body.seek(len(version.header))
        try:
            record = fastavro.schemaless_reader(body, version.parsed, None)
        except (EOFError, ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise error_at(CorruptPayloadError, f"undecodable body for {version.label}: {exc}", ctx) from exc
        if body.tell() != len(data):
            raise error_at(CorruptPayloadError, f"{len(data) - body.tell()} bytes left after a {version.label} record", ctx)
        return record  # type: ignore[return-value]

    def _lookup(self, fp: bytes, ctx: Any) -> TypedVersion:
        if self.conn is None:
            raise error_at(UnknownSchemaError, f"fingerprint {fp.hex()}: no connection to {TABLE} to look it up", ctx)
        row = self.conn.execute(
            "SELECT subject, version, schema FROM cdc_schemas WHERE fingerprint = %s ORDER BY version DESC LIMIT 1",
            (fp,),
        ).fetchone()
        if row is None:
            raise error_at(UnknownSchemaError, f"no typed CDC schema with fingerprint {fp.hex()} in {TABLE}", ctx)
        subject, number, raw = row
        return TypedVersion(subject, number, raw, fp, single_object_header(fp))

    def _fetch(self, schema_id: int, ctx: Any) -> TypedVersion:
        if self.registry is None:
            raise error_at(UnknownSchemaError, f"registry schema id {schema_id} but no schema registry is configured", ctx)
        try:
            schema = self.registry.get_schema(schema_id)
        except registry_error() as exc:
            if is_not_found(exc):
                raise error_at(UnknownSchemaError, f"registry has no schema id {schema_id}", ctx) from exc
            raise RegistryUnavailableError(f"schema registry error fetching id {schema_id}: {exc}") from exc
        raw = json.loads(schema.schema_str)
        return TypedVersion("", 0, raw, fingerprint(raw), confluent_header(schema_id))


def make_decoder(settings: Settings, conn: psycopg.Connection[Any] | None = None) -> TypedDecoder:
    """A decoder for ``settings``: the registry when one is configured, else ``cdc_schemas`` over ``conn``
    (a new connection to ``settings.pg`` when none is given)."""
    url = settings.kafka.schema_registry_url
    if url:
        return TypedDecoder(registry=registry_client(url))
    return TypedDecoder(conn=conn if conn is not None else connect(settings.pg, "cdc-schemas-reader"))
