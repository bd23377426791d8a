"""Settings: one pydantic-settings object, read once at the entry point.

Safe defaults point at the local stack (loopback, non-standard ports) so that a fresh
clone works with no configuration; every value can be overridden with an ``INSIGHTS_``
environment variable or a ``.env`` file. Secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from insights import REPO_ROOT
from insights.errors import ConfigError

ENV_PREFIX = "INSIGHTS_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:59092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_overrides: dict[str, str] = Field(
        default_factory=dict,
        description="extra librdkafka properties as a JSON object, applied last",
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible Schema Registry; unset = single-object encoding"
    )

    # --- PostgreSQL --------------------------------------------------------------
    pg_dsn: str = Field(
        "postgresql://insights@127.0.0.1:55432/insights",
        description="libpq connection string or URI, without the password",
    )
    pg_password: SecretStr | None = Field(None, description="password for pg_dsn's user")
    pg_ingest_password: SecretStr | None = Field(
        None, description="login password for the insights_ingest role (`insights db passwords`)"
    )
    pg_cdc_password: SecretStr | None = Field(
        None, description="login password for the insights_cdc role (`insights db passwords`)"
    )

    # --- streams -----------------------------------------------------------------
    topic_prefix: str = Field("insights", pattern=r"^[A-Za-z0-9._-]+$")
    consumer_group: str = Field("insights-ingest", min_length=1)
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    batch_wait_ms: int = Field(200, ge=0, le=60_000)
    metrics_port: int = Field(9464, ge=0, le=65535, description="0 = no metrics endpoint")
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- CDC reader (streams/cdc, docs/cdc.md) ---------------------------------------
    cdc_slot_name: str = Field("insights_cdc", pattern=r"^[a-z0-9_]{1,63}$")
    cdc_publication: str = Field("insights_cdc", pattern=r"^[A-Za-z0-9_]{1,63}$")
    cdc_schema: str = Field("public", description="schema of the published tables")
    cdc_tables: list[str] = Field(
        default_factory=list, description="tables to publish (JSON list); empty = streams.topics.CDC_TABLES"
    )
    cdc_heartbeat_interval_s: float = Field(10.0, gt=0, le=3600)
    cdc_status_interval_s: float = Field(1.0, gt=0, le=60, description="how often the slot position is confirmed")
    cdc_standby_retry_s: float = Field(2.0, gt=0, le=300, description="hot standby: how often to try the slot")

    # --- local stack ---------------------------------------------------------------
    stack_dir: Path = Field(REPO_ROOT / ".stack", description="where the local stack keeps its data")
    stack_pg_port: int = Field(55432, ge=1024, le=65535)
    stack_kafka_port: int = Field(59092, ge=1024, le=65535)
    stack_kafka_controller_port: int = Field(59093, ge=1024, le=65535)
    stack_pgbouncer_port: int = Field(56432, ge=1024, le=65535)

    @field_validator("kafka_overrides", mode="before")
    @classmethod
    def _overrides_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            parsed = json.loads(value) if value.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object of librdkafka properties")
            return {str(k): str(v) for k, v in parsed.items()}
        return value

    @field_validator("pg_dsn")
    @classmethod
    def _dsn_parses(cls, value: str) -> str:
        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:  # psycopg.ProgrammingError
            raise ValueError(f"not a libpq connection string: {exc}") from None
        if parts.get("password"):
            raise ValueError("carries a password; put it in INSIGHTS_PG_PASSWORD instead")
        return value

    # --- derived -------------------------------------------------------------------
    def pg_conninfo(self, **overrides: Any) -> str:
        """The DSN with the secret password folded in: for connecting, never for logging."""
        extra: dict[str, Any] = dict(overrides)
        if self.pg_password is not None and "password" not in extra:
            extra["password"] = self.pg_password.get_secret_value()
        return make_conninfo(self.pg_dsn, **extra)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = str(self.kafka_ssl_ca_location)
        if self.kafka_ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.kafka_ssl_certificate_location)
        if self.kafka_ssl_key_location:
            conf["ssl.key.location"] = str(self.kafka_ssl_key_location)
        if self.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf.update(self.kafka_overrides)
        conf.update(overrides)
        return conf

    def to_env(self) -> dict[str, str]:
        """These settings as ``INSIGHTS_*`` variables, for a child process started with them.

        Secrets are included: the child needs them as much as this process does. Unset
        optional values are left out, so the child falls back to the same defaults.
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic, e.g. ``scrape`` -> ``insights.scrape``."""
        return f"{self.topic_prefix}.{name}"

    @cached_property
    def ddl_dir(self) -> Path:
        return REPO_ROOT / "ddl"

    @cached_property
    def schemas_dir(self) -> Path:
        return REPO_ROOT / "schemas" / "avro"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad variable, e.g. ``INSIGHTS_BATCH_SIZE: ...``."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else "?"
    variable = f"{ENV_PREFIX}{field.upper()}"
    message = first.get("msg", "invalid value")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"invalid setting {variable}: {message}{suffix}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; malformed input becomes a :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except SettingsError as exc:
        # raised before validation when an env value is not even JSON (dict fields)
        text = str(exc)
        field = text.split('"')[1] if text.count('"') >= 2 else "?"
        raise ConfigError(f"invalid setting {ENV_PREFIX}{field.upper()}: not valid JSON") from None
