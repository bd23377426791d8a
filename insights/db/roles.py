"""Login passwords for the service roles, taken from settings, never from code.

The migration creates ``insights_ingest`` and ``insights_cdc`` without a password. This sets
one from ``INSIGHTS_PG_INGEST_PASSWORD`` / ``INSIGHTS_PG_CDC_PASSWORD`` (``SecretStr``). The
password is hashed on the client (libpq's ``PQencryptPasswordConn``, SCRAM-SHA-256) and only
the verifier is sent, so the clear text never reaches the server's statement log.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql
from pydantic import SecretStr

from insights.db.errors import DatabaseError

SERVICE_ROLES = ("insights_ingest", "insights_cdc")


def set_passwords(conn: psycopg.Connection, passwords: Mapping[str, SecretStr | None]) -> list[str]:
    """Set the given roles' passwords; roles mapped to None are left alone. Returns the roles set."""
    done: list[str] = []
    for role, secret in passwords.items():
        if role not in SERVICE_ROLES:
            raise DatabaseError(f"{role} is not a service role ({', '.join(SERVICE_ROLES)})")
        if secret is None:
            continue
        verifier = conn.pgconn.encrypt_password(
            secret.get_secret_value().encode("utf-8"), role.encode("utf-8"), b"scram-sha-256"
        ).decode("ascii")
        try:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
            )
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot set the password of {role}: {str(exc).strip().splitlines()[0]}") from exc
        done.append(role)
    return done
