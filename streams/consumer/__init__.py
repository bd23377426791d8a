"""The consumer loop shared by every sink (see ``loop`` for the algorithm)."""

from streams.consumer.loop import BatchResult, ConsumerError, ConsumerLoop
from streams.consumer.policy import Action, Decision, default_policy
from streams.consumer.sink import Item, Sink

__all__ = ["Action", "BatchResult", "ConsumerError", "ConsumerLoop", "Decision", "Item", "Sink", "default_policy"]
