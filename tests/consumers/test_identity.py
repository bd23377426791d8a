"""The event identity contract (streams/contracts/identity.py, ddl/README.md "Event identity"),
through the real consumers and database: a redelivery is told apart from a re-scrape or a
re-trigger exactly as documented."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.conftest import Topics, count, produce, run_until_idle
from tests.consumers.events import alert, asin, scrape

pytestmark = pytest.mark.integration


def test_scrape_identity_is_the_observation_not_the_event_id(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    first = scrape(1, 0)
    # a re-scrape of the same page: a later scraped_at and a new event id
    rescrape = scrape(1, 1)
    assert rescrape.event_id != first.event_id and rescrape.scraped_at > first.scraped_at
    # the same observation sent again under another id (a producer's retry that re-minted it)
    same_observation = first.model_copy(update={"event_id": uuid.uuid4(), "title": "second copy"})
    produce(settings, topics.scrape, "product_scraped", [first, first, rescrape, same_observation, rescrape])
    loop = run_until_idle(settings, "scrape", idle=2)

    rows = pg.execute(
        "SELECT scraped_at, event_id, title FROM product_snapshots WHERE asin = %s ORDER BY scraped_at",
        (asin(1),),
    ).fetchall()
    # two observations, two snapshots; the redeliveries and the re-minted copy stored nothing
    assert [(r[0], r[1]) for r in rows] == [
        (first.scraped_at, first.event_id),
        (rescrape.scraped_at, rescrape.event_id),
    ]
    assert rows[0][2] == first.title  # the first stored wins
    assert loop.totals.consumed == 5 and loop.totals.dead_letters == 0


def test_alert_identity_is_the_event_id(
    settings: Settings, topics: Topics, pg: psycopg.Connection, seed_rule
) -> None:
    seed_rule(1)
    produce(settings, topics.scrape, "product_scraped", [scrape(2, 0)])
    run_until_idle(settings, "scrape", idle=2)
    fired = alert(1, 2, 5, target=asin(2))
    # the same rule firing again for the same product at the same instant: a new alert
    again = fired.model_copy(update={"event_id": uuid.uuid4()})
    later = alert(1, 2, 6, target=asin(2))
    produce(settings, topics.alerts, "alert_triggered", [fired, fired, again, later, again])
    run_until_idle(settings, "alerts", idle=2)

    ids = [r[0] for r in pg.execute("SELECT event_id FROM alerts ORDER BY triggered_at, event_id").fetchall()]
    assert sorted(ids) == sorted([fired.event_id, again.event_id, later.event_id])
    # the rule's counter counts alerts, not deliveries
    assert count(pg, "SELECT trigger_count FROM alert_rules WHERE id = 1") == 3
    assert later.triggered_at - fired.triggered_at == timedelta(minutes=1)
