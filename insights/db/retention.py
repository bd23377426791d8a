"""The partition retention as a recorded run: archive (when asked), drop, and say so in ``retention_runs``.

``insights.db.partitions.prune`` chooses and drops; this module wraps one call of it as a
*run* that every runner shares (``insights db partitions prune``, the prune step of ``insights
db maintain``): a ``retention_runs`` row (ddl/0025) is inserted as ``running`` before the
first partition goes, in its own transaction, and closed with the outcome and the counts at
the end, failed runs included. ``insights status`` reads the last run from there, beside the
pg_cron jobs (insights/ops/health.py), because a retention that archives runs outside the
server and pg_cron's ``cron.job_run_details`` never sees it.

With an archive directory each partition's rows are exported and fsynced
(``streams.archive.export_partition``) before its DROP; a failed export stops the run there,
so no partition is ever dropped un-archived.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from insights.db import partitions
from streams.pg.partitions import one_line

#: ``(entry)`` after each partition's rows reached the archive: what the CLI prints
OnArchived = Callable[[Any], None]


@dataclass
class RetentionRun:
    run_id: int | None  # None: the database predates ddl/0025 (nothing recorded)
    runner: str
    archive_dir: Path | None
    due: int = 0
    dropped: list[partitions.Pruned] = field(default_factory=list)
    rows_archived: int = 0


def _recording(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('public.retention_runs') IS NOT NULL").fetchone()
    return bool(row and row[0])


def start(conn: psycopg.Connection[Any], runner: str, archive_dir: Path | None, due: int) -> int | None:
    """Insert the run as ``running`` and commit it, so a run killed half-way stays visible."""
    if not _recording(conn):
        return None
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO retention_runs (runner, archive_dir, partitions_due) VALUES (%s, %s, %s) RETURNING id",
            (runner, None if archive_dir is None else str(archive_dir), due),
        ).fetchone()
    return None if row is None else int(row[0])


def finish(conn: psycopg.Connection[Any], run: RetentionRun, error: BaseException | None = None) -> None:
    if run.run_id is None:
        return
    message = None if error is None else (one_line(error) if isinstance(error, psycopg.Error) else str(error))
    with conn.transaction():
        conn.execute(
            "UPDATE retention_runs SET ended_at = clock_timestamp(), outcome = %s, partitions_dropped = %s,"
            " rows_archived = %s, message = %s WHERE id = %s",
            ("failed" if error is not None else "succeeded", len(run.dropped), run.rows_archived,
             None if message is None else message.splitlines()[0][:1000], run.run_id),
        )


def run(
    conn: psycopg.Connection[Any],
    *,
    runner: str,
    archive_dir: Path | None,
    now: datetime | None = None,
    only: Collection[str] | None = None,
    on_progress: partitions.StepProgress | None = None,
    on_archived: OnArchived | None = None,
) -> RetentionRun:
    """Prune what is due at ``now`` (only ``only``, when given: what an operator confirmed),
    archiving each partition first when ``archive_dir`` is set; recorded from start to end.
    A run with nothing due is recorded too: it shows the schedule is alive."""
    at = now or datetime.now(UTC)
    due = partitions.prunable(conn, now=at)
    if only is not None:
        due = [p for p in due if p.partition in only]
    outcome = RetentionRun(start(conn, runner, archive_dir, len(due)), runner, archive_dir, len(due))
    def progress(done: int, total: int, name: str) -> None:
        outcome.dropped.append(next(p for p in due if p.partition == name))
        if on_progress is not None:
            on_progress(done, total, name)

    before_drop = None
    if archive_dir is not None:
        from streams.archive import ArchiveError, export_partition  # lazy: fastavro only when archiving

        def before_drop(c: psycopg.Connection[Any], item: partitions.Pruned, schema: str, name: str) -> None:
            try:
                entry = export_partition(c, archive_dir, table=item.parent.split(".")[-1], schema=schema,
                                         partition=name, lower=item.lower, upper=item.upper)
            except OSError as exc:  # not writable, full, not a directory: nothing was dropped
                raise ArchiveError(
                    f"cannot write the archive {archive_dir} ({exc.strerror or exc}): {name} and the partitions "
                    "after it were not dropped; fix the directory (INSIGHTS_PG_RETENTION_ARCHIVE_DIR or "
                    "--archive) and run `insights db partitions prune` again"
                ) from exc
            outcome.rows_archived += entry.count
            if on_archived is not None:
                on_archived(entry)

    try:
        partitions.prune(conn, now=at, only={p.partition for p in due}, on_progress=progress,
                         before_drop=before_drop)
    except BaseException as exc:
        try:
            finish(conn, outcome, exc)
        except psycopg.Error:
            pass  # the connection the failure broke: the row stays 'running', status says so
        raise
    finish(conn, outcome)
    return outcome


@dataclass(frozen=True)
class LastRun:
    runner: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    archive_dir: str | None
    due: int
    dropped: int
    rows_archived: int
    message: str | None
    last_success: datetime | None


def last_run(conn: psycopg.Connection[Any]) -> LastRun | None:
    """The newest recorded run and when a run last succeeded; None when none is recorded
    (or the database predates ddl/0025)."""
    if not _recording(conn):
        return None
    row = conn.execute(
        "SELECT runner, started_at, ended_at, outcome, archive_dir, partitions_due, partitions_dropped,"
        " rows_archived, message,"
        " (SELECT max(started_at) FROM retention_runs WHERE outcome = 'succeeded')"
        " FROM retention_runs ORDER BY started_at DESC, id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else LastRun(*row)
