"""Amazon Insights ingest: the application layer (settings, CLI, local stack, database).

Kafka plumbing lives in ``streams``; the Postgres-writing applications in ``consumers``.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root, where ``ddl/`` and ``schemas/avro/`` live (editable install).
REPO_ROOT = Path(__file__).resolve().parent.parent
