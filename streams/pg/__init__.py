"""PostgreSQL plumbing shared by every layer above: one way to open a connection."""

from streams.pg.connect import connect

__all__ = ["connect"]
