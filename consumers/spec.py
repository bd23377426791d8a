"""What a sink declares about itself, so that one generic loop can run it: its name, how to
make it, the topics it reads, and what the operator should do when they are missing.

Each sink package declares one :class:`SinkSpec` next to its sink class;
``consumers.registry`` maps names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from core.settings import Settings
from streams.consumer import ConsumerError, Sink
from streams.topics import TopicSpec, event_topics


@dataclass(frozen=True)
class SinkSpec:
    #: the name ``insights consume <name>`` takes
    name: str
    #: one line for the CLI's help
    help: str
    make: Callable[[], Sink[Any]]
    #: the topics the sink reads (one consumer group, one batch and transaction across them)
    topics: Callable[[Settings], list[str]]
    #: what to tell the operator when one of them does not exist
    missing_hint: str = "create it with `insights topics create`"
    #: dead-letter topics the consumer creates itself before its first record; None when
    #: ``insights topics create`` makes them
    own_dlq_topics: Callable[[Settings], list[TopicSpec]] | None = None
    #: for a sink that needs the settings (a producer of its own) or the service's metrics
    #: registry: how to make it from them; used instead of ``make`` when set
    make_for: Callable[[Settings, CollectorRegistry | None], Sink[Any]] | None = None

    def build(self, settings: Settings, registry: CollectorRegistry | None = None) -> Sink[Any]:
        return self.make_for(settings, registry) if self.make_for is not None else self.make()


def topic_for_subject(settings: Settings, subject: str) -> str:
    """The event topic whose values follow ``subject``."""
    for spec in event_topics(settings):
        if spec.value_subject == subject:
            return spec.name
    raise ConsumerError(f"no topic is declared for subject {subject!r} in streams/topics.py")
