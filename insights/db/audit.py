"""The pgaudit log, read back: ``AUDIT:`` lines of the server log as entries.

The stack's server writes them to ``<stack dir>/pg/server.log`` with the prefix
``'%m [%p] %q%u@%d '`` (insights/stack/postgres.py). pgaudit's payload is CSV:
``AUDIT_TYPE,STATEMENT_ID,SUBSTATEMENT_ID,CLASS,COMMAND,OBJECT_TYPE,OBJECT_NAME,STATEMENT,PARAMETER``;
a statement spanning lines continues on the following lines without a prefix (tab-indented).
Parsing is pure (:func:`parse`); only :func:`read` touches the file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insights.db.errors import DatabaseError

# 2026-12-01 06:58:00.123 UTC [1234] insights@insights LOG:  AUDIT: SESSION,1,1,DDL,...
_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<tz>\S+) \[(?P<pid>\d+)\] "
    r"(?:(?P<user>[^@\s]*)@(?P<db>\S*) )?(?P<level>[A-Z]+):\s+(?P<msg>.*)$"
)


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    pid: int
    user: str
    database: str
    audit_type: str  # SESSION or OBJECT
    audit_class: str  # DDL, ROLE, WRITE, READ, FUNCTION, MISC
    command: str  # CREATE TABLE, GRANT, INSERT...
    object_type: str
    object_name: str
    statement: str

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


def _when(ts: str, tz: str) -> datetime:
    at = datetime.fromisoformat(ts)
    # the stack's servers log in UTC (initdb's default log_timezone here); others: assume UTC
    return at.replace(tzinfo=UTC) if tz in {"UTC", "GMT", "Z"} or at.tzinfo is None else at


def _entry(head: re.Match[str], payload: str) -> AuditEntry | None:
    try:
        fields = next(csv.reader(io.StringIO(payload)))
    except (csv.Error, StopIteration):
        return None
    if len(fields) < 8:
        return None
    return AuditEntry(
        at=_when(head["ts"], head["tz"]), pid=int(head["pid"]), user=head["user"] or "",
        database=head["db"] or "", audit_type=fields[0], audit_class=fields[3], command=fields[4],
        object_type=fields[5], object_name=fields[6], statement=fields[7],
    )


def parse(lines: Iterable[str], since: datetime | None = None) -> Iterator[AuditEntry]:
    """Audit entries of server-log lines (continuation lines joined), at or after ``since``."""
    head: re.Match[str] | None = None
    payload: list[str] = []

    def flush() -> AuditEntry | None:
        if head is None:
            return None
        entry = _entry(head, "\n".join(payload))
        if entry is None or (since is not None and entry.at < since):
            return None
        return entry

    for raw in lines:
        line = raw.rstrip("\n")
        match = _LINE.match(line)
        if match is None:
            if head is not None and line.startswith(("\t", " ")):
                payload.append(line[1:] if line.startswith("\t") else line)
            continue
        if (entry := flush()) is not None:
            yield entry
        head, payload = None, []
        message = match["msg"]
        if match["level"] == "LOG" and message.startswith("AUDIT: "):
            head, payload = match, [message[len("AUDIT: "):]]
    if (entry := flush()) is not None:
        yield entry


def read(log: Path, since: datetime | None = None) -> list[AuditEntry]:
    try:
        with log.open(encoding="utf-8", errors="replace") as fh:
            return list(parse(fh, since))
    except FileNotFoundError:
        raise DatabaseError(
            f"no server log at {log}: pass --log, or start the stack (`insights stack up`)"
        ) from None
    except PermissionError:
        raise DatabaseError(f"cannot read {log}: run as its owner (the PostgreSQL service user) or root") from None
