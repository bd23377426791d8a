"""Login passwords for the service roles, taken from settings, never from code.

The migration creates ``insights_ingest`` and ``insights_cdc`` without a password. This sets
one from ``INSIGHTS_PG_INGEST_PASSWORD`` / ``INSIGHTS_PG_CDC_PASSWORD`` (``SecretStr``). The
password is hashed on the client (libpq's ``PQencryptPasswordConn``, SCRAM-SHA-256) and only
the verifier is sent, so the clear text never reaches the server's statement log.

:func:`generate_into` is for servers that authenticate every TCP login (the local stack
made with TLS, and any production server): each service role gets a random password,
kept in a libpq password file (:mod:`.passfile`) that the services' DSNs name with
``passfile=``, so no password is ever typed, printed or put in an environment variable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr

from insights.db import passfile
from insights.db.errors import DatabaseError

SERVICE_ROLES = ("insights_ingest", "insights_cdc")


def _set(conn: psycopg.Connection, role: str, password: str) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode("utf-8"), role.encode("utf-8"), b"scram-sha-256")
    try:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode())))
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot set the password of {role}: {str(exc).strip().splitlines()[0]}") from exc


def set_passwords(conn: psycopg.Connection, passwords: Mapping[str, SecretStr | None]) -> list[str]:
    """Set the given roles' passwords; roles mapped to None are left alone. Returns the roles set."""
    done: list[str] = []
    for role, secret in passwords.items():
        if role not in SERVICE_ROLES:
            raise DatabaseError(f"{role} is not a service role ({', '.join(SERVICE_ROLES)})")
        if secret is None:
            continue
        _set(conn, role, secret.get_secret_value())
        done.append(role)
    return done


@dataclass(frozen=True)
class Stored:
    role: str
    #: True: a new password was made; False: the one the passfile held was set again
    generated: bool


def generate_into(
    conn: psycopg.Connection, path: Path, hosts: Sequence[str], port: str, *,
    roles: Sequence[str] = SERVICE_ROLES, rotate: bool = False,
) -> list[Stored]:
    """Give each of ``roles`` the password the passfile holds for it on ``hosts``:``port``,
    or a new random one when it holds none (always with ``rotate``), and write them there.

    Re-running is harmless: without ``rotate`` the passwords stay what they are and are set
    again (which also repairs a server restored from an older backup). The ALTER ROLEs and
    the file agree or neither changes: the roles are altered in a transaction that commits
    only once the file is in place (if the commit itself fails, the file holds the new
    passwords and the next run sets them).
    """
    entries = passfile.read(path)
    stored: list[Stored] = []
    with conn.transaction():
        for role in roles:
            if role not in SERVICE_ROLES:
                raise DatabaseError(f"{role} is not a service role ({', '.join(SERVICE_ROLES)})")
            known = None if rotate else passfile.lookup(entries, hosts[0], port, "*", role)
            password = known or passfile.new_password()
            _set(conn, role, password)
            entries = passfile.with_password(entries, hosts, port, role, password)
            stored.append(Stored(role, known is None))
        try:
            passfile.write(path, entries)
        except OSError as exc:
            raise DatabaseError(f"cannot write the password file {path}: {exc.strerror or exc}; "
                                "no password was changed") from exc
    return stored
