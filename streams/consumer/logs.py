"""Moved to :mod:`streams.service.logs` (every long-running process logs the same way)."""

from streams.service.logs import JsonFormatter, KeyValueFormatter, configure_logging, extra_fields

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure_logging", "extra_fields"]
