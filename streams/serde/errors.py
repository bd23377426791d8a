"""Typed serde errors. Per-record ones carry the record's Kafka coordinates.

A consumer catches :class:`SerdeError` (a :class:`~insights.errors.RecordError`) around
one record, sends the record to its dead-letter topic with the error's text, and goes on.
:class:`RegistryUnavailableError` is *not* per record: the registry being down says
nothing about the bytes, so a consumer must stop or retry rather than dead-letter.
"""

from __future__ import annotations

from core.errors import InsightsError, RecordError


class SerdeError(RecordError):
    """A record could not be serialized or deserialized."""


class UnknownSchemaError(SerdeError):
    """The payload names a schema (fingerprint or registry id) this reader cannot find."""


class CorruptPayloadError(SerdeError):
    """Wrong magic bytes, a truncated payload, or bytes that do not decode with their schema."""


class IncompatibleSchemaError(SerdeError):
    """The writer's schema is known but cannot be resolved to the reader's schema."""


class EncodeError(SerdeError):
    """A value does not fit the schema it is written with."""


class RegistryUnavailableError(InsightsError):
    """The schema registry did not answer: not the record's fault, never dead-letter on it."""
