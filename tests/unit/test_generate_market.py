"""The market simulation: deterministic, plausible, and within the events' domain rules."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from insights.generate.market import OUT_OF_STOCK, Market

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
RUN = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _run(products=40, events=6000, seed=7, span=None, run_id=RUN):
    return list(Market(products, START, seed, span=span, events=events, run_id=run_id).scrapes(events))


@pytest.fixture(scope="module")
def scrapes():
    return _run()


def test_same_seed_same_events_other_seed_other_events(scrapes):
    assert _run() == scrapes
    other = _run(seed=8)
    assert {s.asin for s in other}.isdisjoint({s.asin for s in scrapes})


def test_two_runs_of_one_seed_share_the_market_but_no_event_id():
    """`insights demo` twice used to store every event id twice (identity contract)."""
    first = _run(events=500, run_id=None)
    second = _run(events=500, run_id=None)
    assert [dataclasses.replace(s, event_id=RUN) for s in first] == [
        dataclasses.replace(s, event_id=RUN) for s in second
    ]
    assert len({s.event_id for s in first} | {s.event_id for s in second}) == 1000
    assert all(s.event_id.version == 4 for s in first)


def test_asins_look_like_amazon_ones_and_every_product_is_scraped(scrapes):
    asins = {s.asin for s in scrapes}
    assert len(asins) == 40
    assert all(re.fullmatch(r"B0[A-Z0-9]{8}", a) for a in asins)


def test_global_time_order_and_per_product_sequence(scrapes):
    times = [s.scraped_at for s in scrapes]
    assert times == sorted(times)
    seen: dict[str, int] = defaultdict(int)
    for s in scrapes:
        seen[s.asin] += 1
        assert s.sequence == seen[s.asin]


def test_reviews_never_shrink_and_ratings_stay_in_range(scrapes):
    last: dict[str, int] = {}
    for s in scrapes:
        assert s.review_count >= last.get(s.asin, 0)
        last[s.asin] = s.review_count
        assert 0 <= s.rating <= 5
        assert -s.rating.as_tuple().exponent in (0, 1, 2)
    # reviews do grow overall
    first = {s.asin: s.review_count for s in reversed(scrapes)}
    assert sum(last.values()) > sum(first.values())


def test_prices_drift_drop_and_vanish_when_out_of_stock(scrapes):
    by_asin = defaultdict(list)
    for s in scrapes:
        by_asin[s.asin].append(s)
    drops = 0
    for series in by_asin.values():
        prices = [s.price for s in series if s.price is not None]
        assert len(set(prices)) > 1, "a price that never moves is not a random walk"
        drops += sum(1 for a, b in zip(prices, prices[1:]) if b < a * Decimal("0.9"))
    assert drops > 10, "sales (drops of more than 10 %) should happen"
    out = [s for s in scrapes if s.availability in OUT_OF_STOCK]
    assert 0.01 < len(out) / len(scrapes) < 0.25
    assert all(s.price is None and s.buybox_price is None for s in out)
    in_stock = [s for s in scrapes if s.price is not None]
    # the buy box is the price or a little under it (another seller)
    assert all(s.price * Decimal("0.94") <= s.buybox_price <= s.price for s in in_stock)
    assert any(s.buybox_price < s.price for s in in_stock)


def test_bsr_has_category_and_subcategory_ranks_that_move(scrapes):
    ranks = defaultdict(set)
    for s in scrapes:
        assert s.category in s.bsr and len(s.bsr) == 2
        assert all(r >= 1 for r in s.bsr.values())
        ranks[s.asin].add(s.bsr[s.category])
    assert all(len(r) > 1 for r in ranks.values())


def test_features_are_extracted_at_scrape_time(scrapes):
    for s in scrapes[:200]:
        assert s.features and all(f.extracted_at == s.scraped_at for f in s.features)
        assert all(0 <= f.confidence <= 1 for f in s.features)


@pytest.mark.parametrize(("products", "events"), [(5, 500), (200, 4000)])
def test_span_scaling_ends_near_start_plus_span(products, events):
    span = timedelta(days=3)
    scrapes = _run(products=products, events=events, span=span)
    end = scrapes[-1].scraped_at
    assert START + span * 0.8 < end < START + span * 1.2


def test_naive_start_is_refused():
    with pytest.raises(ValueError):
        Market(3, datetime(2025, 1, 1))
