"""Done-when: competitive positions equal a direct ranking over the final snapshots; analyses once.

Randomized snapshots (late, out of order, updated, deleted, moved across partitions) and
groups whose members and activity change stream to the competitive sink. Its positions
equal a ranking computed here from each product's newest snapshot (rank = 1 + the number
of ranked products strictly better); each group's newest analysis says the same; a replay
of the CDC topics (a new group) writes no analysis.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from streams.topics import competitive_source_topics
from tests.rules.conftest import consume_sink
from tests.rules.data import add_products, arrivals, churn, insert_rows
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration


def direct_ranking(pg: psycopg.Connection) -> dict[int, tuple[Any, ...]]:
    """group -> (members, price rank, rating rank, bsr rank) of its main product, in Python."""
    newest = {a: (p, r, b) for a, p, r, b in pg.execute(
        "SELECT DISTINCT ON (asin) asin, price, rating, bsr_data FROM product_snapshots ORDER BY asin, scraped_at DESC"
    ).fetchall()}
    out: dict[int, tuple[Any, ...]] = {}
    for gid, main, category in pg.execute(
        "SELECT id, main_product_asin, industry_category FROM competitive_groups WHERE is_active"
    ).fetchall():
        members = {main} | {a for (a,) in pg.execute(
            "SELECT competitor_asin FROM competitive_group_members WHERE group_id = %s AND is_active", (gid,)
        ).fetchall()}
        values = {a: newest.get(a, (None, None, None)) for a in members}

        def rank(index: int, better: Any) -> int | None:
            mine = values[main][index]
            if mine is None:
                return None
            return 1 + sum(1 for v in values.values() if v[index] is not None and better(v[index], mine))

        for a, (p, r, b) in list(values.items()):
            bsr = b.get(category) if isinstance(b, dict) and category else None
            values[a] = (p, r, bsr if isinstance(bsr, int) else None)
        out[gid] = (len(members), rank(0, lambda x, y: x < y), rank(1, lambda x, y: x > y), rank(2, lambda x, y: x < y))
    return out


def stored(pg: psycopg.Connection) -> dict[int, tuple[Any, ...]]:
    return {g: tuple(rest) for g, *rest in pg.execute(
        "SELECT group_id, members, price_rank, rating_rank, bsr_rank FROM competitive.positions").fetchall()}


def _groups(pg: psycopg.Connection, asins: list[str], rng: random.Random) -> list[int]:
    ids = []
    with pg.transaction():
        for n in range(8):
            main = asins[n]
            gid = pg.execute(
                "INSERT INTO competitive_groups (name, main_product_asin, industry_category) VALUES (%s, %s, %s) "
                "RETURNING id", (f"group {n}", main, rng.choice(["Electronics", "Gadgets", None])),
            ).fetchone()[0]  # type: ignore[index]
            members = rng.sample([a for a in asins if a != main], rng.randint(4, 12))
            pg.cursor().executemany(
                "INSERT INTO competitive_group_members (group_id, competitor_asin, is_active) VALUES (%s, %s, %s)",
                [(gid, a, rng.random() > 0.15) for a in members],
            )
            ids.append(gid)
    return ids


@pytest.mark.parametrize(
    ("products", "per_product"),
    [
        pytest.param(60, 30, id="1800-snapshots"),
        # the size: 100,000 snapshots over 1,000 products and several months
        pytest.param(1000, 100, id="100000-snapshots", marks=pytest.mark.slow),
    ],
)
def test_positions_equal_a_direct_ranking_and_analyses_are_written_once(
    rules_settings: Settings, pg: psycopg.Connection, products: int, per_product: int
) -> None:
    rng = random.Random(8)
    with cdc_reader(rules_settings) as reader:
        asins = add_products(pg, products)
        groups = _groups(pg, asins, rng)
        insert_rows(pg, arrivals(products, per_product, seed=4), seed=4, chunk=400 if products < 100 else 5000)
        reader.wait_published()
        consume_sink(rules_settings, "competitive", competitive_source_topics)
        assert stored(pg) == direct_ranking(pg)
        assert len(stored(pg)) == 8

        churn(pg, seed=4, fraction=0.02)
        pg.execute("UPDATE competitive_group_members SET is_active = NOT is_active WHERE id IN "
                   "(SELECT min(id) FROM competitive_group_members GROUP BY group_id)")
        pg.execute("UPDATE competitive_groups SET is_active = false WHERE id = %s", (groups[-1],))
        pg.execute("INSERT INTO competitive_group_members (group_id, competitor_asin) VALUES (%s, %s) "
                   "ON CONFLICT DO NOTHING", (groups[0], asins[-1]))
        reader.wait_published()
        consume_sink(rules_settings, "competitive", competitive_source_topics)
    want = direct_ranking(pg)
    assert stored(pg) == want and len(want) == 7  # the deactivated group has no position any more

    # each position's analysis says the same, and is a completed standard analysis
    for gid, position in want.items():
        doc = pg.execute(
            "SELECT a.analysis_type, a.status, a.position_summary, a.price_analysis ? 'avg', a.data_freshness_hours "
            "FROM competitive.positions p JOIN competitive_analyses a ON a.id = p.analysis_id WHERE p.group_id = %s",
            (gid,),
        ).fetchone()
        assert doc is not None and doc[:2] == ("standard", "completed") and doc[3] and doc[4] is not None
        summary = doc[2]
        assert (summary["members"], summary["price_rank"], summary["rating_rank"], summary["bsr_rank"]) == position
    analyses = pg.execute("SELECT count(*) FROM competitive_analyses").fetchone()[0]  # type: ignore[index]
    assert analyses >= len(want)

    # a replay from the start changes no position and writes no analysis
    consume_sink(rules_settings, "competitive", competitive_source_topics, group=f"replay-{uuid.uuid4().hex[:8]}")
    assert stored(pg) == want
    assert pg.execute("SELECT count(*) FROM competitive_analyses").fetchone()[0] == analyses  # type: ignore[index]


def test_two_processes_ranking_one_group_at_once_write_one_analysis(pg: psycopg.Connection, pg_dsn: str) -> None:
    """Two consumers of different partitions change one group's ranking at the same moment:
    the second waits for the first's commit, sees the new position and writes nothing."""
    import threading

    from consumers.competitive.sink import CompetitiveSink, GroupChange

    asins = add_products(pg, 6)
    insert_rows(pg, arrivals(6, 3, seed=5), seed=5)
    gid = pg.execute("INSERT INTO competitive_groups (name, main_product_asin, industry_category) "
                     "VALUES ('g', %s, 'Electronics') RETURNING id", (asins[0],)).fetchone()[0]  # type: ignore[index]
    pg.cursor().executemany("INSERT INTO competitive_group_members (group_id, competitor_asin) VALUES (%s, %s)",
                            [(gid, a) for a in asins[1:]])
    first, second = psycopg.connect(pg_dsn), psycopg.connect(pg_dsn)
    try:
        # first ranks in an open transaction (holding its lock), second starts meanwhile
        assert CompetitiveSink().write(first, [GroupChange("asin", asins[1])])["competitive_analyses"] == 1
        result: dict[str, Any] = {}

        def rank_second() -> None:
            result.update(CompetitiveSink().write(second, [GroupChange("asin", asins[2])]))
            second.commit()

        thread = threading.Thread(target=rank_second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # waiting for the first's group lock
        first.commit()
        thread.join(30)
        assert not thread.is_alive()
        assert result["competitive_analyses"] == 0
    finally:
        first.close()
        second.close()
    assert pg.execute("SELECT count(*) FROM competitive_analyses WHERE group_id = %s", (gid,)).fetchone() == (1,)
