"""What every long-running process shares: health, metrics, logging, signals (see ``runner``)."""

from streams.service.health import Health

__all__ = ["Health"]
