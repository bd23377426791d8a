"""libpq password files: read them, and set one role's password in one, keeping every other line.

Format (https://www.postgresql.org/docs/15/libpq-pgpass.html): one
``hostname:port:database:username:password`` per line, ``:`` and ``\\`` inside a field
escaped with ``\\``, ``*`` matching anything, the first matching line winning, ``#``
lines ignored. libpq ignores a file that group or others can read, so it is written whole
to a 0600 temporary file beside it and renamed over it: a reader never sees half a file
and the mode is never wider than 0600, even for an instant.

Used by ``insights db passwords --generate`` (the service roles' generated passwords) and
by the local stack (its superuser's). The passwords are never printed; a caller reports
the path only.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: what the local stack and `db passwords --generate` write a loopback server under: libpq
#: matches the host as written in the DSN, and users write either
LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Entry:
    host: str
    port: str
    database: str
    user: str
    password: str

    def matches(self, host: str, port: str, database: str, user: str) -> bool:
        return all(mine in ("*", theirs) for mine, theirs in
                   ((self.host, host), (self.port, port), (self.database, database), (self.user, user)))


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def format_line(entry: Entry) -> str:
    return ":".join(_escape(f) for f in (entry.host, entry.port, entry.database, entry.user, entry.password))


def parse_line(line: str) -> Entry | None:
    """One line's entry; None for a comment, a blank line or a line with too few fields
    (libpq skips those too)."""
    if not line.strip() or line.startswith("#"):
        return None
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line.rstrip("\r\n"))
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":" and len(fields) < 4:  # the password is the rest of the line
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    if len(fields) != 5:
        return None
    return Entry(*fields)


def read(path: Path) -> list[Entry]:
    """The file's entries in order; none when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [e for e in map(parse_line, text.splitlines()) if e is not None]


def lookup(entries: Iterable[Entry], host: str, port: str, database: str, user: str) -> str | None:
    """The password libpq would use: the first matching entry's."""
    return next((e.password for e in entries if e.matches(host, port, database, user)), None)


def with_password(entries: Sequence[Entry], hosts: Sequence[str], port: str, user: str, password: str) -> list[Entry]:
    """``entries`` with ``user``'s password on ``hosts``:``port`` (any database) set: the
    exact lines for them replaced in place, missing ones put first (so that no wildcard
    line above them wins), every other line kept."""
    wanted = {(h, port, "*", user) for h in hosts}
    out: list[Entry] = []
    seen: set[tuple[str, str, str, str]] = set()
    for e in entries:
        key = (e.host, e.port, e.database, e.user)
        if key in wanted:
            if key not in seen:
                out.append(Entry(*key, password))
                seen.add(key)
            continue
        out.append(e)
    missing = [Entry(h, port, "*", user, password) for h in hosts if (h, port, "*", user) not in seen]
    return missing + out


def write(path: Path, entries: Iterable[Entry]) -> None:
    """Replace ``path`` with ``entries`` (0600, atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(format_line(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_password() -> str:
    """32 URL-safe characters (192 bits) from the OS's CSPRNG."""
    return secrets.token_urlsafe(24)
