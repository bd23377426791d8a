"""The summaries consumer: CDC topics -> product summaries kept fresh (docs/summaries.md)."""

from consumers.summaries.consumer import SPEC, ensure_dlq_topics
from consumers.summaries.sink import SummariesSink

__all__ = ["SPEC", "SummariesSink", "ensure_dlq_topics"]
