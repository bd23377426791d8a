"""The summaries consumer: CDC topics -> product summaries kept fresh (docs/summaries.md)."""

from consumers.summaries.consumer import SummariesLoop, ensure_dlq_topics
from consumers.summaries.sink import SummariesSink

__all__ = ["SummariesLoop", "SummariesSink", "ensure_dlq_topics"]
