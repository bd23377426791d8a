"""The pure parts of the replay tools: option parsing, reason kinds, DLQ filters, range texts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import ConfigError
from streams.dlq import H_ERROR_CLASS, H_REASON
from streams.dlq_workflow import DeadRecord, Filters, reason_kind
from streams.replay_events import PartitionRange, RangeRequest, parse_partition_offsets


def test_partition_offsets_parse_and_refuse_what_is_not_p_colon_o() -> None:
    assert parse_partition_offsets(["0:100", "2:5"], "--from-offset") == {0: 100, 2: 5}
    for bad in ("1", "a:1", "1:-2", "-1:3", "1:2:3"):
        with pytest.raises(ConfigError, match="PARTITION:OFFSET"):
            parse_partition_offsets([bad], "--from-offset")


def test_a_request_text_changes_with_every_range_option() -> None:
    when = datetime(2025, 5, 1, tzinfo=UTC)
    texts = {
        RangeRequest().describe("scrape"),
        RangeRequest(partitions=(0,)).describe("scrape"),
        RangeRequest(from_time=when).describe("scrape"),
        RangeRequest(to_time=when).describe("scrape"),
        RangeRequest(from_offsets={0: 1}).describe("scrape"),
        RangeRequest(to_offsets={0: 1}).describe("scrape"),
        RangeRequest().describe("alerts"),
    }
    assert len(texts) == 7
    assert RangeRequest(partitions=(2, 1)).describe("s") == RangeRequest(partitions=(1, 2)).describe("s")


def test_partition_range_counts_what_is_done() -> None:
    r = PartitionRange("t", 0, start=10, end=20, position=14)
    assert (r.events, r.done) == (10, 4)
    assert PartitionRange("t", 0, 10, 20, 3).done == 0 and PartitionRange("t", 0, 10, 20, 99).done == 10


def test_reason_kinds_group_values_but_keep_names_and_sqlstates() -> None:
    a = 'ForeignKeyViolation [23503]: insert or update on table "alerts_2025_03" violates foreign key constraint ' \
        '"fk_alerts_rule" (Key (rule_id)=(99) is not present in table "alert_rules".)'
    b = a.replace("(99)", "(98)")
    assert reason_kind(a) == reason_kind(b)
    assert "[23503]" in reason_kind(a) and "fk_alerts_rule" in reason_kind(a) and "alerts_2025_03" in reason_kind(a)
    assert reason_kind("schema id 12 unknown") == "schema id N unknown"
    assert reason_kind("") == "(no reason)"


def _record(error_class: str, reason: str, partition: int = 0, offset: int = 0) -> DeadRecord:
    return DeadRecord(partition, offset, None, None, None, {H_ERROR_CLASS: error_class.encode(), H_REASON: reason.encode()})


def test_dlq_filters() -> None:
    fk = _record("constraint", "Key (rule_id)=(99) is not present", 0, 5)
    assert Filters().match(fk)
    assert Filters(classes=frozenset({"constraint"})).match(fk)
    assert not Filters(classes=frozenset({"validation"})).match(fk)
    assert Filters(reason="RULE_ID)=(99").match(fk) and not Filters(reason="(98)").match(fk)
    assert Filters(offsets={0: 5}).match(fk) and not Filters(offsets={0: 6}).match(fk)
    assert not Filters(offsets={1: 5}).match(fk)
