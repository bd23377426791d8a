"""What every long-running process shares: health, metrics, logging, signals.

The frame itself is :class:`streams.service.runner.Service`; its parts are ``health``
(liveness and reachability), ``http`` (``/metrics`` and ``/healthz`` on a port that never
crashes a second process), ``logs`` (JSON lines), ``probes`` (Kafka and PostgreSQL
reachability) and ``registry`` (one Prometheus registry per process). Import them from
their modules: this package stays light, the CLI imports it for every command.
"""

from streams.service.health import Health

__all__ = ["Health"]
