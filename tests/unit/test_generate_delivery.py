"""Duplicates and out-of-order delivery: exact bookkeeping, disorder only within a key."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from insights.generate.delivery import deliver, out_of_order, with_duplicates

EVENTS = [(f"k{i % 7}", i) for i in range(3000)]


def _key(e):
    return e[0]


def test_no_options_is_identity():
    out = list(deliver(EVENTS, _key))
    assert [d.event for d in out] == EVENTS
    assert not any(d.duplicate or d.reordered for d in out)


def test_every_event_once_as_original_and_duplicates_counted_exactly():
    out = list(deliver(EVENTS, _key, seed=3, duplicates=0.1, out_of_order_p=0.2))
    originals = [d.event for d in out if not d.duplicate]
    assert sorted(originals) == sorted(EVENTS)
    copies = Counter(d.event for d in out if d.duplicate)
    assert sum(copies.values()) == len(out) - len(EVENTS)
    # about 10 % of events re-sent, 1-3 copies each
    assert 0.05 * len(EVENTS) < len(copies) < 0.15 * len(EVENTS)
    assert max(copies.values()) <= 3
    # a copy comes after its original
    first_seen = {}
    for pos, d in enumerate(out):
        if d.duplicate:
            assert d.event in first_seen
        else:
            first_seen[d.event] = pos


def test_disorder_is_within_keys_and_flags_match_what_happened():
    out = list(out_of_order(EVENTS, _key, random.Random(1), 0.3, window=3))
    assert sorted(d.event for d in out) == sorted(EVENTS)
    per_key = defaultdict(list)
    for d in out:
        per_key[d.event[0]].append(d)
    inversions = 0
    for deliveries in per_key.values():
        seq = [d.event[1] for d in deliveries]
        inversions += sum(1 for a, b in zip(seq, seq[1:]) if b < a)
        for pos, d in enumerate(deliveries):
            # flagged iff not at the place it would have had in order
            assert d.reordered == (sorted(seq)[pos] != seq[pos])
    assert inversions > 50
    assert sum(d.reordered for d in out) > 100


def test_same_seed_same_delivery():
    a = [(d.event, d.duplicate) for d in deliver(EVENTS, _key, seed=5, duplicates=0.2, out_of_order_p=0.2)]
    b = [(d.event, d.duplicate) for d in deliver(EVENTS, _key, seed=5, duplicates=0.2, out_of_order_p=0.2)]
    assert a == b


def test_duplicates_alone_keep_original_order():
    out = list(with_duplicates((d for d in deliver(EVENTS, _key)), random.Random(2), 0.3))
    assert [d.event for d in out if not d.duplicate] == EVENTS


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_probabilities_outside_0_1_are_refused(bad):
    with pytest.raises(ValueError):
        deliver(EVENTS, _key, duplicates=bad)
