"""What every long-running process shares: health, metrics, logging, signals (see ``runner``)."""

from streams.service.health import Health, HealthReport
from streams.service.http import MetricsServer
from streams.service.logs import configure_logging, json_logging_active
from streams.service.probes import KafkaProbe, PostgresProbe, Probe
from streams.service.registry import process_registry
from streams.service.runner import Service

__all__ = [
    "Health",
    "HealthReport",
    "KafkaProbe",
    "MetricsServer",
    "PostgresProbe",
    "Probe",
    "Service",
    "configure_logging",
    "json_logging_active",
    "process_registry",
]
