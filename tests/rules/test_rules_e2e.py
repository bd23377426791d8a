"""Done-when: a produced scrape event with a price drop becomes exactly one stored alert;
an invalid rule is refused by ``rules add`` naming the field, and one inserted by SQL is
skipped by the engine and counted (metric and ``insights status``)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from core.settings import Settings
from insights.cli.main import app
from insights.status import _rules as rules_status
from streams.topics import event_topics
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.consumers.conftest import produce, run_until_idle
from tests.consumers.events import asin, scrape
from tests.fix_services import child_env
from tests.rules.conftest import consume_rules, store_alerts
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration


def test_a_produced_price_drop_becomes_one_stored_alert_and_invalid_rules_are_refused_or_skipped(
    rules_settings: Settings, pg: psycopg.Connection
) -> None:
    env = child_env(rules_settings)
    cli = CliRunner()
    added = cli.invoke(app, ["rules", "add", "--name", "kettle drop", "--type", "price_change", "--asin", asin(1),
                             "--conditions", '{"direction": "down", "percent": 10}', "--severity", "high"], env=env)
    assert added.exit_code == 0, added.output
    # as the operator sees it: one line naming the field, exit 2, nothing stored
    refused = run_cli("rules", "add", "--name", "bad", "--type", "price_change", "--asin", asin(1),
                      "--conditions", '{"direction": "down", "percent": "ten"}', env=env)
    assert_one_line_error(refused, 2, "conditions.percent", "valid decimal")
    assert pg.execute("SELECT count(*) FROM alert_rules").fetchone() == (1,)
    # a rule written by SQL that does not validate: stored, shown as invalid, skipped by the engine
    broken = pg.execute(
        "INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions) "
        "VALUES ('broken', 'price_change', 'product', %s, '{\"percent\": -5}') RETURNING id", (asin(1),)
    ).fetchone()[0]  # type: ignore[index]
    listed = cli.invoke(app, ["rules", "list"], env=env)
    assert listed.exit_code == 0 and "INVALID: conditions.percent" in listed.output, listed.output

    scrape_topic = next(s.name for s in event_topics(rules_settings) if s.value_subject == "product_scraped")
    registry = CollectorRegistry()
    with cdc_reader(rules_settings) as reader:
        produce(rules_settings, scrape_topic, "product_scraped",
                [scrape(1, 0, price="100.00"), scrape(1, 1, price="85.00"), scrape(1, 2, price="84.00")])
        run_until_idle(rules_settings, "scrape", idle=2.0)
        reader.wait_published()
        consume_rules(rules_settings, registry=registry)
    store_alerts(rules_settings)

    alerts = pg.execute(
        "SELECT rule_id, target_asin, triggered_at, alert_type, severity, change_percentage, old_value, new_value "
        "FROM alerts"
    ).fetchall()
    drop_at = scrape(1, 1).scraped_at
    assert alerts == [(1, asin(1), drop_at, "price_change", "high", Decimal("-15.00"), "100.00", "85.00")]
    assert pg.execute("SELECT id, trigger_count FROM alert_rules ORDER BY id").fetchall() == [(1, 1), (broken, 0)]
    assert registry.get_sample_value("insights_rules_invalid") == 1
    assert (registry.get_sample_value("insights_rules_invalid_skipped_total") or 0) >= 1
    assert registry.get_sample_value("insights_rules_fired_total", {"rule_type": "price_change"}) == 1
    # freshness: the newest commit applied, and the scrape-to-applied lag of its snapshots
    assert registry.get_sample_value("insights_downstream_applied_commit_timestamp_seconds", {"consumer": "rules"}) > 0
    assert registry.get_sample_value("insights_downstream_scrape_to_applied_seconds_count", {"consumer": "rules"}) == 3
    fresh = pg.execute("SELECT consumer_group, now() - applied_commit_at < interval '5 minutes', newest_scraped_at "
                       "FROM downstream_freshness WHERE consumer = 'rules'").fetchone()
    assert fresh == (f"{rules_settings.consumer.group}", True, scrape(1, 2).scraped_at)
    check = rules_status(pg)
    assert check is not None and check.state == "warn" and check.metrics["invalid"] == 1
    assert f"rule {broken}: conditions.percent" in check.reason

    tested = cli.invoke(app, ["rules", "test", "1"], env=env)
    assert tested.exit_code == 0 and "1 firing(s)" in tested.output and "85.00" in tested.output, tested.output
    disabled = cli.invoke(app, ["rules", "disable", str(broken), "--yes"], env=env)
    assert disabled.exit_code == 0, disabled.output
    check = rules_status(pg)
    assert check is not None and check.state == "ok"
