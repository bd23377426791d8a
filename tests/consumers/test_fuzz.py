"""Hostile input: mutated golden payloads through decode -> limits -> validate -> map, and
mutated pgoutput frames through the CDC decoder.

These are pure functions (no Kafka, no PostgreSQL): ``streams.consumer.admit.admit`` is the
very function the consumer loop runs on every record, and ``default_policy`` the very
classification it applies to what admit raises. Every input must end as rows or as a
dead-letter decision with a reason; ``Action.RAISE`` (the loop would stop the consumer), any
exception escaping the policy, an input that takes more than a second, or memory growth fails.

The byte mutations are atheris-style (bit flips, interesting bytes, inserted huge varints,
cuts, duplications, splices of the two golden bodies) from a fixed seed, so a failure is
reproducible: the message names the seed and the input's index. ``INSIGHTS_FUZZ_INPUTS``
scales the count (default 20,000 per subject and 20,000 frames, plus
INPUTS/20 structure-aware examples per subject through hypothesis).
"""

from __future__ import annotations

import os
import random
import resource
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from consumers.alerts.sink import AlertsSink
from consumers.scrape.sink import ScrapeSink
from core.errors import RecordTooLargeError
from core.paths import SCHEMAS_DIR
from core.settings import ConsumerSettings
from streams.cdc.errors import DecodeError
from streams.cdc.pgoutput import Delete, Insert, Relation, RelationCache, Update, decode
from streams.consumer.admit import admit
from streams.consumer.policy import Action, default_policy, describe
from streams.faults import ErrorClass
from streams.serde.codec import SINGLE_OBJECT_MAGIC, AvroDeserializer
from streams.serde.store import load_store

SEED = int(os.environ.get("INSIGHTS_FUZZ_SEED", "15"))
INPUTS = int(os.environ.get("INSIGHTS_FUZZ_INPUTS", "20000"))
LIMITS = ConsumerSettings()
EXAMPLES = SCHEMAS_DIR / "examples"

SINKS: dict[str, Any] = {"product_scraped": ScrapeSink(), "alert_triggered": AlertsSink()}

# varints that claim absurd lengths / counts / union branches (zig-zag encoded)
HUGE_VARINTS = [
    b"\xfe\xff\xff\xff\x0f",  # 2**31 - 1
    b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 2**63 - 1
    b"\x01",  # -1: a negative block count (a block with a byte size follows)
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # -2**63
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # a varint too long for 64 bits
]
INTERESTING = [0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF, 0xC3]


def _golden(subject: str) -> list[bytes]:
    """Every golden body of a subject, framed as single-object (what the producer sends)."""
    found = load_store(SCHEMAS_DIR).subject(subject)
    return [
        SINGLE_OBJECT_MAGIC + found.version(int(path.stem[1:])).fingerprint + path.read_bytes()
        for path in sorted((EXAMPLES / subject).glob("v*.bin"))
    ]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        # the 10-byte header is kept intact 9 times in 10: a broken fingerprint is refused
        # in one lookup, the body is where the decoder can be led astray
        lo = 10 if len(buf) > 10 and rng.random() < 0.9 else 0
        at = rng.randint(lo, max(lo, len(buf) - 1)) if buf else 0
        op = rng.randrange(8)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.choice(INTERESTING)
        elif op == 2:
            buf[at:at] = rng.choice(HUGE_VARINTS)
        elif op == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 5:
            del buf[at:]
        elif op == 6 and buf:
            end = min(len(buf), at + rng.randint(1, 32))
            buf[at:at] = buf[at:end] * rng.randint(1, 8)
        else:
            other = rng.choice(others)
            cut = rng.randint(0, len(other))
            buf[at:] = other[cut:]
    return bytes(buf)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _outcome(run: Callable[[], Any]) -> tuple[str, str]:
    """('rows', '') or ('dlq:<class>', reason); raises AssertionError on anything else."""
    try:
        run()
    except Exception as exc:  # everything the loop would hand to the policy
        decision = default_policy(exc)
        assert decision.action is Action.DEAD_LETTER, f"the loop would stop on {describe(exc)!r}"
        assert decision.error_class is not None
        reason = describe(exc)
        assert reason.strip(), "a dead letter without a reason"
        return f"dlq:{decision.error_class.value}", reason
    return "rows", ""


def _report(capsys: pytest.CaptureFixture[str], what: str, tally: Counter[str], seconds: float) -> None:
    with capsys.disabled():
        print(f"\nfuzz {what}: {sum(tally.values())} inputs in {seconds:.1f}s: {dict(sorted(tally.items()))}")


@pytest.mark.parametrize("subject", sorted(SINKS))
def test_mutated_avro_ends_as_rows_or_a_dead_letter_with_a_reason(
    subject: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = SINKS[subject]
    decoder = AvroDeserializer(load_store(SCHEMAS_DIR), subject, None)
    golden = _golden(subject)
    others = golden + _golden("alert_triggered" if subject == "product_scraped" else "product_scraped")
    rng = random.Random(f"{SEED}-{subject}")
    tally: Counter[str] = Counter()
    rss_before = _rss_mb()
    slowest = 0.0
    started = time.perf_counter()
    for i in range(INPUTS):
        data = mutate(rng, rng.choice(golden), others)
        t0 = time.perf_counter()
        try:
            kind, _ = _outcome(lambda: admit(data, decoder, sink.prepare, None, LIMITS))
        except AssertionError as exc:
            raise AssertionError(f"seed {SEED} input {i} ({data.hex()}): {exc}") from exc
        slowest = max(slowest, time.perf_counter() - t0)
        tally[kind] += 1
    _report(capsys, subject, tally, time.perf_counter() - started)
    assert sum(tally.values()) == INPUTS
    assert tally["rows"] > 0 and tally["dlq:corrupt_payload"] > 0, tally  # the mutations reach both ends
    assert slowest < 1.0, f"one input took {slowest:.2f}s"
    assert _rss_mb() - rss_before < 200, "memory grew by more than 200 MB"


def _decoded(subject: str) -> dict[str, Any]:
    return AvroDeserializer(load_store(SCHEMAS_DIR), subject, None)(_golden(subject)[-1], None)


ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
    | st.binary(max_size=20) | st.decimals(allow_nan=True) | st.datetimes() | st.uuids(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=10,
)


@pytest.mark.parametrize("subject", sorted(SINKS))
def test_hostile_field_values_end_as_rows_or_a_dead_letter(subject: str) -> None:
    """Structure-aware: one to three fields of the decoded golden record replaced by any value
    of any type (what a buggy or hostile writer schema could make the decoder hand over)."""
    base = _decoded(subject)
    sink = SINKS[subject]
    fields = sorted(base)

    @hsettings(max_examples=int(INPUTS / 20), deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(st.sampled_from(fields), ANY_VALUE, min_size=1, max_size=3))
    def run(changes: dict[str, Any]) -> None:
        record = {**base, **changes}
        _outcome(lambda: admit(b"x", lambda _v, _c: record, sink.prepare, None, LIMITS))

    run()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("product_description", "d" * 50_000_000, "product_description is 50000000 characters long"),
        ("bullet_points", ["b"] * 10_000, "bullet_points has 10000 items"),
        ("images", ["https://x/i.jpg"] * 10_000, "images has 10000 items"),
    ],
)
def test_oversized_records_are_refused_with_a_reason_before_postgresql(field: str, value: Any, reason: str) -> None:
    record = {**_decoded("product_scraped"), field: value}
    prepared: list[Any] = []
    with pytest.raises(RecordTooLargeError, match=reason) as caught:
        admit(b"x", lambda _v, _c: record, lambda r: prepared.append(r), None, LIMITS)
    assert prepared == [], "the rows were built: the record would have reached PostgreSQL"
    assert default_policy(caught.value).error_class is ErrorClass.VALIDATION
    assert "INSIGHTS_MAX_" in describe(caught.value)  # the reason names the setting to change


def test_an_oversized_encoded_record_is_refused_before_decoding() -> None:
    decoded: list[bytes] = []
    big = b"\xc3\x01" + b"\0" * (LIMITS.max_record_bytes + 1)
    with pytest.raises(RecordTooLargeError, match="INSIGHTS_MAX_RECORD_BYTES"):
        admit(big, lambda v, _c: decoded.append(v) or {}, lambda r: r, None, LIMITS)
    assert decoded == []


# --- pgoutput -------------------------------------------------------------------------


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def _tuple(*cols: object) -> bytes:
    out = struct.pack("!H", len(cols))
    for col in cols:
        if col is None:
            out += b"n"
        else:
            raw = str(col).encode()
            out += b"t" + struct.pack("!I", len(raw)) + raw
    return out


FRAMES = [
    b"B" + struct.pack("!QqI", 0x16B3748, 757_000_000_000_000, 731),
    b"C" + struct.pack("!BQQq", 0, 0x16B3748, 0x16B3780, 757_000_000_000_000),
    b"R" + struct.pack("!I", 16390) + _cstr("public") + _cstr("products") + b"d" + struct.pack("!H", 3)
    + b"\x01" + _cstr("asin") + struct.pack("!Ii", 1043, -1)
    + b"\x00" + _cstr("title") + struct.pack("!Ii", 25, -1)
    + b"\x00" + _cstr("price") + struct.pack("!Ii", 1700, 655366),
    b"I" + struct.pack("!I", 16390) + b"N" + _tuple("B000000001", "a title", "19.99"),
    b"U" + struct.pack("!I", 16390) + b"O" + _tuple("B000000001", "old", None) + b"N" + _tuple("B000000001", "new", "1"),
    b"D" + struct.pack("!I", 16390) + b"K" + _tuple("B000000001", None, None),
    b"T" + struct.pack("!IB", 2, 1) + struct.pack("!II", 16390, 16400),
    b"Y" + struct.pack("!I", 90000) + _cstr("public") + _cstr("mood"),
    b"O" + struct.pack("!Q", 0x16B3748) + _cstr("origin"),
    b"M" + b"\x01" + struct.pack("!Q", 0x16B3748) + _cstr("insights") + struct.pack("!I", 5) + b"hello",
]


def test_mutated_pgoutput_frames_decode_or_raise_decode_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The CDC reader stops on a DecodeError (a protocol mismatch, with its reason); any other
    exception would be a crash without one. A decoded change must also find its relation."""
    rng = random.Random(f"{SEED}-pgoutput")
    cache = RelationCache()
    tally: Counter[str] = Counter()
    slowest = 0.0
    rss_before = _rss_mb()
    started = time.perf_counter()
    for i in range(INPUTS):
        frame = mutate(rng, rng.choice(FRAMES), FRAMES) if rng.random() < 0.95 else rng.choice(FRAMES)
        t0 = time.perf_counter()
        try:
            message = decode(frame)
            if isinstance(message, Relation):
                cache.update(message)
                message.key_columns  # noqa: B018 - the derived views must not fail either
            elif isinstance(message, Insert | Update | Delete):
                relation = cache.get(message.relation_oid)  # DecodeError when unknown
                for values in (message.new if not isinstance(message, Delete) else message.old, ):
                    assert len(values) <= 65535
                del relation
            tally[type(message).__name__] += 1
        except DecodeError as exc:
            assert str(exc).strip()
            tally["DecodeError"] += 1
        except Exception as exc:
            raise AssertionError(f"seed {SEED} frame {i} ({frame.hex()}): {type(exc).__name__}: {exc}") from exc
        slowest = max(slowest, time.perf_counter() - t0)
    _report(capsys, "pgoutput", tally, time.perf_counter() - started)
    assert tally["DecodeError"] > 0 and sum(v for k, v in tally.items() if k != "DecodeError") > 0
    assert slowest < 1.0, f"one frame took {slowest:.2f}s"
    assert _rss_mb() - rss_before < 200


def test_the_golden_inputs_themselves_map_to_rows() -> None:
    """The fuzz starts from good inputs: each golden record maps, each golden frame decodes."""
    for subject, sink in SINKS.items():
        decoder = AvroDeserializer(load_store(SCHEMAS_DIR), subject, None)
        for data in _golden(subject):
            assert admit(data, decoder, sink.prepare, None, LIMITS)
    for frame in FRAMES:
        decode(frame)
