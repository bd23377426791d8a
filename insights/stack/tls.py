"""The local stack's certificate authority and certificates (openssl CLI), and its passwords.

``<stack dir>/tls/``: ``ca.crt``/``ca.key`` (one CA per stack, 10 years), and per service a
key and a certificate signed by it with SANs ``127.0.0.1`` and ``localhost`` (825 days, the
longest lifetime clients accept for a leaf). Keys are 0600. Rotation: delete the leaf files
and restart the service (docs/security.md); the CA stays, so clients need no change.

``<stack dir>/pgpass``: a libpq password file (0600) with generated passwords, handed to
clients through the DSN's ``passfile`` parameter: never printed, never in a DSN. Its lines
are for any port (``*``) on loopback: every server of one stack (the primary, its replicas,
a restored copy, PgBouncer) has the same roles, being copies of one cluster.

Both live at the top of the stack directory, not under ``pg/``: a failover retires the
original primary by renaming its directory, and the stack's trust and passwords must stay
where every DSN handed out says they are. A stack made before keeps ``pg/tls`` and
``pg/passfile`` (:func:`stack_ca_dir`, :func:`stack_passfile`); a failover of such a stack
takes them away with ``pg/``: make a new one.
"""

from __future__ import annotations

from pathlib import Path

from insights.db import passfile
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
    """Where the stack's CA lives (and PostgreSQL's certificate): ``<stack dir>/tls``, so that
    every service of one stack is trusted through one ``ca.crt``; ``pg/tls`` in a stack made
    before it moved there."""
    legacy = stack_dir / "pg" / "tls"
    if (legacy / "ca.crt").exists() and not (stack_dir / "tls" / "ca.crt").exists():
        return legacy
    return stack_dir / "tls"


def stack_passfile(stack_dir: Path) -> Path:
    """The stack's libpq password file: ``<stack dir>/pgpass`` (``pg/passfile`` in a stack
    made before it moved there)."""
    legacy = stack_dir / "pg" / "passfile"
    if legacy.exists() and not (stack_dir / "pgpass").exists():
        return legacy
    return stack_dir / "pgpass"


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
    return passfile.new_password()


#: the port of the stack passfile's lines: any (see the module's docstring)
ANY_PORT = "*"


def write_passfile(path: Path, users: dict[str, str]) -> None:
    """Set ``users``' passwords for 127.0.0.1 and localhost, any port, in the libpq passfile
    ``path`` (0600), keeping its other lines (the service roles' of `db passwords`)."""
    entries = passfile.read(path)
    for user, password in users.items():
        entries = passfile.with_password(entries, passfile.LOOPBACK, ANY_PORT, user, password)
    passfile.write(path, entries)


def read_passfile(path: Path) -> dict[str, str]:
    """user -> password, the first line of each user winning (as libpq's lookup does)."""
    users: dict[str, str] = {}
    for entry in passfile.read(path):
        users.setdefault(entry.user, entry.password)
    return users
