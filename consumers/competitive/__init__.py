"""Competitive positions: the main product's rank in each group, kept from the CDC stream (docs/competitive.md)."""

from consumers.competitive.sink import SPEC, CompetitiveSink

__all__ = ["SPEC", "CompetitiveSink"]
