"""Every generated event validates against the Avro event models and survives the serde."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from core.events import AlertTriggered, ProductScraped
from insights.generate import Market, alert_feed, alert_model, alert_record, alert_rules, scrape_model, scrape_record
from core.settings import load_settings
from streams.serde import make_deserializer, make_serializer

START = datetime(2025, 2, 1, tzinfo=timezone.utc)


def test_scrapes_validate_and_round_trip_through_avro():
    scrapes = list(Market(30, START, seed=11).scrapes(1500))
    models = [scrape_model(s) for s in scrapes]  # raises on any invalid field
    assert {m.asin for m in models} == {s.asin for s in scrapes}
    assert any(m.price is None for m in models) and any(m.variations for m in models)
    settings = load_settings()
    write = make_serializer(settings, "product_scraped")
    read = make_deserializer(settings, "product_scraped")
    for scrape, model in list(zip(scrapes, models))[::50]:
        assert ProductScraped.from_avro(read(write(scrape_record(scrape), None), None)) == model


def test_alerts_validate_and_name_real_asins_and_rules():
    market = Market(30, START, seed=11)
    alerts = list(alert_feed(market, alert_rules(6), 800))
    asins = {item.asin for item in market.catalog}
    models = [alert_model(a) for a in alerts]
    assert len(models) == 800
    assert all(m.target_asin in asins for m in models)
    assert {m.rule_id for m in models} <= {None, *range(1, 7)}
    assert None in {m.rule_id for m in models} and len({m.rule_id for m in models}) > 2
    assert {m.alert_type for m in models} == {"PRICE_CHANGE", "STOCK_CHANGE", "RATING_CHANGE", "RANK_CHANGE"}
    settings = load_settings()
    write = make_serializer(settings, "alert_triggered")
    read = make_deserializer(settings, "alert_triggered")
    for alert, model in list(zip(alerts, models))[::40]:
        assert AlertTriggered.from_avro(read(write(alert_record(alert), None), None)) == model


def test_default_cli_window_ends_before_now():
    # the models refuse event times in the future: a run sized for "the last 7 days" must end by now
    now = datetime.now(timezone.utc)
    span = timedelta(days=7)
    last = list(Market(20, now - span, seed=1, span=span, events=2000).scrapes(2000))[-1]
    scrape_model(last)
    assert last.scraped_at <= now + timedelta(minutes=60)
