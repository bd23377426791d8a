"""Publish a simulated run to Kafka: what ``insights produce`` does, callable from tests and benches.

``plan_events`` builds the event stream (pure, seeded); ``publish`` encodes it with the
subject's Avro serializer and sends it through :class:`~streams.producer.EventProducer`,
paced to a rate, reporting progress through a callback.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from insights.generate.alerts import alert_feed, alert_rules
from insights.generate.delivery import Delivery, deliver
from insights.generate.encode import alert_record, scrape_record
from insights.generate.market import Market
from core.errors import Interrupted
from core.settings import Settings
from streams.producer import DeliveryError, EventProducer
from streams.serde import RecordContext, make_serializer
from streams.topics import TopicSpec, event_topics

Kind = Literal["scrape", "alerts"]
SUBJECT: dict[Kind, str] = {"scrape": "product_scraped", "alerts": "alert_triggered"}
#: a low guess of alerts per scrape (0.24 without rules, ~0.4 with a dozen): sizing the
#: market's clock for at least this many scrapes makes an alert run end before "now"
ALERTS_PER_SCRAPE = 0.15


@dataclass(frozen=True)
class Plan:
    kind: Kind
    products: int
    events: int  # distinct events; duplicates come on top
    seed: int = 0
    duplicates: float = 0.0
    out_of_order: float = 0.0
    #: event times run from ``start`` over about ``span`` (default: the span up to now)
    span: timedelta = timedelta(days=7)
    start: datetime | None = None
    #: alert rules 1..rules referenced by alerts (alerts only)
    rules: int = 12
    #: mixed into every event id; None = a fresh one (two runs never share an event id).
    #: Give a past run's id to re-send that run exactly: every event is then a redelivery.
    run_id: uuid.UUID | None = None

    def with_run_id(self) -> Plan:
        """This plan with its run id fixed, so that what is printed is what is sent."""
        if self.run_id is not None:
            return self
        return dataclasses.replace(self, run_id=uuid.uuid4())

    def start_at(self, now: datetime | None = None) -> datetime:
        if self.start is not None:
            return self.start
        now = now or datetime.now(timezone.utc)
        # whole seconds: the same plan a second later names the same minute
        return (now - self.span).replace(microsecond=0)


def plan_events(plan: Plan, now: datetime | None = None) -> Iterator[Delivery[Any]]:
    """The deliveries of a plan: distinct events plus the requested duplicates and disorder."""
    start = plan.start_at(now)
    if plan.kind == "scrape":
        market = Market(plan.products, start, plan.seed, span=plan.span, events=plan.events, run_id=plan.run_id)
        events: Iterator[Any] = market.scrapes(plan.events)
    else:
        needed = math.ceil(plan.events / ALERTS_PER_SCRAPE)
        market = Market(plan.products, start, plan.seed, span=plan.span, events=needed, run_id=plan.run_id)
        events = alert_feed(market, alert_rules(plan.rules), plan.events)
    return deliver(
        events,
        key=lambda e: e.key,
        seed=plan.seed,
        duplicates=plan.duplicates,
        out_of_order_p=plan.out_of_order,
    )


@dataclass
class Summary:
    topic: str
    run_id: uuid.UUID | None = None
    events: int = 0  # distinct events sent
    duplicates: int = 0
    reordered: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    #: partition -> records acknowledged
    partitions: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.events + self.duplicates

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class PublishInterrupted(Interrupted):
    """Ctrl-C during :func:`publish`: what was handed to Kafka and what it acknowledged."""

    def __init__(self, summary: Summary, planned: int, acknowledged: int, unconfirmed: int) -> None:
        self.summary = summary
        self.acknowledged = acknowledged
        self.unconfirmed = unconfirmed
        lost = f"; {unconfirmed:,} not confirmed (they may or may not have landed)" if unconfirmed else ""
        super().__init__(
            f"sent {summary.events:,} of {planned:,} events (+{summary.duplicates:,} duplicates) to "
            f"{summary.topic}: {acknowledged:,} record(s) acknowledged by Kafka{lost}; "
            f"run id {summary.run_id} (--run-id re-sends the same events)"
        )


#: how long an interrupted run waits for Kafka to acknowledge what was already queued
INTERRUPT_FLUSH_S = 10.0


def topic_for(settings: Settings, kind: Kind) -> TopicSpec:
    subject = SUBJECT[kind]
    return next(s for s in event_topics(settings) if s.value_subject == subject)


class Pacer:
    """Sleeps so that the n-th record leaves no earlier than n / rate seconds after the start."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.started = clock()

    def wait(self, sent: int) -> None:
        if self.rate <= 0:
            return
        ahead = self.started + sent / self.rate - self.clock()
        if ahead > 0:
            time.sleep(ahead)


def publish(
    settings: Settings,
    plan: Plan,
    *,
    rate: float = 0.0,
    on_progress: Callable[[Summary], None] | None = None,
    progress_every: int = 500,
) -> Summary:
    """Send the plan's events to its topic; raises ``DeliveryError`` if any was not acknowledged.

    Ctrl-C stops sending, waits up to :data:`INTERRUPT_FLUSH_S` for what is queued, and
    raises :class:`PublishInterrupted` saying what was sent and acknowledged.
    """
    plan = plan.with_run_id()
    spec = topic_for(settings, plan.kind)
    serialize = make_serializer(settings, SUBJECT[plan.kind])
    encode = scrape_record if plan.kind == "scrape" else alert_record
    ctx = RecordContext(spec.name)
    summary = Summary(spec.name, run_id=plan.run_id)
    pacer = Pacer(rate)
    started = reported = time.monotonic()
    with EventProducer(settings) as producer:
        try:
            for sent, d in enumerate(plan_events(plan)):
                pacer.wait(sent)
                value = serialize(encode(d.event), ctx)
                producer.produce_event(spec.name, d.event.key.encode(), value)
                summary.bytes += len(value)
                if d.duplicate:
                    summary.duplicates += 1
                else:
                    summary.events += 1
                summary.reordered += d.reordered
                # every progress_every records, and at least twice a second when paced slowly
                if on_progress is not None and (sent % progress_every == 0 or rate > 0):
                    now = time.monotonic()
                    if sent % progress_every == 0 or now - reported >= 0.5:
                        reported = now
                        summary.elapsed_s = now - started
                        on_progress(summary)
            producer.flush()
        except KeyboardInterrupt:
            # what is queued was handed to Kafka already: let it land, then say what did
            try:
                producer.flush(INTERRUPT_FLUSH_S)
            except DeliveryError:
                pass  # counted below: acknowledged vs not
            summary.elapsed_s = time.monotonic() - started
            summary.partitions = dict(sorted(producer.stats.per_partition.get(spec.name, {}).items()))
            raise PublishInterrupted(
                summary, plan.events, producer.stats.delivered, producer.stats.produced - producer.stats.delivered
            ) from None
        summary.partitions = dict(sorted(producer.stats.per_partition.get(spec.name, {}).items()))
    summary.elapsed_s = time.monotonic() - started
    if on_progress is not None:
        on_progress(summary)
    return summary
