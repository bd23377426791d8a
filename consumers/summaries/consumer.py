"""The summaries consumer: one consumer group over three CDC topics, declared as :data:`SPEC`.

The shared loop subscribes to the three topics at once: one group, one batch across the
topics, and one transaction for the batch's rows and all its offsets. Records the sink
cannot use go to ``<topic>.dlq``, declared in ``streams.topics`` and created by the
consumer before its first record (``insights cdc setup`` makes the CDC topics, not these).
"""

from __future__ import annotations

from consumers.spec import SinkSpec
from consumers.summaries.sink import SummariesSink
from core.settings import Settings
from streams.admin import ensure_topics
from streams.topics import summaries_dlq_topics, summaries_source_topics


def ensure_dlq_topics(settings: Settings) -> None:
    ensure_topics(settings, summaries_dlq_topics(settings))


SPEC = SinkSpec(
    name="summaries",
    help="the CDC topics of products, product_snapshots and alerts into summaries.product_summary",
    make=SummariesSink,
    topics=summaries_source_topics,
    missing_hint="run `insights cdc setup` first",
    own_dlq_topics=summaries_dlq_topics,
    make_for=lambda _settings, registry: SummariesSink(registry),
)
