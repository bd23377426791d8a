"""Amazon Insights ingest: the application layer (CLI, local stack, demo, status, database management).

The layers, bottom up: ``core`` (settings, errors, event models), ``streams`` (Kafka and
PostgreSQL plumbing), ``consumers`` (the sinks), and this package. See docs/architecture.md.
"""

__version__ = "0.1.0"
