"""Competitive positions as a sink: CDC of snapshots and groups -> competitive.positions + analyses.

``prepare`` is pure (which product's current snapshot may have moved, or that every group
must be looked at again: a deleted snapshot, a truncate, a group or membership change);
``write`` ranks the affected active groups over the source's current snapshots
(``consumers.competitive.sql.RANKING``), and for each group whose position changed stores
it and writes one ``competitive_analyses`` row, in the batch transaction with the offsets.
A redelivered or replayed change finds the position unchanged and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from consumers.competitive import sql
from consumers.freshness import Freshness
from consumers.spec import SinkSpec
from core.errors import RecordError
from core.settings import Settings
from streams.topics import TopicSpec, competitive_source_topics, dlq_name, rules_dlq_topics


@dataclass(frozen=True, slots=True)
class GroupChange:
    #: "asin": groups with this product; "all": every group; "none"
    kind: str
    asin: str = ""
    commit_time_us: int = 0
    scraped_at: datetime | None = None


def _commit_us(value: Any) -> int:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return int(value.replace(microsecond=0).timestamp()) * 1_000_000 + value.microsecond
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_change(record: dict[str, Any]) -> GroupChange:
    source = record.get("source")
    if not isinstance(source, dict):
        raise RecordError("CDC event: no source")
    table, op = source.get("table"), record.get("op")
    if op not in ("c", "u", "d", "r", "t"):
        raise RecordError(f"CDC event: unknown op {op!r}")
    commit_us = _commit_us(source.get("commit_time"))
    if table in ("competitive_groups", "competitive_group_members"):
        return GroupChange("all", commit_time_us=commit_us)
    if table != "product_snapshots":
        raise RecordError(f"CDC event: table {table!r} is not one the competitive positions consume")
    if op in ("d", "t"):
        return GroupChange("all", commit_time_us=commit_us)  # a delete carries only (id, scraped_at): whose current price moved is unknown
    row = record.get("after")
    asin = row.get("asin") if isinstance(row, dict) else None
    if not isinstance(asin, str) or not asin:
        raise RecordError("CDC event: product_snapshots.asin must be a non-empty string")
    at = row.get("scraped_at") if isinstance(row, dict) else None
    try:
        scraped_at = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        raise RecordError(f"CDC event: product_snapshots.scraped_at is not an ISO timestamp: {at[:40]!r}") from None
    return GroupChange("asin", asin, commit_us, scraped_at)


def _num(value: Any) -> Any:
    return None if value is None else str(value) if isinstance(value, Decimal) else value


def analysis(row: tuple[Any, ...], now: datetime) -> dict[str, Any]:
    """The analysis row's documents for one ranked group (RANKING's columns)."""
    (group, members, price_rank, rating_rank, bsr_rank, price, min_price, max_price, avg_price, priced,
     rating, min_rating, max_rating, avg_rating, category, bsr, best_bsr, worst_bsr, newest, oldest) = row
    position = {"members": members, "price_rank": price_rank, "rating_rank": rating_rank, "bsr_rank": bsr_rank}
    freshness = None if oldest is None else int((now - oldest).total_seconds() // 3600)
    return {
        "group": group,
        "scores": Jsonb({k: v for k, v in position.items() if k != "members"}),
        "position": Jsonb(position),
        "price": Jsonb({"main": _num(price), "rank": price_rank, "min": _num(min_price), "max": _num(max_price),
                        "avg": _num(avg_price), "priced_members": priced}),
        "rating": Jsonb({"main": _num(rating), "rank": rating_rank, "min": _num(min_rating),
                         "max": _num(max_rating), "avg": _num(avg_rating)}),
        "bsr": Jsonb({"category": category, "main": _num(bsr), "rank": bsr_rank, "best": _num(best_bsr),
                      "worst": _num(worst_bsr)}),
        # hours since the oldest current snapshot the ranking used (the stalest input)
        "freshness": freshness,
    }


class CompetitiveSink:
    name = "competitive"
    subject = "cdc_change"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.freshness = Freshness("competitive", registry)

    def prepare(self, record: dict[str, Any]) -> GroupChange:
        return parse_change(record)

    def timestamps(self, items: Sequence[GroupChange]) -> Mapping[str, Iterable[datetime]]:
        # analyses are created now: their month's partition must exist
        return {"competitive_analyses": [datetime.now(UTC)]} if items else {}

    def write(self, conn: psycopg.Connection, items: Sequence[GroupChange]) -> Mapping[str, int]:
        self.freshness.record(conn, (i.commit_time_us for i in items),
                              [i.scraped_at for i in items if i.scraped_at is not None])
        if any(i.kind == "all" for i in items):
            groups = [r[0] for r in conn.execute(sql.ALL_GROUPS).fetchall()]
        else:
            asins = sorted({i.asin for i in items if i.kind == "asin"})
            groups = [r[0] for r in conn.execute(sql.GROUPS_OF, {"asins": asins}).fetchall()] if asins else []
        if not groups:
            return {"competitive.positions": 0, "competitive_analyses": 0}
        conn.execute(sql.LOCK_GROUPS, {"class": sql.LOCK_CLASS, "groups": groups})
        ranked = conn.execute(sql.RANKING, {"groups": groups}).fetchall()
        stored = {r[0]: tuple(r[1:]) for r in conn.execute(sql.STORED, {"groups": groups}).fetchall()}
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        written = 0
        for row in sorted(ranked, key=lambda r: r[0]):
            position = tuple(row[1:5])
            if stored.get(row[0]) == position:
                continue
            doc = analysis(row, now)
            analysis_id = conn.execute(sql.INSERT_ANALYSIS, doc).fetchone()[0]  # type: ignore[index]
            conn.execute(sql.UPSERT_POSITION, {
                "group": row[0], "members": position[0], "price_rank": position[1], "rating_rank": position[2],
                "bsr_rank": position[3], "analysis": analysis_id,
            })
            written += 1
        gone = sorted(set(stored) - {r[0] for r in ranked})
        if gone:
            conn.execute(sql.FORGET, {"groups": gone})
        return {"competitive.positions": written + len(gone), "competitive_analyses": written}


def own_topics(settings: Settings) -> list[TopicSpec]:
    mine = {dlq_name(t) for t in competitive_source_topics(settings)}
    return [spec for spec in rules_dlq_topics(settings) if spec.name in mine]


SPEC = SinkSpec(
    name="competitive",
    help="competitive positions and analyses kept from the CDC of snapshots and groups",
    make=CompetitiveSink,
    topics=competitive_source_topics,
    missing_hint="run `insights cdc setup` first",
    own_dlq_topics=own_topics,
    make_for=lambda _settings, registry: CompetitiveSink(registry),
)
