"""The reader between the wire and the producer, without a network: CopyData frames in,
records out (a fake producer that acknowledges on poll)."""

from __future__ import annotations

import struct
import threading
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

import streams.cdc.reader as reader_module
from core.settings import Settings, load_settings
from streams.cdc.envelope import Encoder, make_decoder, make_encoder
from streams.cdc.errors import CdcError
from streams.cdc.reader import CdcReader
from streams.service.health import Health
from streams.topics import cdc_topic_name

VARCHAR, NUMERIC, BOOL, TSTZ, FLOAT8, INT4, TEXT_ARRAY = 1043, 1700, 16, 1184, 701, 23, 1009
OID = 5001
COLUMNS = [("asin", VARCHAR, True), ("title", VARCHAR, False), ("price", NUMERIC, False), ("active", BOOL, False),
           ("updated_at", TSTZ, False), ("score", FLOAT8, False), ("n", INT4, False), ("tags", TEXT_ARRAY, False)]
PARTITIONS = 3


def _w(payload: bytes, lsn: int = 100) -> bytes:
    return b"w" + struct.pack("!QQQ", lsn, lsn + 1, 0) + payload


def _tuple(*values: bytes | None) -> bytes:
    out = struct.pack("!H", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack("!I", len(v)) + v
    return out


def _row(asin: str, price: str = "1.50") -> bytes:
    return _tuple(asin.encode(), "títle".encode(), price.encode(), b"t", b"2024-01-02 03:04:05.5+00", b"1.5", None,
                  b'{a,"b c",NULL}')


def frames() -> list[bytes]:
    relation = b"R" + struct.pack("!I", OID) + b"public\0products\0d" + struct.pack("!H", len(COLUMNS))
    for name, oid, key in COLUMNS:
        relation += bytes([1 if key else 0]) + name.encode() + b"\0" + struct.pack("!Ii", oid, -1)
    rows = [
        b"I" + struct.pack("!I", OID) + b"N" + _row("A1"),
        b"I" + struct.pack("!I", OID) + b"N" + _row("A2"),
        b"I" + struct.pack("!I", OID) + b"N" + _tuple(b"A3", b"t", None, None, None, None, b"7", None),
        b"U" + struct.pack("!I", OID) + b"N" + _row("A1", "2.00"),  # same key
        b"U" + struct.pack("!I", OID) + b"K" + _tuple(b"A2", *[None] * 7) + b"N" + _row("B2"),  # key changed
        b"D" + struct.pack("!I", OID) + b"K" + _tuple(b"A3", *[None] * 7),
        b"T" + struct.pack("!IB", 1, 0) + struct.pack("!I", OID),
    ]
    return [
        _w(b"B" + struct.pack("!QqI", 900, 700_000_000_000_000, 42)),  # a transaction before the relation is known
        _w(relation),
        *[_w(r, 200 + i) for i, r in enumerate(rows)],
        _w(b"C" + struct.pack("!BQQq", 0, 900, 901, 700_000_000_000_000)),
    ]


class FakeProducer:
    """Records what is produced; ``poll`` acknowledges everything queued (or fails it)."""

    def __init__(self, error: KafkaError | None = None) -> None:
        self.records: list[tuple[str, bytes | None, int | None, bytes]] = []
        self._queued: list[Any] = []
        self.error = error

    def produce(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                on_delivery: Any = None) -> None:
        self.records.append((topic, key, partition, value))
        self._queued.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        queued, self._queued = self._queued, []
        for cb in queued:
            cb(self.error, None)
        return len(queued)

    def flush(self, timeout: float = 0) -> int:
        return self.poll()

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=dict.fromkeys(range(PARTITIONS)))})


@pytest.fixture
def cdc_config() -> Settings:
    return load_settings(metrics_port=0, cdc_slot_name="unit_slot")


def _reader(settings: Settings, producer: FakeProducer, **kwargs: Any) -> CdcReader:
    reader = CdcReader(settings, producer=producer, **kwargs)  # type: ignore[arg-type]
    reader._known_topics.add(cdc_topic_name(settings, "products"))  # no topic admin in a unit test
    return reader


def _feed(reader: CdcReader, data: list[bytes]) -> None:
    for frame in data:
        reader._handle(frame)
    reader._poll(0)


def test_fast_and_reference_paths_send_the_same_records(cdc_config: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    real_decode = reader_module.decode
    monkeypatch.setattr(reader_module, "decode", lambda payload: decoded.append(payload[0]) or real_decode(payload))

    fast = _reader(cdc_config, FakeProducer())
    _feed(fast, frames())
    fast_decoded, decoded[:] = list(decoded), []
    encode = make_encoder(cdc_config)
    reference = _reader(cdc_config, FakeProducer(), encoder=Encoder(encode, None))  # no header: dicts, then encode
    _feed(reference, frames())

    assert fast.producer.records == reference.producer.records  # type: ignore[attr-defined]
    assert ord("I") not in fast_decoded  # every Insert went from the raw frame to the producer
    assert decoded.count(ord("I")) == 3
    decode = make_decoder(cdc_config)
    ops = [(key, partition, decode(value)["op"]) for _, key, partition, value in fast.producer.records]  # type: ignore[attr-defined]
    assert ops == [
        (b'{"asin":"A1"}', None, "c"), (b'{"asin":"A2"}', None, "c"), (b'{"asin":"A3"}', None, "c"),
        (b'{"asin":"A1"}', None, "u"),
        (b'{"asin":"A2"}', None, "d"), (b'{"asin":"B2"}', None, "u"),
        (b'{"asin":"A3"}', None, "d"),
        *[(None, p, "t") for p in range(PARTITIONS)],
    ]
    assert fast.tracker.confirmed == reference.tracker.confirmed == 901


def test_metrics_go_to_the_given_registry_and_acks_make_kafka_healthy(cdc_config: Settings) -> None:
    registry, health = CollectorRegistry(), Health()
    health.failing("kafka", "brokers down a moment ago")
    reader = _reader(cdc_config, FakeProducer(), registry=registry, health=health, stop=threading.Event())
    _feed(reader, frames())
    labels = {"slot": "unit_slot", "table": "products"}
    assert registry.get_sample_value("insights_cdc_changes_total", {**labels, "op": "c"}) == 3
    assert registry.get_sample_value("insights_cdc_changes_total", {**labels, "op": "t"}) == PARTITIONS
    assert registry.get_sample_value("insights_cdc_transactions_total", {"slot": "unit_slot"}) == 1
    assert registry.get_sample_value("insights_cdc_commit_to_publish_seconds_count", {"slot": "unit_slot"}) == 7 + PARTITIONS
    assert prometheus_client.REGISTRY.get_sample_value("insights_cdc_transactions_total", {"slot": "unit_slot"}) is None
    assert not health.is_failing("kafka")


def test_a_failed_delivery_marks_kafka_failing_and_stops_the_loop(cdc_config: Settings) -> None:
    health = Health()
    reader = _reader(cdc_config, FakeProducer(KafkaError(KafkaError._MSG_TIMED_OUT)), health=health)
    _feed(reader, frames())
    assert health.is_failing("kafka")
    assert reader.tracker.confirmed == 0  # nothing acknowledged, nothing confirmed
    with pytest.raises(CdcError, match="Kafka did not accept"):
        reader._drain()


def test_a_librdkafka_error_marks_kafka_failing_until_a_probe_succeeds(cdc_config: Settings) -> None:
    health = Health()
    reader = _reader(cdc_config, FakeProducer(), health=health)
    reader._kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert health.is_failing("kafka")
    reader._probe_kafka()  # metadata answered: the brokers are back
    assert not health.is_failing("kafka")


def test_a_row_change_without_a_key_is_one_record_keyed_by_the_row_on_either_path(cdc_config: Settings) -> None:
    """Only a truncate is copied to every partition: the fast path and the reference path agree."""
    keyless = b"R" + struct.pack("!I", OID) + b"public\0products\0d" + struct.pack("!H", 1)
    keyless += b"\0" + b"note\0" + struct.pack("!Ii", VARCHAR, -1)
    data = [
        _w(b"B" + struct.pack("!QqI", 900, 0, 42)),
        _w(keyless),
        *[_w(b"I" + struct.pack("!I", OID) + b"N" + _tuple(f"n{i}".encode()), 200 + i) for i in range(3)],
        _w(b"C" + struct.pack("!BQQq", 0, 900, 901, 0)),
    ]
    fast = _reader(cdc_config, FakeProducer())
    _feed(fast, data)
    reference = _reader(cdc_config, FakeProducer(), encoder=Encoder(make_encoder(cdc_config), None))
    _feed(reference, data)
    assert fast.producer.records == reference.producer.records  # type: ignore[attr-defined]
    # keyed by the whole row (envelope.keyed), one record each, the partitioner's choice
    assert [(key, partition) for _, key, partition, _ in fast.producer.records] == [  # type: ignore[attr-defined]
        (f'{{"note":"n{i}"}}'.encode(), None) for i in range(3)
    ]
