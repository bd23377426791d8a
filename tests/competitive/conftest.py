"""The rule engine's fixtures serve here too: the same CDC tables, slot and topics per test."""

from tests.rules.conftest import rules_settings  # noqa: F401 - a fixture, registered by import
