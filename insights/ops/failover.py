"""``insights stack failover``: promote a replica, make the old primary gone.

The steps, in the order that keeps a split brain impossible:

1. **Fence the old primary**: stop it (``fast``: when it still runs, its walsenders first
   send the WAL they have to connected replicas, so a planned switchover loses nothing;
   ``immediate`` if that fails). Its directory is renamed ``<name>.retired-<time>``, so
   no ``stack up`` can start it again beside the new primary. It is kept, not deleted:
   it may hold the last transactions the replicas never received (``pg_waldump``), and
   ``pg_rewind`` could turn it into a replica (docs/runbooks.md#primary-lost).
2. **Promote** the chosen replica (by default the one with the most WAL received):
   ``pg_promote(wait => true)``. It starts timeline N+1 and accepts writes.
3. **Re-point** the other replicas: a physical slot for each on the new primary (slots
   are never copied to standbys), then ``primary_conninfo`` (reloaded; the walreceiver
   follows the new timeline because ``recovery_target_timeline = latest``). A replica
   that had replayed *past* the promotion point cannot follow (its history diverged) and
   is reported for a rebuild.
4. pgBackRest, pg_cron and the stack's PgBouncer follow the new primary (stanza path, jobs'
   host and port, PgBouncer's target, reloaded).

Clients with a multi-host DSN (``target_session_attrs=read-write``) find the new primary
by themselves on their next connection. Logical slots are not on the promoted node
before PostgreSQL 17: the CDC reader stops with ``SlotMissingError`` until ``insights cdc
resync`` runs (docs/runbooks.md#primary-lost).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from core.errors import StackError
from core.settings import Settings
from insights.stack.postgres import LocalPostgres
from insights.stack.replicas import Cluster, LocalReplica, NodeSpec, ensure_physical_slot


@dataclass
class FailoverPlan:
    old_primary: NodeSpec
    old_primary_running: bool
    target: LocalReplica
    target_lsn: int | None
    others: list[tuple[LocalReplica, int | None]]

    def describe(self) -> list[str]:
        state = "running: it will be stopped" if self.old_primary_running else "not running"
        lines = [
            f"old primary {self.old_primary.name} (port {self.old_primary.port}) is {state}, then retired "
            f"(its directory renamed; it will not start again)",
            f"promote {self.target.spec.name} (port {self.target.port}), WAL up to {_lsn(self.target_lsn)}",
        ]
        for replica, lsn in self.others:
            lines.append(f"re-point {replica.spec.name} (port {replica.port}, WAL up to {_lsn(lsn)}) to the new primary")
        lines.append("the CDC slot does not survive (PostgreSQL 15): run `insights cdc resync` afterwards")
        return lines


@dataclass
class FailoverResult:
    new_primary: NodeSpec
    promoted_at_lsn: int | None
    retired_to: str | None
    steps: list[str] = field(default_factory=list)
    write_dsn: str = ""
    read_dsn: str | None = None
    cdc_slot_missing: bool = False


def _lsn(value: int | None) -> str:
    return "-" if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def plan(settings: Settings, target_name: str | None = None) -> FailoverPlan:
    cluster = Cluster(settings)
    replicas = cluster.replicas()
    if not replicas:
        raise StackError("no replica to promote: start some with `insights stack up --replicas 2`")
    positions: list[tuple[LocalReplica, int | None]] = []
    for replica in replicas:
        in_recovery = replica.in_recovery()
        positions.append((replica, replica.receive_lsn() if in_recovery else None))
    candidates = [(r, lsn) for r, lsn in positions if lsn is not None]
    if target_name is not None:
        chosen = [(r, lsn) for r, lsn in positions if r.spec.name == target_name or str(r.port) == target_name]
        if not chosen:
            raise StackError(f"no replica named {target_name!r}: one of {', '.join(r.spec.name for r in replicas)}")
        if chosen[0][1] is None:
            raise StackError(f"{target_name} is not a running standby: start it with `insights stack up`")
        target, lsn = chosen[0]
    elif candidates:
        # the most WAL received: promoting it loses the fewest transactions
        target, lsn = max(candidates, key=lambda item: item[1] or 0)
    else:
        raise StackError("no replica answers as a standby: start them with `insights stack up`")
    primary = cluster.primary
    return FailoverPlan(
        old_primary=cluster.topology.primary,
        old_primary_running=primary.running_pid() is not None,
        target=target,
        target_lsn=lsn,
        others=[(r, p) for r, p in positions if r is not target],
    )


def failover(settings: Settings, chosen: FailoverPlan, progress: Callable[[str], None] = lambda _m: None) -> FailoverResult:
    cluster = Cluster(settings)
    topology = cluster.topology
    old = cluster.primary
    steps: list[str] = []

    # 1. fence: the old primary must not accept a write once the replica is promoted
    if old.running_pid():
        progress(f"stopping the old primary {old.name}")
        try:
            old.down("fast")
            steps.append(f"stopped the old primary {old.name} (fast: connected replicas got its WAL first)")
        except StackError:
            old.down("immediate")
            steps.append(f"stopped the old primary {old.name} (immediate)")
    stamp = time.strftime("%Y%m%d%H%M%S")
    retired_to: str | None = None
    if old.paths.root.exists():
        retired = old.paths.root.with_name(f"{old.paths.root.name}.retired-{stamp}")
        os.rename(old.paths.root, retired)
        retired_to = str(retired)
        steps.append(f"retired {old.name}: moved to {retired}")

    # 2. promote
    target = chosen.target
    progress(f"promoting {target.spec.name}")
    before = target.receive_lsn()
    with psycopg.connect(target.admin_dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_promote(true, 60)").fetchone()
        if not row or not row[0]:
            raise StackError(f"{target.spec.name} did not finish promotion within 60 s; see {target.paths.log}")
        # the WAL file name starts with the timeline (the checkpoint's may still be the old one)
        timeline = conn.execute("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").fetchone()
    steps.append(f"promoted {target.spec.name} on port {target.port} (timeline {timeline[0] if timeline else '?'})")
    new_primary = LocalPostgres(settings, root=target.paths.root, port=target.port)

    topology.retired.append({"name": old.name, "port": str(old.port), "moved_to": retired_to or "", "at": stamp})
    topology.primary = target.spec
    topology.replicas = [r.spec for r, _ in chosen.others]
    topology.save(settings)

    # 3. the other replicas follow the new primary, unless they went past the fork
    for replica, lsn in chosen.others:
        replica.primary = new_primary
        if lsn is not None and before is not None and lsn > before:
            steps.append(
                f"{replica.spec.name} had WAL past the promotion point ({_lsn(lsn)} > {_lsn(before)}): it cannot "
                f"follow the new timeline; rebuild it (docs/runbooks.md#primary-lost)"
            )
            continue
        ensure_physical_slot(new_primary, replica.spec.slot)
        steps.append(f"{replica.spec.name}: " + replica.repoint(new_primary))

    # 4. what follows the primary
    from insights.stack.pgbackrest import configure_local_archiving, local_config

    if local_config(settings).exists():
        steps.append("backups: " + configure_local_archiving(settings, new_primary))
    from insights.stack.pgbouncer import LocalPgBouncer, PgBouncerTarget

    bouncer = LocalPgBouncer(settings, target=PgBouncerTarget("127.0.0.1", target.port))
    if bouncer.running_pid():  # the stack's PgBouncer (`stack up --with-pgbouncer`)
        steps.append("pgbouncer: " + bouncer.retarget())
    with psycopg.connect(new_primary.dsn, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
            from insights.ops.schedule import repoint_jobs

            moved = repoint_jobs(conn)
            steps.append(f"pg_cron: {moved} job(s) now connect to {target.spec.name}")
        missing = _cdc_slot_missing(conn, settings)
    if missing:
        steps.append(
            f"CDC: publication {settings.cdc.publication!r} exists but slot {settings.cdc.slot_name!r} does not "
            "(logical slots are not copied to standbys before PostgreSQL 17): run `insights cdc resync`"
        )
    return FailoverResult(
        new_primary=target.spec,
        promoted_at_lsn=before,
        retired_to=retired_to,
        steps=steps,
        write_dsn=Cluster(settings).write_dsn(),
        read_dsn=Cluster(settings).read_dsn(),
        cdc_slot_missing=missing,
    )


def _cdc_slot_missing(conn: psycopg.Connection, settings: Settings) -> bool:
    published = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.cdc.publication,)).fetchone()
    slot = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (settings.cdc.slot_name,)).fetchone()
    return published is not None and slot is None


def cut_replication(replica: LocalReplica) -> None:
    """Test and rehearsal aid: the replica stops receiving WAL (as when the network to the
    primary breaks). Commits the primary makes from now on exist only there."""
    with psycopg.connect(replica.admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 15
        while conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone() != (0,):
            if time.monotonic() > deadline:
                raise StackError(f"{replica.spec.name} still receives WAL 15 s after its primary_conninfo was cleared")
            time.sleep(0.1)


__all__ = ["FailoverPlan", "FailoverResult", "cut_replication", "failover", "plan"]
