"""Amazon Insights ingest: the application layer (CLI, local stack, demo, status, database management).

The layers, bottom up: ``core`` (settings, errors, event models), ``streams`` (Kafka and
PostgreSQL plumbing), ``consumers`` (the sinks), and this package. See docs/architecture.md.
"""

from core import __version__

__all__ = ["__version__"]
