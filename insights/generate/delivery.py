"""Imperfect delivery on request: bursts of exact duplicates and out-of-order events.

Both transforms work on a stream (memory bounded by the number of keys, not events)
and are deterministic for a given ``random.Random``. What they did is recorded on
each :class:`Delivery`, so a test knows the exact number of distinct events.

* Out of order: with probability ``p`` an event opens a *window* for its key: it and
  the next ``window - 1`` events of the same key are held back, then released in a
  shuffled order that is never the original one. Other keys flow meanwhile, so the
  disorder is within a key (and therefore within a partition), which is what a
  consumer must survive.
* Duplicates: with probability ``p`` an event is sent again, 1 to 3 extra times, each
  copy after a short random delay (0-20 events), as a producer retrying after a lost
  acknowledgement would. A copy is the very same event (same event id, same bytes).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_DUPLICATE_DELAY = 20
MAX_COPIES = 3


@dataclass(frozen=True)
class Delivery(Generic[T]):
    event: T
    #: a repeat of an event already delivered (same event id)
    duplicate: bool = False
    #: delivered after a later event of the same key
    reordered: bool = False


def _shuffled(rng: random.Random, held: list[T]) -> list[tuple[T, bool]]:
    """``held`` in an order other than the original (when it has 2+ items); flags moved ones."""
    order = list(range(len(held)))
    if len(held) > 1:
        while order == sorted(order):
            rng.shuffle(order)
    return [(held[i], i != pos) for pos, i in enumerate(order)]


def out_of_order(
    events: Iterable[T],
    key: Callable[[T], str],
    rng: random.Random,
    probability: float,
    window: int = 3,
) -> Iterator[Delivery[T]]:
    """Reorder events within windows of one key (see the module doc)."""
    if probability <= 0:
        yield from (Delivery(e) for e in events)
        return
    held: dict[str, list[T]] = {}
    for event in events:
        k = key(event)
        bucket = held.get(k)
        if bucket is None:
            if rng.random() >= probability:
                yield Delivery(event)
                continue
            held[k] = bucket = []
        bucket.append(event)
        if len(bucket) >= window:
            del held[k]
            for e, moved in _shuffled(rng, bucket):
                yield Delivery(e, reordered=moved)
    # the stream ended: release what is held, still shuffled
    for bucket in held.values():
        for e, moved in _shuffled(rng, bucket):
            yield Delivery(e, reordered=moved)


def with_duplicates(
    deliveries: Iterable[Delivery[T]],
    rng: random.Random,
    probability: float,
) -> Iterator[Delivery[T]]:
    """Send some events again, in short delayed bursts (see the module doc)."""
    if probability <= 0:
        yield from deliveries
        return
    # (release at this many delivered events, sequence for stable order, the copy)
    pending: list[tuple[int, int, Delivery[T]]] = []
    delivered = 0
    seq = 0
    for d in deliveries:
        yield d
        delivered += 1
        if rng.random() < probability:
            for _ in range(rng.randint(1, MAX_COPIES)):
                seq += 1
                pending.append((delivered + rng.randint(0, MAX_DUPLICATE_DELAY), seq, Delivery(d.event, duplicate=True)))
            pending.sort(key=lambda p: (p[0], p[1]))
        while pending and pending[0][0] <= delivered:
            yield pending.pop(0)[2]
    for _, _, copy in pending:
        yield copy


def deliver(
    events: Iterable[T],
    key: Callable[[T], str],
    *,
    seed: int = 0,
    duplicates: float = 0.0,
    out_of_order_p: float = 0.0,
    window: int = 3,
) -> Iterator[Delivery[T]]:
    """Reorder within keys, then add duplicates; its own seeded generator, apart from the market's."""
    for name, p in (("duplicates", duplicates), ("out-of-order", out_of_order_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} probability must be within 0..1, got {p}")
    rng = random.Random(f"delivery-{seed}")
    return with_duplicates(out_of_order(events, key, rng, out_of_order_p, window), rng, duplicates)
