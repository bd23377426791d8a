"""The alerts sink: AlertTriggered events into alerts, with exact alert_rules counters."""

from consumers.alerts.sink import SPEC, AlertsSink

__all__ = ["SPEC", "AlertsSink"]
