"""The one place that turns an exception into what an operator reads: one line naming the fix.

Every command's failure ends here (``insights.cli.main.run``). Three outcomes:

* a typed :class:`~core.errors.InsightsError`: its message, its exit code;
* a well-known foreign exception (psycopg by SQLSTATE or libpq's connection message,
  ``KafkaException`` by error code, the registry's HTTP client): mapped by
  :func:`operator_error` to a typed error whose message names the fix, exit code 1
  (wrapped ones count by their cause or context, so ``raise DatabaseError(...) from exc``
  and ``raise TopicAdminError(...) from None`` are recognised alike);
* anything else is a bug: one line, and the full traceback written to a file whose path
  the line gives (:func:`log_traceback`).

The lower layers keep raising what they raise; knowing which setting or command fixes a
failure is the application's business, so the mapping lives here, in the app layer.
"""

from __future__ import annotations

import getpass
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import psycopg
from confluent_kafka import KafkaError, KafkaException
from psycopg.conninfo import conninfo_to_dict

from core.errors import (
    AuthenticationError,
    ConfigError,
    InsightsError,
    NotMigratedError,
    PrivilegeError,
    ServiceUnavailableError,
)
from core.settings import Settings
from insights.cli import kafka_listener

#: where an unexpected error's traceback goes (``TMPDIR`` is honoured): every machine has
#: one, a production host as much as a laptop, unlike the local stack's directory
TRACEBACK_PREFIX = "insights-traceback-"

#: SQLSTATEs that mean "the project's tables are not there": undefined_table, invalid_schema_name
_NOT_MIGRATED = {"42P01", "3F000"}
_INSUFFICIENT_PRIVILEGE = "42501"
_INVALID_PASSWORD = {"28P01", "28000"}
_INVALID_CATALOG = "3D000"

_KAFKA_DOWN = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
}
_KAFKA_AUTH = {KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION, KafkaError._SSL}
_KAFKA_ACL = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
#: librdkafka's TLS file properties and the settings they come from (KafkaSettings.client_config)
_KAFKA_TLS_FILES = {
    "ssl.ca.location": "INSIGHTS_KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "INSIGHTS_KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "INSIGHTS_KAFKA_SSL_KEY_LOCATION",
}
_KAFKA_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}

# the libpq texts of failures that happen before any SQLSTATE exists (psycopg reports none)
_PG_REFUSED = ("Connection refused", "No such file or directory", "could not translate host name",
               "Name or service not known", "Network is unreachable", "No route to host")
_PG_TIMEOUT = ("timeout expired",)
_PG_BAD_PASSWORD = ("password authentication failed", "SCRAM authentication", "authentication failed for user")
_PG_NO_PASSWORD = ("no password supplied", "fe_sendauth")
_PG_NO_ROLE = ("role", "does not exist")
_PG_NO_DATABASE = ("database", "does not exist")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it or was being handled when it was raised."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _pg_target(settings: Settings | None) -> tuple[str, str, str]:
    """(host:port, user, dbname) of INSIGHTS_PG_DSN, for messages; libpq's defaults when unset."""
    parts: dict[str, str] = {}
    if settings is not None:
        try:
            parts = {k: str(v) for k, v in conninfo_to_dict(settings.pg.dsn).items()}
        except psycopg.Error:
            parts = {}
    host = parts.get("host") or os.environ.get("PGHOST") or "localhost"
    port = parts.get("port") or os.environ.get("PGPORT") or "5432"
    user = parts.get("user") or os.environ.get("PGUSER") or _os_user()
    dbname = parts.get("dbname") or user
    return f"{host}:{port}", user, dbname


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name at all (a container's uid): say so plainly
        return "(the OS user)"


def _libpq_reason(exc: psycopg.Error) -> str:
    """The part of libpq's message that says why, without the "connection to server at" prefix."""
    # libpq adds hint lines ("Is the server running on that host...?"): the first line says why
    lines = str(exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else type(exc).__name__
    marker = " failed: "
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.removeprefix("FATAL: ").strip()


def _primary(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary if diag is not None and diag.message_primary else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _pg_connection_failure(exc: psycopg.Error, settings: Settings | None) -> InsightsError | None:
    """A connection that never opened: psycopg reports no SQLSTATE, only libpq's text."""
    if exc.sqlstate is not None or not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc)
    if "connection failed" not in text and "connection to server" not in text:
        return None
    where, user, dbname = _pg_target(settings)
    reason = _libpq_reason(exc)
    if any(s in text for s in _PG_BAD_PASSWORD):
        return AuthenticationError(
            f"PostgreSQL at {where} rejected the password of role {user!r}: "
            "set INSIGHTS_PG_PASSWORD (or fix the user in INSIGHTS_PG_DSN)"
        )
    if any(s in text for s in _PG_NO_PASSWORD):
        return AuthenticationError(
            f"PostgreSQL at {where} asks for a password for role {user!r} and none is set: set INSIGHTS_PG_PASSWORD"
        )
    if all(s in text for s in _PG_NO_ROLE) and "role" in reason:
        return AuthenticationError(f"PostgreSQL at {where}: {reason}: fix the user in INSIGHTS_PG_DSN")
    if all(s in text for s in _PG_NO_DATABASE) and "database" in reason:
        return ServiceUnavailableError(
            f"PostgreSQL at {where}: {reason}: create it (then `insights db migrate`) or fix INSIGHTS_PG_DSN"
        )
    if any(s in text for s in _PG_REFUSED):
        return ServiceUnavailableError(
            f"PostgreSQL at {where} refuses connections ({reason}): start it "
            "(`insights stack up` for the local stack) or fix INSIGHTS_PG_DSN"
        )
    if any(s in text for s in _PG_TIMEOUT):
        return ServiceUnavailableError(
            f"PostgreSQL at {where} does not answer ({reason}): check that it runs and is reachable, "
            "or fix INSIGHTS_PG_DSN"
        )
    return ServiceUnavailableError(f"cannot connect to PostgreSQL at {where} as {user!r}: {reason}")


def _pg_statement_failure(
    exc: psycopg.Error, top: BaseException, settings: Settings | None
) -> InsightsError | None:
    """A statement refused with a SQLSTATE that has a known fix."""
    state = exc.sqlstate
    if state is None:
        return None
    where, user, dbname = _pg_target(settings)
    if state in _NOT_MIGRATED:
        return NotMigratedError(_primary(exc), database=dbname)
    if state == _INSUFFICIENT_PRIVILEGE:
        head = str(top) if isinstance(top, InsightsError) else _primary(exc)
        return PrivilegeError(
            f"{head} (connected as role {user!r}): run it as a role with that privilege, "
            "such as the owner of the database's tables (the role `insights db migrate` ran as): "
            "set INSIGHTS_PG_DSN to connect as it"
        )
    if state in _INVALID_PASSWORD:
        return AuthenticationError(
            f"PostgreSQL at {where} refused role {user!r}: {_primary(exc)}: fix INSIGHTS_PG_PASSWORD or INSIGHTS_PG_DSN"
        )
    if state == _INVALID_CATALOG:
        return ServiceUnavailableError(
            f"PostgreSQL at {where}: {_primary(exc)}: create it (then `insights db migrate`) or fix INSIGHTS_PG_DSN"
        )
    return None


def _kafka_failure(exc: KafkaException, settings: Settings | None) -> InsightsError | None:
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return None
    where = settings.kafka.bootstrap_servers if settings is not None else "the configured brokers"
    code = err.code()
    if code == KafkaError._INVALID_ARG:
        # a client refused at creation: a TLS file it cannot load (missing, not PEM)
        for prop, variable in _KAFKA_TLS_FILES.items():
            if f"{prop} failed" in err.str():
                value = settings.kafka.client_config().get(prop) if settings is not None else None
                return ConfigError(
                    f"{variable}{f' ({value})' if value else ''} cannot be loaded by the Kafka client ({err.str()}): "
                    "point it at a readable PEM file"
                )
    if code in _KAFKA_DOWN:
        # the same "transport failure" when client and listener disagree about TLS
        mismatch = kafka_listener.diagnose(settings.kafka) if settings is not None else None
        if mismatch:
            return AuthenticationError(f"Kafka at {where} refused this client ({err.str()}): {mismatch}")
        return ServiceUnavailableError(
            f"Kafka at {where} does not answer ({err.str()}): start it (`insights stack up` for the local "
            "stack) or fix INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"
        )
    if code in _KAFKA_AUTH:
        return AuthenticationError(
            f"Kafka at {where} refused the connection's credentials ({err.str()}): "
            "check INSIGHTS_KAFKA_SECURITY_PROTOCOL, INSIGHTS_KAFKA_SASL_* and INSIGHTS_KAFKA_SSL_*"
        )
    if code in _KAFKA_ACL:
        return PrivilegeError(f"Kafka refused: {err.str()}: grant the principal the ACL it needs")
    if code in _KAFKA_NO_TOPIC:
        return ServiceUnavailableError(f"Kafka: {err.str()}: create the topics with `insights topics create`")
    return None


def _registry_failure(exc: BaseException, settings: Settings | None) -> InsightsError | None:
    """The registry's HTTP client could not connect or timed out (httpx or requests errors)."""
    if not _is_http_connect_error(exc):
        return None
    url = _request_origin(exc) or (settings.kafka.schema_registry_url if settings is not None else None)
    return ServiceUnavailableError(
        f"schema registry at {url or '(no URL)'} does not answer ({exc}): start it, or fix "
        "INSIGHTS_SCHEMA_REGISTRY_URL / --url (unset the setting to use single-object encoding)"
    )


def _request_origin(exc: BaseException) -> str | None:
    """scheme://host:port the HTTP client was calling (``--url`` may differ from the setting)."""
    for link in chain(exc):
        try:
            url = link.request.url  # type: ignore[attr-defined]
        except Exception:  # no request attached (httpx raises RuntimeError), or no such attribute
            continue
        return f"{url.scheme}://{url.netloc.decode() if isinstance(url.netloc, bytes) else url.netloc}"
    return None


def _is_http_connect_error(exc: BaseException) -> bool:
    """A connect or timeout error of the HTTP client under confluent-kafka's registry client."""
    module = type(exc).__module__ or ""
    if not module.startswith(("httpx", "httpcore", "requests", "urllib3")):
        return False
    name = type(exc).__name__
    return isinstance(exc, OSError) or "Connect" in name or "Timeout" in name


def operator_error(exc: BaseException, settings: Settings | None = None) -> InsightsError | None:
    """The typed, one-line form of ``exc``; None when it is not a failure we can explain (a bug)."""
    if isinstance(exc, (NotMigratedError, PrivilegeError, AuthenticationError, ServiceUnavailableError)):
        return exc  # raised by a layer that knew the situation: its message names the fix
    links = list(chain(exc))
    for link in links:
        if isinstance(link, psycopg.Error):
            found = _pg_connection_failure(link, settings) or _pg_statement_failure(link, exc, settings)
            if found is not None:
                return found
        elif isinstance(link, KafkaException):
            found = _kafka_failure(link, settings)
            if found is not None:
                return found
    for link in links:
        found = _registry_failure(link, settings)
        if found is not None:
            return found
    if isinstance(exc, InsightsError):
        return exc
    if isinstance(exc, psycopg.Error):
        # a PostgreSQL refusal we have no specific fix for is still a fact about the
        # server, not a bug of ours: one line with its SQLSTATE to look up
        state = f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""
        return InsightsError(f"PostgreSQL: {_primary(exc)}{state}")
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        return InsightsError(f"Kafka: {text}")
    return None


def log_traceback(exc: BaseException) -> Path:
    """Write ``exc``'s full traceback to a new private file in the temp directory; return its path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"{TRACEBACK_PREFIX}{stamp}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(traceback.format_exception(exc)))
    return Path(name)
