"""Every sink by name: what ``insights consume <name>`` can run, and how to build its loop.

A new sink declares a :class:`consumers.spec.SinkSpec` in its package and is listed in
:data:`SINKS`; the CLI's choices, its help and the loop it runs all come from here.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry

from consumers import alerts, competitive, rules, scrape, summaries
from consumers.spec import SinkSpec
from core.errors import ConfigError
from core.settings import Settings
from streams.admin import ensure_topics
from streams.consumer import ConsumerLoop, Source
from streams.serde import RecordContext, make_deserializer
from streams.service.health import Health

SINKS: dict[str, SinkSpec] = {spec.name: spec for spec in (scrape.SPEC, alerts.SPEC, summaries.SPEC, rules.SPEC, competitive.SPEC)}


def names() -> list[str]:
    return list(SINKS)


def get(name: str) -> SinkSpec:
    try:
        return SINKS[name]
    except KeyError:
        raise ConfigError(f"no sink named {name!r}; one of: {', '.join(SINKS)}") from None


def build_loop(
    settings: Settings,
    name: str,
    *,
    group: str | None = None,
    stop: threading.Event | None = None,
    registry: CollectorRegistry | None = None,
    health: Health | None = None,
    loop_class: type[ConsumerLoop] = ConsumerLoop,
    **options: Any,
) -> ConsumerLoop:
    """The shared loop around sink ``name``, reading the topics it declares.

    ``options`` are the loop's tuning (``auto_offset_reset``, ``idle_exit_after``,
    ``policy``...); ``group`` defaults to ``INSIGHTS_CONSUMER_GROUP``.
    """
    spec = get(name)
    sink = spec.build(settings, registry)
    own_dlqs = spec.own_dlq_topics
    source = Source(
        topics=tuple(spec.topics(settings)),
        decoder=make_deserializer(settings, sink.subject),
        context=RecordContext,
        missing_hint=spec.missing_hint,
        before_consuming=(lambda: ensure_topics(settings, own_dlqs(settings))) if own_dlqs else None,
    )
    loop = loop_class(
        sink, source, kafka=settings.kafka, pg=settings.pg, batching=settings.consumer,
        group=group, stop=stop, registry=registry, health=health, **options,
    )
    freshness = getattr(sink, "freshness", None)
    if freshness is not None:  # a downstream sink records what it applied under its group
        freshness.group = loop.group
    return loop
