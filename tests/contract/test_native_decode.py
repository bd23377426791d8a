"""cavro's decode path (streams/serde/native.py) reads exactly what fastavro reads.

The reference is the same deserializer built with ``native=False`` (fastavro only). "The
same" is compared by ``repr``, not ``==``: ``Decimal('1.50') == Decimal('1.5')`` and two
aware datetimes in different zones compare equal, yet they are stored differently. For
every subject and every writer version: golden records, generated events (hypothesis), the
rows the sinks prepare from them (what COPY stores), and the fuzz test's mutations of the
golden bodies (every poison input must end in the same record or the same error, class and
message). A synthetic schema covers the logical types and shapes the events do not
(negative and large decimals, timestamps before 1970, nested unions, maps, enums, ints out
of 32 bits); a schema with ``date`` stays with fastavro (native.py says why).
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timezone
from decimal import Decimal
from io import BytesIO
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from consumers.alerts.sink import AlertsSink
from consumers.scrape.sink import ScrapeSink
from core.paths import SCHEMAS_DIR
from streams.serde import RecordContext
from streams.serde import native
from streams.serde.codec import AvroDeserializer, SingleObjectSerializer
from streams.serde.store import load_store
from tests.consumers.test_fuzz import _golden, mutate
from tests.contract.strategies import EVENTS

STORE = load_store(SCHEMAS_DIR)
SINKS: dict[str, Any] = {"product_scraped": ScrapeSink(), "alert_triggered": AlertsSink()}
CTX = RecordContext("t", 0, 0)
FAST = hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(subject: str) -> tuple[AvroDeserializer, AvroDeserializer]:
    return AvroDeserializer(STORE, subject), AvroDeserializer(STORE, subject, native=False)


def _outcome(decode: AvroDeserializer, data: bytes) -> str:
    try:
        return "record " + repr(decode(data, CTX))
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return f"error {type(exc).__name__}: {exc}"


def test_cavro_is_in_use_for_every_local_version() -> None:
    """Not a silent fallback: on the pinned lock every plain-decode plan has its native decoder."""
    assert native.available()
    for subject in SINKS:
        nat, ref = _pair(subject)
        assert all(route.native is not None for route in nat._by_fingerprint.values())
        assert all(route.native is None for route in ref._by_fingerprint.values())


@pytest.mark.parametrize("subject", sorted(SINKS))
def test_golden_records_and_their_rows_are_identical(subject: str) -> None:
    nat, ref = _pair(subject)
    goldens = _golden(subject)
    assert goldens
    for data in goldens:
        record = nat(data, CTX)
        assert repr(record) == repr(ref(data, CTX))
        assert repr(SINKS[subject].prepare(record)) == repr(SINKS[subject].prepare(ref(data, CTX)))


@pytest.mark.parametrize("subject", sorted(SINKS))
def test_generated_events_decode_and_map_identically_from_every_version(subject: str) -> None:
    nat, ref = _pair(subject)
    writers = [SingleObjectSerializer(v) for v in STORE.subject(subject).versions]

    @FAST
    @given(EVENTS[subject])
    def check(event: Any) -> None:
        for write in writers:
            data = write(event, CTX)
            record, expected = nat(data, CTX), ref(data, CTX)
            assert repr(record) == repr(expected)
            assert repr(SINKS[subject].prepare(record)) == repr(SINKS[subject].prepare(expected))

    check()


@pytest.mark.parametrize("subject", sorted(SINKS))
def test_every_mutated_body_ends_the_same_way(subject: str) -> None:
    """The poison cases of tests/consumers/test_fuzz.py: same record or same error, message included."""
    nat, ref = _pair(subject)
    goldens = _golden(subject)
    rng = random.Random(17)
    kinds = {"record": 0, "error": 0}
    for index in range(int(os.environ.get("INSIGHTS_FUZZ_INPUTS", "20000")) // 4):
        data = mutate(rng, rng.choice(goldens), goldens)
        got, expected = _outcome(nat, data), _outcome(ref, data)
        assert got == expected, f"input {index} (seed 17): {data.hex()}"
        kinds[got.split(" ", 1)[0]] += 1
    assert kinds["record"] and kinds["error"]  # both ends exercised


def test_bytes_after_the_record_are_refused_even_when_they_look_like_the_sentinel() -> None:
    nat, ref = _pair("product_scraped")
    good = _golden("product_scraped")[-1]
    for tail in (b"\x00", b"\x00\x00", b"\x01", native.SENTINEL[:5], native.SENTINEL, native.SENTINEL + b"\x01"):
        got = _outcome(nat, good + tail)
        assert got.startswith("error CorruptPayloadError") and got == _outcome(ref, good + tail)
    for cut in (1, 2, 17):
        assert _outcome(nat, good[:-cut]) == _outcome(ref, good[:-cut])
        assert _outcome(nat, good[:-cut]).startswith("error CorruptPayloadError")


# --- logical types and shapes beyond today's events ---------------------------------------

WIDE = {
    "type": "record",
    "name": "Wide",
    "fields": [
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 4}},
        {"name": "maybe_amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "maybe_at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "small", "type": "int"},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "UNKNOWN"], "default": "UNKNOWN"}},
        {"name": "tags", "type": {"type": "map", "values": ["null", "string", "long", "double", "boolean"]}},
        {"name": "items", "type": {"type": "array", "items": {
            "type": "record", "name": "Item", "fields": [
                {"name": "n", "type": "int"}, {"name": "f", "type": "float"}, {"name": "b", "type": "bytes"},
                {"name": "inner", "type": ["null", "Item"], "default": None},
            ]}}},
        {"name": "text", "type": ["null", "string"], "default": None},
    ],
}
UTC = timezone.utc
item = st.deferred(lambda: st.fixed_dictionaries({
    "n": st.integers(-(2**31), 2**31 - 1),
    "f": st.floats(width=32, allow_nan=False),
    "b": st.binary(max_size=8),
    "inner": st.none() | item,
}))
wide = st.fixed_dictionaries({
    "amount": st.decimals(min_value=Decimal("-9999999999999999.9999"), max_value=Decimal("9999999999999999.9999"),
                          places=4, allow_nan=False, allow_infinity=False),
    "maybe_amount": st.none() | st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"),
                                            places=2, allow_nan=False, allow_infinity=False),
    "at": st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    "maybe_at": st.none() | st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    "small": st.integers(-(2**31), 2**31 - 1),
    "id": st.uuids().map(str),
    "kind": st.sampled_from(["A", "B", "UNKNOWN"]),
    "tags": st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5) | st.integers(-(2**63), 2**63 - 1)
                            | st.floats(allow_nan=False) | st.booleans(), max_size=4),
    "items": st.lists(item, max_size=3),
    "text": st.none() | st.text(max_size=20),
})


def test_wide_schema_values_decode_identically() -> None:
    decode = native.native_decoder(WIDE)
    assert decode is not None
    parsed = fastavro.parse_schema(WIDE)

    @hsettings(max_examples=300, deadline=None)
    @given(wide)
    def check(value: dict[str, Any]) -> None:
        out = BytesIO()
        fastavro.schemaless_writer(out, parsed, value)
        body = out.getvalue()
        expected = fastavro.schemaless_reader(BytesIO(body), parsed, None)
        assert repr(decode(body)) == repr(expected)
        # a body it cannot vouch for goes back to fastavro, never a different record
        for cut in (1, len(body) // 2):
            assert decode(body[:-cut]) is None or len(body) <= cut
        assert decode(body + b"\x00") is None

    check()


def test_timestamps_keep_their_zone_and_decimals_their_scale() -> None:
    decode = native.native_decoder(WIDE)
    assert decode is not None
    parsed = fastavro.parse_schema(WIDE)
    value = {"amount": Decimal("-1.5000"), "maybe_amount": Decimal("0.10"), "at": datetime(1969, 12, 31, 23, 59, 59, 999999, UTC),
             "maybe_at": None, "small": -7, "id": "00000000-0000-0000-0000-000000000001",
             "kind": "B", "tags": {"x": None, "y": 1.5}, "items": [], "text": "é"}
    out = BytesIO()
    fastavro.schemaless_writer(out, parsed, value)
    record = decode(out.getvalue())
    assert record is not None
    assert repr(record["amount"]) == "Decimal('-1.5000')" and repr(record["maybe_amount"]) == "Decimal('0.10')"
    assert record["at"].tzinfo is UTC and record["at"] == value["at"]
    assert record["small"] == -7
    assert repr(record) == repr(fastavro.schemaless_reader(BytesIO(out.getvalue()), parsed, None))


def test_an_int_out_of_32_bits_is_read_whole_as_fastavro_reads_it() -> None:
    """A corrupt varint in an ``int`` field: cavro alone would wrap it to a plausible number."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}, {"name": "m", "type": ["null", "int"]}]}
    decode = native.native_decoder(schema)
    assert decode is not None
    wide_long = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "n", "type": "long"}, {"name": "m", "type": ["null", "long"]}]})
    out = BytesIO()
    fastavro.schemaless_writer(out, wide_long, {"n": 319484298644, "m": -(2**40)})
    assert decode(out.getvalue()) == {"n": 319484298644, "m": -(2**40)}
    assert decode(out.getvalue()) == fastavro.schemaless_reader(BytesIO(out.getvalue()), fastavro.parse_schema(schema), None)


def test_a_date_schema_stays_with_fastavro() -> None:
    for logical in ("date", "time-millis"):
        schema = {"type": "record", "name": "R", "fields": [{"name": "d", "type": ["null", {"type": "int", "logicalType": logical}]}]}
        assert native.native_decoder(schema) is None


def test_without_cavro_everything_decodes_with_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_AVAILABLE", False)
    assert native.native_decoder(WIDE) is None
    nat = AvroDeserializer(STORE, "product_scraped")
    assert all(route.native is None for route in nat._by_fingerprint.values())
    data = _golden("product_scraped")[0]
    assert repr(nat(data, CTX)) == repr(AvroDeserializer(STORE, "product_scraped", native=False)(data, CTX))

