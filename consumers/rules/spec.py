"""The rule engine as ``insights consume rules``: one group over four CDC topics."""

from __future__ import annotations

from consumers.rules.sink import RulesSink
from consumers.spec import SinkSpec
from core.errors import ConfigError
from core.settings import Settings
from streams.topics import TopicSpec, event_topics, rules_dlq_topics, rules_source_topics


def own_topics(settings: Settings) -> list[TopicSpec]:
    """The DLQs of its CDC topics, and the alerts topic it publishes to (made if missing)."""
    alerts = [s for s in event_topics(settings) if s.value_subject == "alert_triggered"]
    return [*rules_dlq_topics(settings), *alerts]


def _needs_settings() -> RulesSink:
    raise ConfigError("the rules sink publishes alerts: build it with its settings (SinkSpec.make_for)")


SPEC = SinkSpec(
    name="rules",
    help="alert rules evaluated on the CDC of snapshots, published as AlertTriggered",
    make=_needs_settings,
    make_for=RulesSink,
    topics=rules_source_topics,
    missing_hint="run `insights cdc setup` first",
    own_dlq_topics=own_topics,
)
