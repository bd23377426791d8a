"""Errors of the database layer, under the project's single root."""

from __future__ import annotations

from core.errors import InsightsError


class DatabaseError(InsightsError):
    """PostgreSQL refused or failed something the database layer asked of it."""


class MigrationError(DatabaseError):
    """ddl/ and the database disagree (a changed or missing migration, a bad file name)."""


class PartitionError(DatabaseError):
    """A partition could not be created, split or pruned."""
