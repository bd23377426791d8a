"""The idle rule's pure parts (streams/consumer/idle.py): what lags, and when to look."""

from __future__ import annotations

from streams.consumer.idle import IdleClock, lagging

T = "t"


def test_a_partition_lags_until_its_position_reaches_the_high_watermark() -> None:
    marks = {(T, 0): (0, 10), (T, 1): (0, 10), (T, 2): (0, 10)}
    assert lagging(marks, {(T, 0): 10, (T, 1): 7}) == {(T, 1): 3, (T, 2): 10}


def test_an_empty_or_retention_emptied_partition_never_lags() -> None:
    assert lagging({(T, 0): (0, 0), (T, 1): (50, 50)}, {}) == {}


def test_a_position_below_the_low_watermark_counts_only_what_is_still_there() -> None:
    assert lagging({(T, 0): (40, 50)}, {(T, 0): 5}) == {(T, 0): 10}


def test_without_a_position_a_group_reading_from_the_end_does_not_lag() -> None:
    marks = {(T, 0): (0, 10)}
    assert lagging(marks, {}, from_end=True) == {}
    assert lagging(marks, {}) == {(T, 0): 10}
    assert lagging(marks, {(T, 0): 3}, from_end=True) == {(T, 0): 7}  # a stored position still counts


def test_the_clock_restarts_with_records_and_with_assignment_changes() -> None:
    now = [100.0]
    clock = IdleClock(3.0, now=lambda: now[0])
    now[0] = 102.9
    assert not clock.should_look()
    now[0] = 103.0
    clock.assignment_changed()  # partitions handed over: their records have yet to come
    now[0] = 105.0
    assert not clock.should_look()
    now[0] = 106.0
    assert clock.should_look()
    assert not clock.should_look()  # looked just now: not again before the next period
    now[0] = 109.0
    assert clock.should_look()
    clock.saw_records()
    now[0] = 111.0
    assert not clock.should_look()
