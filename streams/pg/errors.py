"""Errors of the PostgreSQL plumbing, under the project's single root.

They live here, not in ``insights.db``, because the consumers raise them too (a partition
their rows need could not be created); ``insights.db.errors`` re-exports them.
"""

from __future__ import annotations

from core.errors import InsightsError


class DatabaseError(InsightsError):
    """PostgreSQL refused or failed something the database layer asked of it."""


class PartitionError(DatabaseError):
    """A partition could not be created, split or pruned."""
