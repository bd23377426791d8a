"""The consumer loop shared by every sink: ``loop`` -> ``writer`` -> ``transaction`` (see ``loop``)."""

from streams.consumer.loop import ConsumerError, ConsumerLoop
from streams.consumer.policy import Action, Decision, default_policy
from streams.consumer.sink import Item, Sink, Source
from streams.consumer.transaction import BatchResult

__all__ = [
    "Action", "BatchResult", "ConsumerError", "ConsumerLoop", "Decision", "Item", "Sink", "Source", "default_policy",
]
