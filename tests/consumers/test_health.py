"""The loop reports its dependencies' reachability into the Health it is given (the /healthz source)."""

from __future__ import annotations

import threading
import time

import pytest
from psycopg.conninfo import make_conninfo

from consumers.registry import build_loop
from core.settings import Settings
from streams.service.health import Health
from tests.consumers.conftest import Topics, produce
from tests.consumers.events import scrape
from tests.consumers.pg_cluster import free_port

pytestmark = pytest.mark.integration


def test_a_database_that_stays_away_makes_the_loop_unhealthy_while_it_keeps_retrying(
    settings: Settings, topics: Topics
) -> None:
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    nobody = settings.replace(pg_dsn=make_conninfo(settings.pg.dsn, port=free_port()))
    health = Health(unreachable_after=0.5)
    loop = build_loop(nobody, "scrape", health=health)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while health.report().healthy:
            assert time.monotonic() < deadline, "PostgreSQL away for a minute and /healthz still says ok"
            assert thread.is_alive(), "the loop gave up instead of retrying"
            time.sleep(0.1)
        reasons = health.report().reasons
        assert any(r.startswith("postgres unreachable") for r in reasons), reasons
        assert loop.metrics.retries.labels("postgres")._value.get() >= 1  # type: ignore[attr-defined]
    finally:
        loop.request_stop()
        thread.join(30)
    assert not thread.is_alive(), "the loop did not stop while retrying"
    assert loop.totals.stored == 0
