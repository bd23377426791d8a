"""A month of product_snapshots truncated and replayed from the topic, with the CDC reader
and the summaries consumer running: the partition and the summaries come back right."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import sql

from tests.cli.helpers import run_cli
from tests.consumers.conftest import count, produce, run_until_idle
from tests.consumers.events import scrape
from tests.fix_services import child_env
from tests.replay.tables import checksum, columns_except, table
from tests.replay.test_replay_events import _month_partition
from tests.summaries.conftest import assert_matches_source, cdc_reader, consume_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_truncated_month_replayed_leaves_the_summaries_equal_to_the_view(cdc_settings, make_event_topics, pg):
    topics = make_event_topics(3)
    now = datetime.now(UTC)
    # the month replayed is old; the newest scrapes (current prices, the 30-day window) are recent
    months = [datetime(2025, 4, 1, tzinfo=UTC), now - timedelta(days=20)]
    bounds = []
    with cdc_reader(cdc_settings) as reader:
        for month in months:
            bounds.append(datetime.now(UTC))
            produce(cdc_settings, topics.scrape, "product_scraped",
                    [scrape(n, seq, at=month + timedelta(days=seq, minutes=n)) for n in range(20) for seq in range(5)])
            time.sleep(1.1)
        bounds.append(datetime.now(UTC))
        run_until_idle(cdc_settings, "scrape", idle=3.0)
        reader.wait_published()
        consume_all(cdc_settings)
        assert_matches_source(pg)

        april = _month_partition(pg, months[0])
        cols = columns_except(pg, april, "id", "created_at")
        want = checksum(pg, table(april), cols)
        assert want[0] == 100
        pg.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(april)))
        reader.wait_published()
        consume_all(cdc_settings)

        out = _ok(run_cli("replay", "events", "scrape", "--name", "april", "--from-time", bounds[0].isoformat(),
                          "--to-time", bounds[1].isoformat(), env=child_env(cdc_settings)))
        assert "100 read" in out
        assert checksum(pg, table(april), cols) == want
        reader.wait_published()
        consume_all(cdc_settings)
        # TRUNCATE of a leaf partition is not published (publish_via_partition_root): the
        # summaries' state keeps the truncated rows beside the replayed ones (new ids);
        # docs/replay.md#lost-partition says what that means and what repairs it
        assert count(pg, "SELECT count(*) FROM summaries.snapshots WHERE NOT deleted") == 300
    assert_matches_source(pg)
