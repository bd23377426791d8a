"""Offsets kept in PostgreSQL, in the same transaction as the rows they produced.

This is what makes the consumers exactly-once in effect: a batch's rows and its next
offsets commit together or not at all, so after any crash the loop resumes exactly
after the last batch whose rows are stored. Kafka's own committed offsets are written
too, after the database commit, but only so that standard lag tools see progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

TopicPartition = tuple[str, int]

_LOAD = """
SELECT o.topic, o.partition, o.next_offset
FROM consumer_offsets AS o
JOIN unnest(%(topics)s::text[], %(partitions)s::int[]) AS w(topic, partition)
  ON o.topic = w.topic AND o.partition = w.partition
WHERE o.consumer_group = %(group)s
"""

# FOR UPDATE: the fence. Two members can briefly both hold a partition during a
# rebalance; the second to arrive waits here, then sees the first one's progress and
# skips what it already stored.
_LOCK = _LOAD + " FOR UPDATE OF o"

# GREATEST: an offset never moves backwards because a slow member commits late.
_SAVE = """
INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, updated_at)
SELECT %(group)s, w.topic, w.partition, w.next_offset, now()
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[])
  AS w(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()
"""


def _params(group: str, keys: Iterable[TopicPartition]) -> dict[str, object]:
    keys = list(keys)
    return {"group": group, "topics": [t for t, _ in keys], "partitions": [p for _, p in keys]}


def load(conn: psycopg.Connection, group: str, keys: Iterable[TopicPartition], lock: bool = False) -> dict[TopicPartition, int]:
    """Stored next offsets for ``keys`` (missing keys: never stored)."""
    rows = conn.execute(_LOCK if lock else _LOAD, _params(group, keys)).fetchall()
    return {(topic, partition): next_offset for topic, partition, next_offset in rows}


def save(conn: psycopg.Connection, group: str, next_offsets: Mapping[TopicPartition, int]) -> None:
    if not next_offsets:
        return
    params = _params(group, next_offsets)
    params["offsets"] = list(next_offsets.values())
    conn.execute(_SAVE, params)
