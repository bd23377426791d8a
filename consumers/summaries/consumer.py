"""The summaries consumer process: one consumer group over three CDC topics.

The shared loop (``streams.consumer``) reads one subscription; a librdkafka subscription
that starts with ``^`` is a regular expression, so one anchored pattern naming exactly
the three topics gives one group, one batch across the topics, and one transaction for
the batch's rows and all its offsets. Records the sink cannot use go to
``<topic>.dlq``, declared in ``streams.topics`` and created before the loop starts.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

from consumers.summaries.sink import SummariesSink
from core.settings import Settings
from streams.admin import ensure_topics
from streams.consumer import ConsumerLoop
from streams.consumer.loop import ConsumerError
from streams.serde import RecordContext, make_deserializer
from streams.topics import summaries_dlq_topics, summaries_source_topics


def subscription(topics: list[str]) -> str:
    """An anchored librdkafka pattern matching exactly ``topics`` (names are [A-Za-z0-9._-])."""
    return "^(" + "|".join(t.replace(".", "\\.") for t in topics) + ")$"


def ensure_dlq_topics(settings: Settings) -> None:
    ensure_topics(settings, summaries_dlq_topics(settings))


class SummariesLoop(ConsumerLoop):
    """The shared loop, subscribed to the three CDC topics at once."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.topics = summaries_source_topics(settings)
        super().__init__(
            settings,
            SummariesSink(),
            topic=subscription(self.topics),
            decoder=make_deserializer(settings, SummariesSink.subject),
            context=RecordContext,
            **kwargs,
        )

    def _require_topic(self, consumer: Consumer) -> None:
        missing = []
        for topic in self.topics:
            found = consumer.list_topics(topic, timeout=15).topics.get(topic)
            if found is None or found.error is not None:
                missing.append(topic)
        if missing:
            raise ConsumerError(
                f"CDC topic(s) {', '.join(missing)} do not exist: run `insights cdc setup` first"
            )
        ensure_dlq_topics(self.settings)  # before any record could need one
