"""The moving side of the simulated market: prices, ratings, ranks and stock over time.

Each product is scraped on its own schedule (every 1-24 h with jitter); scrapes of
all products come out in time order, as a fleet of scrapers would emit them.
Dynamics, per scrape:

* price: a random walk around a list price that is itself cut now and then; sales
  (10-40 % off for a few scrapes) and no offer at all while out of stock;
* buy box: near the price, sometimes undercut by another seller;
* rating: drifts slowly within 1-5, shown with the product's 1 or 2 decimals;
* review count: grows, never shrinks, faster for popular products;
* best-seller rank per (sub)category: multiplicative walk, better during sales,
  worse during stock-outs;
* availability: in stock, low stock, or out of stock for a few scrapes.

Pure and deterministic: the same seed and run id give the same events, byte for byte.
The seed decides what happens in the market; the run id (a fresh random one per
:class:`Market` unless given) goes into every event id, so two runs of the same seed
publish distinct events: an event id names one scrape, never reused (the identity
contract in schemas/avro/product_scraped and ddl/README.md).
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from insights.generate.catalog import CatalogItem, make_catalog
from insights.generate.records import Scrape, ScrapedFeature

CENT = Decimal("0.01")
# the Avro Availability symbols the simulation uses
IN_STOCK = "IN_STOCK"
LIMITED_STOCK = "LIMITED_STOCK"
#: a stock-out shows as either, depending on whether Amazon expects a restock
OUT_OF_STOCK = ("OUT_OF_STOCK", "UNAVAILABLE")
MAX_RANK = 2_000_000


def new_event_id(rng: random.Random, run_id: uuid.UUID) -> uuid.UUID:
    """A version-4 UUID from the seeded generator, made unique to the run.

    ``uuid.uuid4`` alone would not be reproducible; the seeded bits alone repeat in every
    run of the seed, so that a second run re-used the first one's ids. XOR with the run id
    keeps both: the same (seed, run id) gives the same ids, another run id other ids. It
    draws exactly 128 bits, as before, so the rest of the simulation is unchanged.
    """
    return uuid.UUID(int=rng.getrandbits(128) ^ run_id.int, version=4)


def money(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")


@dataclass
class ProductState:
    item: CatalogItem
    list_price: float
    regular_price: float
    sale_factor: float = 1.0
    sale_left: int = 0
    stock_out_left: int = 0
    rating: float = 4.0
    review_count: int = 0
    #: fractional reviews not yet shown (slow sellers get one every few scrapes)
    review_backlog: float = 0.0
    rank: float = 10_000.0
    sub_rank: float = 500.0
    next_at: datetime | None = None
    sequence: int = 0
    #: hours between two scrapes of this product (the catalogue's, scaled to the run)
    every_h: float = 24.0

    @property
    def on_sale(self) -> bool:
        return self.sale_left > 0


def initial_state(rng: random.Random, item: CatalogItem, start: datetime, scale: float = 1.0) -> ProductState:
    rank = min(MAX_RANK, max(1.0, 20_000 / item.popularity * rng.uniform(0.5, 2.0)))
    return ProductState(
        item=item,
        list_price=item.list_price,
        regular_price=item.list_price,
        rating=rng.uniform(3.3, 4.9),
        review_count=int(rng.lognormvariate(4, 1.5) * item.popularity),
        rank=rank,
        sub_rank=max(1.0, rank / rng.uniform(10, 40)),
        # spread first scrapes over one interval; whole milliseconds keep times readable
        next_at=start + timedelta(milliseconds=int(rng.uniform(0, item.scrape_every_h * scale) * 3_600_000)),
        every_h=item.scrape_every_h * scale,
    )


def _step_price(rng: random.Random, s: ProductState) -> None:
    if rng.random() < 0.005:  # a lasting price cut
        s.list_price = max(1.0, s.list_price * rng.uniform(0.85, 0.95))
    # random walk, pulled back towards the list price
    s.regular_price *= math.exp(rng.gauss(0, 0.01))
    s.regular_price += 0.1 * (s.list_price - s.regular_price)
    if s.sale_left > 0:
        s.sale_left -= 1
        if s.sale_left == 0:
            s.sale_factor = 1.0
    elif rng.random() < 0.04:
        s.sale_factor = rng.uniform(0.6, 0.9)
        s.sale_left = rng.randint(2, 8)


def _step_stock(rng: random.Random, s: ProductState) -> str:
    if s.stock_out_left > 0:
        s.stock_out_left -= 1
        if s.stock_out_left > 0:
            return OUT_OF_STOCK[s.sequence % 2]
    elif rng.random() < 0.02:
        s.stock_out_left = rng.randint(1, 6)
        return OUT_OF_STOCK[0]
    if rng.random() < 0.08:
        return LIMITED_STOCK  # "Only 3 left in stock - order soon."
    return IN_STOCK


def _step_rank(rng: random.Random, s: ProductState, out_of_stock: bool) -> None:
    push = -0.25 if s.on_sale else 0.0
    push += 0.2 if out_of_stock else 0.0
    factor = math.exp(rng.gauss(0, 0.08) + push)
    s.rank = min(MAX_RANK, max(1.0, s.rank * factor))
    s.sub_rank = min(MAX_RANK, max(1.0, s.sub_rank * factor * math.exp(rng.gauss(0, 0.03))))


def scrape(rng: random.Random, s: ProductState, run_id: uuid.UUID) -> Scrape:
    """Advance one product by one scrape and describe what the page shows."""
    item = s.item
    assert s.next_at is not None
    at = s.next_at
    s.sequence += 1
    s.next_at = at + timedelta(milliseconds=int(s.every_h * rng.uniform(0.9, 1.1) * 3_600_000))

    _step_price(rng, s)
    availability = _step_stock(rng, s)
    out = availability in OUT_OF_STOCK
    _step_rank(rng, s, out)
    s.rating = min(5.0, max(1.0, s.rating + rng.gauss(0, 0.015)))
    s.review_backlog += rng.expovariate(1.0) * item.popularity * s.every_h / 8
    new_reviews = int(s.review_backlog)
    s.review_count += new_reviews
    s.review_backlog -= new_reviews

    price = None if out else money(s.regular_price * s.sale_factor)
    buybox = None
    if price is not None:
        undercut = rng.uniform(0.95, 0.99) if rng.random() < 0.25 else 1.0
        buybox = money(float(price) * undercut)
    rating = round(Decimal(s.rating), item.rating_decimals)
    features = tuple(
        ScrapedFeature(
            f.category,
            f.name,
            f.value,
            # re-extraction by a model gives a slightly different confidence each time
            min(Decimal("1.00"), f.confidence + Decimal(rng.randint(-3, 3)) / 100)
            if f.method == "AI"
            else f.confidence,
            f.method,
            at,
        )
        for f in item.features
    )
    return Scrape(
        event_id=new_event_id(rng, run_id),
        asin=item.asin,
        scraped_at=at,
        sequence=s.sequence,
        title=item.title,
        brand=item.brand,
        category=item.category,
        manufacturer=item.manufacturer,
        model=item.model,
        dimensions=item.dimensions,
        weight_kg=item.weight_kg,
        price=price,
        buybox_price=buybox,
        currency="USD",
        rating=rating,
        review_count=s.review_count,
        bsr={item.category: round(s.rank), item.subcategory: round(s.sub_rank)},
        availability=availability,
        bullet_points=item.bullet_points,
        description=item.description,
        images=item.images,
        variations=item.variations,
        features=features,
        prime=item.prime,
    )


def interval_scale(catalog: list[CatalogItem], span: timedelta, events: int) -> float:
    """Factor on every product's scrape interval so that ``events`` scrapes take ``span``.

    Products keep their relative frequencies (hourly ones stay 24x the daily ones);
    only the clock is stretched or squeezed, so a run of any size ends near
    ``start + span`` (event times must not lie in the future: the models refuse that).
    """
    per_hour = sum(1.0 / item.scrape_every_h for item in catalog)
    return span.total_seconds() / 3600 * per_hour / max(1, events)


class Market:
    """``products`` products scraped from ``start`` on; iterate :meth:`scrapes`.

    With ``span`` and ``events``, scrape intervals are scaled so that about
    ``events`` scrapes fill ``span``; without, products follow their catalogue
    schedules (every 1-24 h). ``run_id`` goes into every event id (see
    :func:`new_event_id`); a fresh one is drawn when it is not given.
    """

    def __init__(
        self,
        products: int,
        start: datetime,
        seed: int = 0,
        *,
        span: timedelta | None = None,
        events: int | None = None,
        run_id: uuid.UUID | None = None,
    ) -> None:
        if products < 1:
            raise ValueError("a market needs at least one product")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.rng = random.Random(seed)
        self.run_id = run_id if run_id is not None else uuid.uuid4()
        self.catalog = make_catalog(self.rng, products)
        scale = interval_scale(self.catalog, span, events) if span and events else 1.0
        self.states = [initial_state(self.rng, item, start, scale) for item in self.catalog]

    def scrapes(self, limit: int | None = None) -> Iterator[Scrape]:
        """Scrapes in time order (ties broken by catalogue position), ``limit`` of them or forever."""
        heap = [(s.next_at, i) for i, s in enumerate(self.states)]
        heapq.heapify(heap)
        emitted = 0
        while limit is None or emitted < limit:
            _, i = heap[0]
            state = self.states[i]
            event = scrape(self.rng, state, self.run_id)
            heapq.heapreplace(heap, (state.next_at, i))
            emitted += 1
            yield event
