"""The local stack's certificate authority and certificates (openssl CLI), and its passwords.

``<stack dir>/tls/``: ``ca.crt``/``ca.key`` (one CA per stack, 10 years), and per service a
key and a certificate signed by it with SANs ``127.0.0.1`` and ``localhost`` (825 days, the
longest lifetime clients accept for a leaf). Keys are 0600. Rotation: delete the leaf files
and restart the service (docs/security.md); the CA stays, so clients need no change.

``<stack dir>/pg/passfile``: a libpq password file (0600) with generated passwords, handed
to clients through the DSN's ``passfile`` parameter: never printed, never in a DSN.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from insights.stack import proc

CA_DAYS = 3650
LEAF_DAYS = 825
SANS = ("IP:127.0.0.1", "DNS:localhost")


def _openssl(*args: str, what: str) -> None:
    proc.run(["openssl", *args], what=what, timeout=120)


def ensure_ca(tls_dir: Path) -> Path:
    """The stack's CA certificate (created once)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    key, crt = tls_dir / "ca.key", tls_dir / "ca.crt"
    if not crt.exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(crt), "-days", str(CA_DAYS),
                 "-subj", "/CN=insights local stack CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 what="openssl: create the stack CA")
        key.chmod(0o600)
    return crt


def stack_ca_dir(stack_dir: Path) -> Path:
    """Where the stack's CA lives: beside the seed PostgreSQL's certificates, where the
    PostgreSQL TLS of ``INSIGHTS_STACK_PG_TLS`` creates it, so Kafka and PostgreSQL of one
    stack are trusted through one ``ca.crt``."""
    return stack_dir / "pg" / "tls"


def issue(
    tls_dir: Path, name: str, sans: tuple[str, ...] = SANS, cn: str = "localhost", *, ca_dir: Path | None = None
) -> tuple[Path, Path]:
    """A key and a certificate for ``name`` signed by the stack CA; (cert, key).

    ``ca_dir``: where the CA is, when the leaf belongs elsewhere (Kafka's keys stay in
    Kafka's directory); default ``tls_dir``.
    """
    ca_dir = ca_dir or tls_dir
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = ensure_ca(ca_dir)
    key, csr, crt = tls_dir / f"{name}.key", tls_dir / f"{name}.csr", tls_dir / f"{name}.crt"
    ext = tls_dir / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        encoding="utf-8",
    )
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}", what=f"openssl: key for {name}")
    key.chmod(0o600)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_dir / "ca.key"),
             "-CAcreateserial", "-out", str(crt), "-days", str(LEAF_DAYS), "-extfile", str(ext),
             what=f"openssl: sign the certificate of {name}")
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    return crt, key


def new_password() -> str:
    return secrets.token_urlsafe(24)


def write_passfile(path: Path, port: int, users: dict[str, str]) -> None:
    """A libpq passfile (0600) for 127.0.0.1 and localhost on ``port``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for user, password in users.items():
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            for host in ("127.0.0.1", "localhost"):
                fh.write(f"{host}:{port}:*:{user}:{escaped}\n")
    path.chmod(0o600)


def read_passfile(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.replace("\\:", "\0").split(":")
        if len(parts) == 5:
            users[parts[3]] = parts[4].replace("\0", ":").replace("\\\\", "\\")
    return users
