"""The alert-rule engine: the CDC topics of snapshots, rules and groups -> AlertTriggered (docs/alert-rules.md)."""

from consumers.rules.spec import SPEC
from consumers.rules.sink import RulesSink

__all__ = ["SPEC", "RulesSink"]
