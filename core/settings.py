"""Settings, one typed object per concern, read once at the entry point.

Each concern (Kafka, PostgreSQL, consumer, service, CDC, local stack) is its own
pydantic-settings class with its own ``INSIGHTS_…`` prefix, so a layer receives only
what it needs (a DLQ producer gets :class:`KafkaSettings`, not the stack's ports). The
variables keep their flat names (``INSIGHTS_KAFKA_BOOTSTRAP_SERVERS``,
``INSIGHTS_BATCH_SIZE``…): the README's table is the public vocabulary, and
:meth:`Settings.replace` and :func:`load_settings` accept those flat names too.

Safe defaults point at the local stack (loopback, non-standard ports) so that a fresh
clone works with no configuration. Secrets are ``SecretStr`` and never printed.
Nothing below the entry point calls :func:`load_settings`: settings are passed in.
"""

from __future__ import annotations

import difflib
import io
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from dotenv.parser import parse_stream  # what pydantic-settings reads .env with
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    AliasChoices,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from core.errors import ConfigError
from core.paths import REPO_ROOT

ENV_PREFIX = "INSIGHTS_"
#: the file pydantic-settings reads, relative to the working directory
ENV_FILE = ".env"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )


def _alias(flat: str) -> Any:
    """A field whose variable does not carry its concern's prefix (``INSIGHTS_TOPIC_PREFIX``)."""
    # only the variable's name: a bare ``TOPIC_PREFIX`` in the environment must not count
    return AliasChoices(f"{ENV_PREFIX}{flat.upper()}")


class KafkaSettings(BaseSettings):
    """How every Kafka client of the project reaches the cluster."""

    model_config = _config(f"{ENV_PREFIX}KAFKA_")

    bootstrap_servers: str = Field("127.0.0.1:59092", description="Kafka bootstrap servers, host:port[,host:port]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    overrides: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka properties as a JSON object, applied last"
    )
    schema_registry_url: str | None = Field(
        None,
        validation_alias=_alias("schema_registry_url"),
        description="Confluent-compatible Schema Registry; unset = single-object encoding",
    )
    topic_prefix: str = Field("insights", pattern=r"^[A-Za-z0-9._-]+$", validation_alias=_alias("topic_prefix"))
    replication_factor: int | None = Field(
        None, ge=1, le=32, description="replicas of every declared topic; unset = 3 when >= 3 brokers answer, else 1"
    )
    min_insync_replicas: int | None = Field(
        None, ge=1, le=32, description="min.insync.replicas of every declared topic; unset = 2 when the factor is >= 3, else 1"
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            parsed = json.loads(value) if value.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object of librdkafka properties")
            return {str(k): str(v) for k, v in parsed.items()}
        return value

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.overrides)
        conf.update(overrides)
        return conf

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic, e.g. ``scrape`` -> ``insights.scrape``."""
        return f"{self.topic_prefix}.{name}"

    def replication(self, brokers: int) -> tuple[int, int]:
        """(replication factor, ``min.insync.replicas``) of the topics of a ``brokers``-node cluster.

        Unset, three replicas with two in sync once three brokers answer: with
        ``acks=all`` a write then survives the loss of any one broker, and producing
        goes on while one broker is down (a second loss stops writes rather than
        acknowledging a record only one broker holds). One broker can only hold one
        replica: 1 and 1.
        """
        factor = self.replication_factor or (3 if brokers >= 3 else 1)
        min_insync = self.min_insync_replicas or (2 if factor >= 3 else 1)
        if min_insync > factor:
            raise ConfigError(
                f"INSIGHTS_KAFKA_MIN_INSYNC_REPLICAS={min_insync} is more than the replication factor {factor}: "
                "no write could ever be acknowledged; lower it or raise INSIGHTS_KAFKA_REPLICATION_FACTOR"
            )
        return factor, min_insync


class PostgresSettings(BaseSettings):
    """How the project reaches PostgreSQL, and the service roles' passwords."""

    model_config = _config(f"{ENV_PREFIX}PG_")

    dsn: str = Field(
        "postgresql://insights@127.0.0.1:55432/insights",
        description="libpq connection string or URI, without the password",
    )
    password: SecretStr | None = Field(None, description="password for dsn's user")
    ingest_password: SecretStr | None = Field(
        None, description="login password for the insights_ingest role (`insights db passwords`)"
    )
    cdc_password: SecretStr | None = Field(
        None, description="login password for the insights_cdc role (`insights db passwords`)"
    )
    # Read routing is done by libpq itself (multi-host DSN, target_session_attrs=prefer-standby),
    # not by a PgBouncer read pool: PgBouncer 1.18 cannot tell a standby from a primary nor
    # fall back when every standby is down, while libpq tries the standbys first and then any
    # server that answers, with no extra process to run (docs/runbooks.md#read-routing).
    read_dsn: str | None = Field(
        None,
        description="DSN for read-only work (status, stats, reports); unset = dsn. "
        "Multi-host with target_session_attrs=prefer-standby reaches a replica, else the primary",
    )
    replica_lag_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="replay lag (bytes) above which status flags a replica"
    )
    replica_lag_max_s: float = Field(30.0, ge=0, description="replay lag (seconds) above which status flags a replica")
    backup_stanza: str = Field("insights", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="pgBackRest stanza")
    backup_config: Path | None = Field(
        None, description="pgBackRest configuration file; unset = the local stack's, else pgBackRest's default"
    )
    backup_max_age_h: float = Field(
        26.0, gt=0, description="status flags backups when the newest one is older than this (hours)"
    )
    # one setting, not a `db schedule` option: every runner of the retention (the systemd
    # timer, `db partitions prune`, `db maintain`) and `status` must agree on it, and they
    # share the settings (the env file of the units), not a command line
    retention_archive_dir: Path | None = Field(
        None,
        description="archive every partition's rows here (Avro, `insights archive restore`) before the "
        "retention drops it; set = the pg_cron SQL drop job is not installed, the systemd timer prunes",
    )

    @field_validator("dsn", "read_dsn")
    @classmethod
    def _dsn_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:  # psycopg.ProgrammingError
            raise ValueError(f"not a libpq connection string: {exc}") from None
        if parts.get("password"):
            raise ValueError("carries a password; put it in INSIGHTS_PG_PASSWORD instead")
        return value

    def conninfo(self, **overrides: Any) -> str:
        """The DSN with the secret password folded in: for connecting, never for logging.

        A multi-host DSN without ``target_session_attrs`` gets ``read-write``: libpq would
        otherwise take the first server that answers, a standby as readily as the
        primary, and every write would fail with "read-only transaction" (25006).
        """
        return self._conninfo(self.dsn, "read-write", overrides)

    def read_conninfo(self, **overrides: Any) -> str:
        """Where read-only work connects: ``read_dsn`` when set (a replica first), else ``dsn``."""
        if self.read_dsn is None:
            return self.conninfo(**overrides)
        return self._conninfo(self.read_dsn, "prefer-standby", overrides)

    def _conninfo(self, dsn: str, default_attrs: str, overrides: dict[str, Any]) -> str:
        extra: dict[str, Any] = dict(overrides)
        if self.password is not None and "password" not in extra:
            extra["password"] = self.password.get_secret_value()
        if "target_session_attrs" not in extra and is_multi_host(dsn):
            parts = conninfo_to_dict(dsn)
            if not parts.get("target_session_attrs"):
                extra["target_session_attrs"] = default_attrs
        return make_conninfo(dsn, **extra)


def is_multi_host(dsn: str) -> bool:
    """True when a libpq DSN names several servers (``host=a,b`` or ``postgresql://a,b/...``)."""
    parts = conninfo_to_dict(dsn)
    return "," in str(parts.get("host") or "") or "," in str(parts.get("hostaddr") or "") or "," in str(
        parts.get("port") or ""
    )


class ConsumerSettings(BaseSettings):
    """The consumers' group and batching."""

    model_config = _config(ENV_PREFIX)

    group: str = Field("insights-ingest", min_length=1, validation_alias=_alias("consumer_group"))
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    batch_wait_ms: int = Field(200, ge=0, le=60_000)
    # How long the broker may hold a fetch to fill it (fetch.wait.max.ms / fetch.min.bytes).
    # librdkafka's defaults (fetch.min.bytes 1) answer every fetch with whatever one record
    # brought: at 2,000 events/s the four groups of the pipeline sent the broker so many small
    # fetches that it cost 176 us of broker CPU per event and the summaries missed a 1 s p99
    # (BENCHMARKS.md "Downstream latency"). A record waits at most this long more in a quiet
    # period; a busy one fills the fetch sooner.
    fetch_wait_ms: int = Field(100, ge=1, le=10_000, description="longest a fetch waits at the broker to fill")
    fetch_min_bytes: int = Field(262_144, ge=1, le=100_000_000, description="bytes a fetch waits for (up to fetch_wait_ms)")
    # Hostile-input limits, checked before a record's rows are built (a 50 MB description
    # or a 10,000-element array is refused with its reason instead of reaching PostgreSQL).
    max_record_bytes: int = Field(1_048_576, ge=1, description="largest encoded record value accepted")
    max_text_chars: int = Field(100_000, ge=1, description="longest string in a decoded record")
    max_list_items: int = Field(1_000, ge=1, description="most items in one array or map of a decoded record")


class ServiceSettings(BaseSettings):
    """What every long-running process shares: logging and its metrics/health endpoint."""

    model_config = _config(ENV_PREFIX)

    metrics_port: int = Field(9464, ge=0, le=65535, description="0 = no metrics endpoint")
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class CdcSettings(BaseSettings):
    """The CDC reader (streams/cdc, docs/cdc.md)."""

    model_config = _config(f"{ENV_PREFIX}CDC_")

    slot_name: str = Field("insights_cdc", pattern=r"^[a-z0-9_]{1,63}$")
    publication: str = Field("insights_cdc", pattern=r"^[A-Za-z0-9_]{1,63}$")
    # "schema" would shadow a BaseModel attribute
    schema_name: str = Field(
        "public", validation_alias=_alias("cdc_schema"), description="schema of the published tables"
    )
    tables: list[str] = Field(
        default_factory=list, description="tables to publish (JSON list); empty = streams.topics.CDC_TABLES"
    )
    heartbeat_interval_s: float = Field(10.0, gt=0, le=3600)
    status_interval_s: float = Field(1.0, gt=0, le=60, description="how often the slot position is confirmed")
    standby_retry_s: float = Field(2.0, gt=0, le=300, description="hot standby: how often to try the slot")
    reconnect_max_s: float = Field(
        10.0, gt=0, le=600, description="a lost stream is reconnected with backoff up to this many seconds apart"
    )
    include_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="per table, the only columns published (JSON; key columns always are)"
    )
    exclude_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="per table, columns never published (JSON; not key columns)"
    )
    mask_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="per table, columns published as the SHA-256 of their text (JSON)"
    )
    transaction_topic: bool = Field(
        False, description="publish BEGIN/END of each transaction with event counts to <prefix>.cdc.transactions"
    )
    incremental_chunk_size: int = Field(
        1024, ge=1, le=1_000_000, description="incremental snapshots: rows per chunk (between two watermarks)"
    )
    stream_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="no message from the server for this long (after asking): the stream is lost"
    )
    # typed change events (docs/cdc.md "Typed change events"); "generic" keeps the one envelope of
    # schemas/avro/cdc_change, byte for byte
    format: Literal["generic", "typed"] = Field(
        "generic", description="generic: one envelope for every table; typed: per-table Avro schemas from the catalog"
    )
    typed_compatibility: Literal[
        "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
    ] = Field(
        "FULL",
        description="typed events: the level a table's new schema version is checked at (a registry's subject level wins)",
    )
    typed_allow_incompatible: bool = Field(
        False, description="typed events: register a schema change that fails the check instead of stopping the reader"
    )
    streaming: bool = Field(
        False, description="protocol v2 streaming of large in-progress transactions: their changes are "
        "received and encoded before the commit, spooled to disk, published at the commit (docs/cdc.md#streaming)"
    )
    spool_dir: str = Field("", description="streaming: where in-progress transactions are spooled (empty: the temp dir)")
    logical_decoding_work_mem: str = Field(
        "", pattern=r"^([0-9]+\s*(kB|MB|GB)?)?$",
        description="the replication session's logical_decoding_work_mem (empty: the server's): how big a "
        "transaction gets before it is streamed (or spilled to disk by the server)",
    )
    pgoutput_binary: bool = Field(
        False, description="ask pgoutput for binary column values (PostgreSQL 14+); same events, measured slower "
        "here (docs/cdc.md#pgoutput-binary-mode)"
    )


class StackSettings(BaseSettings):
    """The local stack `insights stack` starts (development and CI)."""

    model_config = _config(f"{ENV_PREFIX}STACK_")

    dir: Path = Field(REPO_ROOT / ".stack", description="where the local stack keeps its data")
    pg_port: int = Field(55432, ge=1024, le=65535)
    kafka_port: int = Field(59092, ge=1024, le=65535)
    kafka_controller_port: int = Field(59093, ge=1024, le=65535)
    # unset, derived from kafka_port rather than a fixed number: a fixed 59094 would be
    # node 2's broker port in a cluster, and every private stack (tests, benches) would
    # reach for the shared stack's TLS port
    kafka_ssl_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="TLS listener of Kafka node 1 (node n: + 2(n-1)); unset = INSIGHTS_STACK_KAFKA_PORT + 2 x nodes "
        "(59094 for one node); 0 = no TLS listener",
    )
    kafka_brokers: int | None = Field(
        None,
        ge=1,
        le=5,
        description="Kafka nodes (broker + controller each); unset = as the stack was formatted, else 1",
    )
    kafka_heap_mb: int | None = Field(
        None, ge=128, le=16384, description="JVM heap per Kafka node; unset = 1024 for one node, 384 each for more"
    )
    pgbouncer_port: int = Field(56432, ge=1024, le=65535)
    pg_replica_base_port: int = Field(
        55433, ge=1024, le=65535, description="`stack up --replicas N`: replica i listens on this port + i"
    )
    # On by default: a new stack is secure. An existing stack directory keeps what it was
    # made with (LocalPostgres.tls looks at the stack's files, not at this setting).
    pg_tls: bool = Field(
        True,
        description="a NEW local PostgreSQL gets TLS (own CA), scram-sha-256 over TCP and generated passwords; "
        "INSIGHTS_STACK_PG_TLS=false makes a plain one (trust on loopback)",
    )


class StatusSettings(BaseSettings):
    """Thresholds of ``insights status`` (README, "insights status"); every row is ok, warn or fail.

    For a figure where more is worse (lag, dead letters, WAL held) a value at or above
    ``*_warn`` is a warning and at or above ``*_fail`` a failure; where less is worse
    (``safe_wal_size``, partitions created ahead) below the threshold counts.
    """

    model_config = _config(f"{ENV_PREFIX}STATUS_")

    timeout_s: float = Field(3.0, gt=0, le=60, description="how long each service may take to answer status")
    lag_records_warn: int = Field(10_000, ge=1, description="records a group/topic may be behind before a warning")
    lag_records_fail: int = Field(100_000, ge=1)
    lag_seconds_warn: float = Field(300.0, gt=0, description="age of the oldest record a group has not stored yet")
    lag_seconds_fail: float = Field(1800.0, gt=0)
    dlq_depth_warn: int = Field(100, ge=1, description="dead letters not yet replayed or purged (1 = any)")
    dlq_depth_fail: int = Field(10_000, ge=1)
    slot_required: bool = Field(True, description="a missing CDC slot fails status (false: CDC not used)")
    slot_retained_warn: ByteSize = Field(ByteSize(256 * 2**20), description="WAL the CDC slot holds back, e.g. 256MiB")
    slot_retained_fail: ByteSize = Field(ByteSize(2**30))
    slot_safe_wal_warn: ByteSize = Field(ByteSize(2**30), description="warn when safe_wal_size drops below")
    slot_safe_wal_fail: ByteSize = Field(ByteSize(256 * 2**20))
    summaries_stale_warn_s: float = Field(600.0, gt=0, description="summaries overdue for a sweep this long")
    summaries_stale_fail_s: float = Field(3600.0, gt=0)
    partitions_ahead_warn_days: float = Field(7.0, ge=0, description="partitions should exist this far ahead")
    partitions_ahead_fail_days: float = Field(1.0, ge=0)
    freshness_warn_s: float = Field(
        60.0, gt=0, description="a downstream consumer with changes waiting whose newest applied commit is this old"
    )
    freshness_fail_s: float = Field(600.0, gt=0)

    @field_validator("lag_records_fail", "lag_seconds_fail", "dlq_depth_fail", "slot_retained_fail",
                     "summaries_stale_fail_s", "freshness_fail_s")
    @classmethod
    def _fail_not_below_warn(cls, value: Any, info: ValidationInfo) -> Any:
        # a fail threshold under its warn threshold would skip the warning entirely
        warn_field = info.field_name.replace("_fail", "_warn")  # type: ignore[union-attr]
        warn = info.data.get(warn_field)
        if warn is not None and value < warn:
            raise ValueError(f"must be at least {env_name(cls, warn_field)} ({warn})")
        return value

    @field_validator("slot_safe_wal_fail", "partitions_ahead_fail_days")
    @classmethod
    def _fail_not_above_warn(cls, value: Any, info: ValidationInfo) -> Any:
        warn_field = info.field_name.replace("_fail", "_warn")  # type: ignore[union-attr]
        warn = info.data.get(warn_field)
        if warn is not None and value > warn:
            raise ValueError(f"must be at most {env_name(cls, warn_field)} ({warn})")
        return value


#: attribute of :class:`Settings` -> the concern's class
CONCERNS: dict[str, type[BaseSettings]] = {
    "kafka": KafkaSettings,
    "pg": PostgresSettings,
    "consumer": ConsumerSettings,
    "service": ServiceSettings,
    "cdc": CdcSettings,
    "stack": StackSettings,
    "status": StatusSettings,
}


def env_name(concern: type[BaseSettings], field: str) -> str:
    """The environment variable of one field, e.g. ``INSIGHTS_KAFKA_BOOTSTRAP_SERVERS``."""
    alias = concern.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"{concern.model_config['env_prefix']}{field}".upper()


def flat_names() -> dict[str, tuple[str, str]]:
    """``batch_size`` -> (``consumer``, ``batch_size``): every variable without its ``INSIGHTS_``."""
    names: dict[str, tuple[str, str]] = {}
    for attr, concern in CONCERNS.items():
        for field in concern.model_fields:
            names[env_name(concern, field)[len(ENV_PREFIX):].lower()] = (attr, field)
    return names


class Settings(BaseModel):
    """All concerns together: what the entry point reads and hands down, piece by piece."""

    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings
    pg: PostgresSettings
    consumer: ConsumerSettings
    service: ServiceSettings
    cdc: CdcSettings
    stack: StackSettings
    status: StatusSettings

    _flat: ClassVar[dict[str, tuple[str, str]] | None] = None

    @classmethod
    def _names(cls) -> dict[str, tuple[str, str]]:
        if cls._flat is None:
            cls._flat = flat_names()
        return cls._flat

    def replace(self, **flat: Any) -> Settings:
        """A copy with some variables changed, by their flat names (``pg_dsn=…``, ``batch_size=…``).

        Values are validated as if they came from the environment.
        """
        grouped = _group(flat)
        update: dict[str, Any] = {}
        for attr, values in grouped.items():
            current: BaseSettings = getattr(self, attr)
            merged = {**current.model_dump(), **values}
            update[attr] = _build(CONCERNS[attr], merged, from_env=False)
        return self.model_copy(update=update)

    def to_env(self) -> dict[str, str]:
        """These settings as ``INSIGHTS_*`` variables, for a child process started with them.

        Secrets are included: the child needs them as much as this process does. Unset
        optional values are left out, so the child falls back to the same defaults.
        """
        env: dict[str, str] = {}
        for attr, concern in CONCERNS.items():
            part = getattr(self, attr)
            for field in concern.model_fields:
                value = getattr(part, field)
                if value is None:
                    continue
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                elif isinstance(value, (dict, list)):
                    value = json.dumps(value)
                env[env_name(concern, field)] = str(value)
        return env


def _group(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = Settings._names()
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        if name not in names:
            raise ConfigError(f"unknown setting {ENV_PREFIX}{name.upper()}")
        attr, field = names[name]
        grouped.setdefault(attr, {})[field] = value
    return grouped


def describe_validation_error(exc: ValidationError, concern: type[BaseSettings]) -> str:
    """One line naming the first bad variable, e.g. ``INSIGHTS_BATCH_SIZE: ...``."""
    first = exc.errors()[0]
    loc = first.get("loc") or ()
    field = str(loc[0]) if loc else "?"
    if field not in concern.model_fields:  # reported under an alias
        field = next((f for f in concern.model_fields if env_name(concern, f).lower().endswith(field.lower())), field)
    variable = env_name(concern, field) if field in concern.model_fields else f"{ENV_PREFIX}{field.upper()}"
    message = first.get("msg", "invalid value")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"invalid setting {variable}: {message}{suffix}"


def _build(concern: type[BaseSettings], values: dict[str, Any], *, from_env: bool) -> BaseSettings:
    try:
        if from_env:
            return concern(**values)
        # replace(): validate the given values only, no second read of the environment
        return concern.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, concern)) from None
    except SettingsError as exc:
        # raised before validation when an env value is not even JSON (dict and list fields)
        text = str(exc)
        field = text.split('"')[1] if text.count('"') >= 2 else "?"
        name = env_name(concern, field) if field in concern.model_fields else f"{ENV_PREFIX}{field.upper()}"
        raise ConfigError(f"invalid setting {name}: not valid JSON") from None


def check_env_file(path: Path) -> None:
    """Refuse a ``.env`` that pydantic-settings would read wrongly or half, naming the line.

    Left to python-dotenv, a line it cannot parse (junk, an unclosed quote) is skipped
    with a logged warning and the command goes on with whatever was parsed, and bytes that
    are not UTF-8 raise ``UnicodeDecodeError`` from deep inside. Both must stop the command
    before anything runs: a setting the operator believes set is not. The check uses
    dotenv's own parser, so it judges exactly what will be read. Values are never echoed:
    a broken line may hold a secret.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}): fix its permissions or remove it") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        raise ConfigError(f"{path} line 1: starts with a byte-order mark: save the file as UTF-8 without BOM")
    known = {env_name(concern, field) for concern in CONCERNS.values() for field in concern.model_fields}
    for binding in parse_stream(io.StringIO(text)):
        source = binding.original.string
        # a binding's text starts with the blank lines before it; report the line itself
        leading = source[: len(source) - len(source.lstrip())]
        line = binding.original.line + leading.count("\n")
        if binding.error:
            first = source.strip().splitlines()[0] if source.strip() else ""
            why = "an unclosed quote" if first.count('"') % 2 or first.count("'") % 2 else "not NAME=value"
            raise ConfigError(f"{path} line {line}: {why}: fix or remove the line") from None
        key = binding.key
        if key is None:  # a comment or blank line
            continue
        if binding.value is None:
            raise ConfigError(f"{path} line {line}: {key} has no '=value': fix or remove the line")
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known and not upper.startswith(f"{ENV_PREFIX}TEST_"):
            close = difflib.get_close_matches(upper, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{path} line {line}: unknown setting {key}{hint}")


def load_settings(**flat: Any) -> Settings:
    """Read the settings once (environment, then ``.env``), with ``flat`` overrides on top.

    Malformed input, in the environment or in ``.env``, becomes a :class:`ConfigError`
    naming the variable or the file and line (exit code 2).
    """
    check_env_file(Path(ENV_FILE).absolute())
    grouped = _group(flat)
    parts = {
        attr: _build(concern, grouped.get(attr, {}), from_env=True) for attr, concern in CONCERNS.items()
    }
    return Settings(**parts)
