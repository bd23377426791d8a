"""The pure part: envelope validation and the batch fold (versions, TOAST, truncates)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.summaries.changes import Change, parse_change
from consumers.summaries.fold import fold
from consumers.summaries.sink import SummariesSink
from core.errors import RecordError
from streams.consumer.policy import Action, default_policy
from streams.faults import ErrorClass

T0 = "2024-01-15T10:00:00+00:00"


def envelope(table: str, op: str, commit_lsn: int, lsn: int, *, before: dict[str, Any] | None = None,
             after: dict[str, Any] | None = None, toast: list[str] | None = None) -> dict[str, Any]:
    return {
        "op": op, "before": before, "after": after, "unchanged_toast": toast or [],
        "key_columns": [], "source": {"lsn": lsn, "commit_lsn": commit_lsn, "xid": 1,
                                      "commit_time": datetime(2024, 1, 15, tzinfo=UTC), "schema": "public",
                                      "table": table, "snapshot": False},
    }


def snap(op: str, cl: int, lsn: int, sid: int = 1, **after: Any) -> Change:
    row = {"id": sid, "scraped_at": T0, "asin": "B1", "price": "10.00", "rating": None, "review_count": 1,
           "bsr_data": "{}", "availability_status": "x", **after}
    if op == "d":
        return parse_change(envelope("product_snapshots", "d", cl, lsn, before={"id": sid, "scraped_at": T0}))
    toast = [c for c, v in after.items() if v is ...]
    for column in toast:
        del row[column]
    return parse_change(envelope("product_snapshots", op, cl, lsn, after=row, toast=toast))


def test_parse_keeps_the_summary_columns_and_normalises_the_key() -> None:
    change = snap("c", 5, 6, price="12.30")
    assert change.key == (1, datetime(2024, 1, 15, 10, tzinfo=UTC))
    assert change.values is not None and change.values["price"] == "12.30" and "title" not in change.values
    assert change.version == (5, 6)
    assert change.commit_time_us == int(datetime(2024, 1, 15, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.mark.parametrize("broken, message", [
    (envelope("api_keys", "c", 1, 1, after={"id": 1}), "not one the summaries consume"),
    (envelope("products", "c", 1, 1, after={"title": "no key"}), "key column asin"),
    (envelope("products", "x", 1, 1, after={"asin": "B1"}), "unknown op"),
    (envelope("products", "u", 1, 1, after=None), "without its row image"),
    (envelope("product_snapshots", "c", 1, 1, after={"id": 1, "scraped_at": "yesterday"}), "ISO timestamp"),
    (envelope("product_snapshots", "c", 1, 1, after={"id": 1, "scraped_at": T0, "price": "cheap"}), "not a decimal"),
    (envelope("alerts", "c", 1, 1, after={"id": 1, "triggered_at": T0, "is_read": "yes"}), "expected bool"),
], ids=["foreign-table", "no-key", "op", "no-row", "time", "numeric", "bool"])
def test_bad_envelopes_are_record_errors_that_the_loop_dead_letters(broken: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message) as caught:
        SummariesSink().prepare(broken)
    decision = default_policy(caught.value)
    assert decision.action is Action.DEAD_LETTER and decision.error_class is ErrorClass.VALIDATION


def test_newest_version_wins_and_redeliveries_are_ignored() -> None:
    insert, delete, again = snap("c", 10, 1), snap("d", 20, 1), snap("c", 10, 1)
    net = fold([insert, delete, again])["product_snapshots"].rows[insert.key]
    assert net.deleted and net.version == (20, 1)


def test_same_transaction_orders_by_lsn_and_a_key_change_is_two_keys() -> None:
    # a row moved to another partition: d of the old key + c of the new one, one commit
    moved_from = snap("d", 30, 5, sid=7)
    moved_to = parse_change(envelope("product_snapshots", "c", 30, 6, after={
        "id": 7, "scraped_at": "2024-02-03T00:00:00+00:00", "asin": "B1", "price": "1.00"}))
    rows = fold([moved_from, moved_to])["product_snapshots"].rows
    assert rows[moved_from.key].deleted and not rows[moved_to.key].deleted


def test_unchanged_toast_is_taken_from_an_earlier_change_of_the_batch_else_left_to_the_store() -> None:
    first = snap("c", 10, 1, bsr_data='{"big": 1}')
    update = snap("u", 11, 1, price="9.00", bsr_data=...)
    net = fold([first, update])["product_snapshots"].rows[first.key]
    assert net.values["bsr_data"] == '{"big": 1}' and net.values["price"] == "9.00" and net.toast == frozenset()
    alone = fold([update])["product_snapshots"].rows[first.key]
    assert "bsr_data" not in alone.values and alone.toast == frozenset({"bsr_data"})


def test_a_truncate_removes_older_changes_in_any_partition_order() -> None:
    truncate = parse_change(envelope("product_snapshots", "t", 50, 3))
    older, same_txn_after, newer = snap("c", 40, 1, sid=1), snap("c", 50, 4, sid=2), snap("c", 60, 1, sid=3)
    for order in ([older, truncate, same_txn_after, newer], [newer, same_txn_after, older, truncate]):
        batch = fold(order)["product_snapshots"]
        assert batch.truncate == (50, 3)
        assert sorted(k[0] for k in batch.rows) == [2, 3]
