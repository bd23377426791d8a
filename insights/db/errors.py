"""Errors of the database layer, under the project's single root."""

from __future__ import annotations

# raised by streams.pg too (partitions on demand): declared there, one class each
from streams.pg.errors import DatabaseError, PartitionError

__all__ = ["DatabaseError", "MigrationError", "PartitionError"]


class MigrationError(DatabaseError):
    """ddl/ and the database disagree (a changed or missing migration, a bad file name)."""
