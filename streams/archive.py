"""Archives: Kafka records and dropped partitions' rows, kept beyond retention.

An archive is a directory of Avro object container files (fastavro, ``deflate``
compressed, the container's schema embedded in each file) and one ``manifest.json``
listing every file with what it holds and its SHA-256. Two kinds of file:

* **records** (``insights archive export``): one file per topic partition range. Each
  Avro record is an :data:`RECORD_SCHEMA` envelope holding the Kafka record as it was
  (topic, partition, offset, timestamp, key, headers, and the value's **original bytes**).
  Events are kept per writer schema, not resolved to one reader schema: the value bytes
  are the producer's own (Confluent or single-object encoding), so a replay from the
  archive decodes them exactly as the live consumer does, with the schema the bytes
  name, and a re-publish (``--to-topic``) sends the very bytes that were sent first.
* **rows** (``insights db partitions prune --archive``): one file per dropped partition.
  Each Avro record is one row in PostgreSQL's COPY text format (:data:`ROW_SCHEMA`); the
  manifest lists the columns and their types. COPY text round-trips every type exactly,
  so ``insights archive restore`` puts back identical rows (ids included).

``verify`` recomputes every checksum and re-reads every file, checking its count and
(for records) that its offsets are in its range.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg import sql

from core.errors import InsightsError
from core.settings import Settings
from streams.kafka import consumer_config
from streams.producer import EventProducer

MANIFEST = "manifest.json"
FORMAT = "insights-archive/1"
CODEC = "deflate"
#: on a record re-published from an archive: ``<file>@<offset>`` it came from
H_FROM_ARCHIVE = "insights.replay.archive"

RECORD_SCHEMA = fastavro.parse_schema({
    "type": "record",
    "name": "ArchivedRecord",
    "namespace": "insights.archive",
    "doc": "A Kafka record as it was: the value's bytes are the producer's (per writer schema).",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": ["null", "long"], "default": None},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "Header",
            "fields": [{"name": "name", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}],
        }}, "default": []},
    ],
})

ROW_SCHEMA = fastavro.parse_schema({
    "type": "record",
    "name": "ArchivedRow",
    "namespace": "insights.archive",
    "doc": "One table row in PostgreSQL's COPY text format (columns: see the manifest).",
    "fields": [{"name": "copy_text", "type": "string"}],
})

#: ``(done, total)``
Progress = Callable[[int, int], None]


class ArchiveError(InsightsError):
    """An archive is missing, damaged, or does not hold what was asked for."""


# --- files and the manifest ----------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise ArchiveError(f"{directory} is not an archive: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise ArchiveError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def _add_to_manifest(directory: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Append ``entries`` (replacing entries of the same file name); written atomically."""
    path = directory / MANIFEST
    manifest = load_manifest(directory) if path.exists() else {"format": FORMAT, "files": []}
    names = {e["file"] for e in entries}
    manifest["files"] = [e for e in manifest["files"] if e["file"] not in names] + list(entries)
    manifest["updated_at"] = datetime.now(UTC).isoformat()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def _write_container(path: Path, schema: Any, records: Iterable[dict[str, Any]], metadata: dict[str, str]) -> int:
    """Write a container file (via a temporary name, fsynced); return the record count."""
    counted = 0

    def counting() -> Iterator[dict[str, Any]]:
        nonlocal counted
        for record in records:
            counted += 1
            yield record

    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        fastavro.writer(f, schema, counting(), codec=CODEC, metadata=metadata, sync_interval=256 * 1024)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return counted


def read_container(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        yield from fastavro.reader(f)


# --- records -----------------------------------------------------------------------------


@dataclass
class ExportedFile:
    file: str
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    count: int
    first_time: str | None
    last_time: str | None
    sha256: str
    bytes: int
    kind: str = "records"
    value_subject: str | None = None
    encoding: str = "original value bytes, per writer schema"


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _read_range(settings: Settings, topic: str, partition: int, start: int, end: int) -> Iterator[dict[str, Any]]:
    """The records of one partition in ``[start, end)`` as :data:`RECORD_SCHEMA` dicts."""
    if start >= end:
        return
    consumer = Consumer(consumer_config(settings.kafka, f"{settings.consumer.group}.archive",
                                        **{"enable.partition.eof": True}))
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        while True:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return
                    raise ArchiveError(f"cannot read {topic}[{partition}]: {err.str()}")
                if msg.offset() >= end:
                    return
                kind, ts = msg.timestamp()
                yield {
                    "topic": topic, "partition": partition, "offset": msg.offset(),
                    "timestamp_ms": ts if kind else None, "key": msg.key(), "value": msg.value(),
                    "headers": [{"name": k, "value": v} for k, v in (msg.headers() or [])],
                }
                if msg.offset() + 1 >= end:
                    return
    finally:
        consumer.close()


def export_records(
    settings: Settings,
    directory: Path,
    ranges: dict[tuple[str, int], tuple[int, int]],
    *,
    value_subject: str | None = None,
    progress: Progress | None = None,
) -> list[ExportedFile]:
    """Write one container file per topic partition range, then add them to the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    total = sum(max(e - s, 0) for s, e in ranges.values())
    done = 0
    exported: list[ExportedFile] = []
    for (topic, partition), (start, end) in sorted(ranges.items()):
        if start >= end:
            continue
        name = f"{topic}.p{partition}.{start}-{end}.avro"
        times: list[int] = []

        def tracked(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            nonlocal done
            for record in records:
                if record["timestamp_ms"] is not None:
                    if not times:
                        times.append(record["timestamp_ms"])
                    times[1:] = [record["timestamp_ms"]]
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(done, total)
                yield record

        meta = {"insights.topic": topic, "insights.partition": str(partition), "insights.kind": "records"}
        count = _write_container(directory / name, RECORD_SCHEMA, tracked(_read_range(settings, topic, partition, start, end)), meta)
        path = directory / name
        exported.append(ExportedFile(
            name, topic, partition, start, end, count, _iso(times[0] if times else None),
            _iso(times[-1] if times else None), sha256_of(path), path.stat().st_size, value_subject=value_subject,
        ))
    _add_to_manifest(directory, [vars(e) for e in exported])
    if progress is not None:
        progress(done, total)
    return exported


def archived_records(directory: Path, topics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The manifest's record files (of ``topics``), in topic, partition, offset order."""
    files = [e for e in load_manifest(directory)["files"] if e.get("kind") == "records"]
    if topics:
        files = [e for e in files if e["topic"] in topics]
    return sorted(files, key=lambda e: (e["topic"], e["partition"], e["start_offset"]))


class ArchivedMessage:
    """An archived record with the part of ``confluent_kafka.Message``'s interface the
    consumer loop reads, so the loop stores it exactly as a record read from Kafka."""

    __slots__ = ("_r",)

    def __init__(self, record: dict[str, Any]) -> None:
        self._r = record

    def topic(self) -> str:
        return str(self._r["topic"])

    def partition(self) -> int:
        return int(self._r["partition"])

    def offset(self) -> int:
        return int(self._r["offset"])

    def key(self) -> bytes | None:
        return self._r["key"]

    def value(self) -> bytes | None:
        return self._r["value"]

    def headers(self) -> list[tuple[str, bytes | None]]:
        return [(h["name"], h["value"]) for h in self._r["headers"]]

    def timestamp(self) -> tuple[int, int]:
        ts = self._r["timestamp_ms"]
        return (1, ts) if ts is not None else (0, -1)  # 1: TIMESTAMP_CREATE_TIME

    def error(self) -> None:
        return None


# --- rows ----------------------------------------------------------------------------------


@dataclass
class ArchivedPartition:
    file: str
    table: str
    partition: str
    lower: str
    upper: str
    columns: list[str]
    types: list[str]
    count: int
    sha256: str
    bytes: int
    kind: str = "rows"
    encoding: str = "PostgreSQL COPY text, one row per Avro record"


def _columns(conn: psycopg.Connection[Any], relation: str) -> tuple[list[str], list[str]]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (relation,),
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def export_partition(
    conn: psycopg.Connection[Any], directory: Path, *, table: str, schema: str, partition: str,
    lower: datetime, upper: datetime,
) -> ArchivedPartition:
    """Write one partition's rows to a container file and the manifest, under a SHARE lock
    (no row may change while it is read); the caller drops the partition afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    target = sql.Identifier(schema, partition)
    name = f"{table}.{partition}.rows.avro"
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(target))
        columns, types = _columns(conn, f"{schema}.{partition}")
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))

        def rows() -> Iterator[dict[str, Any]]:
            with conn.cursor().copy(sql.SQL("COPY {} ({}) TO STDOUT").format(target, cols)) as copy:
                pending = b""
                for chunk in copy:
                    pending += bytes(chunk)
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield {"copy_text": line.decode("utf-8")}
                if pending:
                    yield {"copy_text": pending.decode("utf-8")}

        meta = {"insights.table": table, "insights.partition": partition, "insights.kind": "rows"}
        count = _write_container(directory / name, ROW_SCHEMA, rows(), meta)
    path = directory / name
    entry = ArchivedPartition(name, table, partition, lower.isoformat(), upper.isoformat(), columns, types, count,
                              sha256_of(path), path.stat().st_size)
    _add_to_manifest(directory, [vars(entry)])
    return entry


@dataclass
class Restored:
    partition: str
    rows: int
    inserted: int


def restore_table(
    conn: psycopg.Connection[Any], directory: Path, table: str, *, partition: str | None = None,
    progress: Progress | None = None,
) -> list[Restored]:
    """Load archived partitions of ``table`` back: the partition is created again (through
    ``ensure_partitions``, which also takes over rows of its range from DEFAULT), the rows
    are inserted with ``ON CONFLICT DO NOTHING``, so a second restore inserts nothing."""
    entries = [e for e in load_manifest(directory)["files"] if e.get("kind") == "rows" and e["table"] == table]
    if partition is not None:
        entries = [e for e in entries if e["partition"] == partition]
    if not entries:
        raise ArchiveError(f"{directory} holds no archived partition of {table}"
                           + (f" named {partition}" if partition else ""))
    done: list[Restored] = []
    total = sum(e["count"] for e in entries)
    loaded = 0
    for entry in entries:
        path = directory / entry["file"]
        if sha256_of(path) != entry["sha256"]:
            raise ArchiveError(f"{path}: checksum differs from the manifest: the file is damaged")
        lower = datetime.fromisoformat(entry["lower"])
        with conn.transaction():
            conn.execute("SELECT ensure_partitions(%s::regclass, ARRAY[%s::timestamptz])", (table, lower))
            conn.execute(sql.SQL("CREATE TEMP TABLE insights_restore (LIKE {}) ON COMMIT DROP").format(
                sql.Identifier(table)))
            cols = sql.SQL(", ").join(map(sql.Identifier, entry["columns"]))
            with conn.cursor().copy(sql.SQL("COPY insights_restore ({}) FROM STDIN").format(cols)) as copy:
                for record in read_container(path):
                    copy.write(record["copy_text"].encode("utf-8") + b"\n")
                    loaded += 1
                    if progress is not None and loaded % 5000 == 0:
                        progress(loaded, total)
            # OVERRIDING SYSTEM VALUE: identity columns keep their archived values
            inserted = conn.execute(sql.SQL(
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM insights_restore ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(table), cols, cols)).rowcount
        done.append(Restored(entry["partition"], entry["count"], inserted))
    if progress is not None:
        progress(loaded, total)
    return done


# --- verify --------------------------------------------------------------------------------


@dataclass
class Verified:
    files: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)


def verify(directory: Path) -> Verified:
    """Every file of the manifest: present, its SHA-256 equal, its count equal, offsets in range."""
    manifest = load_manifest(directory)
    result = Verified()
    for entry in manifest["files"]:
        path = directory / entry["file"]
        result.files += 1
        if not path.is_file():
            result.problems.append(f"{entry['file']}: missing")
            continue
        if sha256_of(path) != entry["sha256"]:
            result.problems.append(f"{entry['file']}: SHA-256 differs from the manifest")
            continue
        count = 0
        try:
            for record in read_container(path):
                count += 1
                if entry["kind"] == "records" and not entry["start_offset"] <= record["offset"] < entry["end_offset"]:
                    result.problems.append(f"{entry['file']}: offset {record['offset']} outside its range")
                    break
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding
            result.problems.append(f"{entry['file']}: unreadable: {exc}")
            continue
        if count != entry["count"]:
            result.problems.append(f"{entry['file']}: {count} records, the manifest says {entry['count']}")
        result.records += count
    unlisted = sorted(p.name for p in directory.glob("*.avro") if p.name not in {e["file"] for e in manifest["files"]})
    result.problems.extend(f"{name}: not in the manifest" for name in unlisted)
    return result



def republish(settings: Settings, directory: Path, files: Sequence[dict[str, Any]], topic: str,
              progress: Progress | None = None) -> int:
    """Send the archived records of ``files`` to ``topic`` as they were (key, value, headers,
    timestamp), with a header naming the archive file: the consumers of ``topic`` store them
    through their idempotent path. Returns the records acknowledged."""
    total = sum(e["count"] for e in files)
    sent = 0
    with EventProducer(settings) as producer:
        for entry in files:
            path = directory / entry["file"]
            if sha256_of(path) != entry["sha256"]:
                raise ArchiveError(f"{entry['file']}: SHA-256 differs from the manifest (`insights archive verify`)")
            for record in read_container(path):
                headers = [(h["name"], h["value"] or b"") for h in record["headers"]]
                headers.append((H_FROM_ARCHIVE, f"{entry['file']}@{record['offset']}".encode()))
                producer.produce_event(topic, record["key"], record["value"], headers,
                                       timestamp_ms=record["timestamp_ms"])
                sent += 1
                if progress is not None and sent % 1000 == 0:
                    progress(sent, total)
        producer.flush()
    if progress is not None:
        progress(sent, total)
    return sent
