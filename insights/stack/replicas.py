"""Streaming replicas of the local PostgreSQL, and which node is the primary.

``insights stack up --replicas N`` clones the primary with ``pg_basebackup -R`` (the
standby's ``primary_conninfo`` and ``standby.signal`` written by the tool itself, not a
hand-written ``recovery.conf``, which PostgreSQL 12 removed), one physical replication slot
per replica (``-C -S``: the primary keeps the WAL a replica has not received yet, within
``max_slot_wal_keep_size``, so a replica that was down catches up by streaming instead of
needing a new clone), hot standby, its own loopback port and directory beside the primary's.

On a TLS stack (``INSIGHTS_STACK_PG_TLS``) a replica reaches its primary as every client does:
``sslmode=verify-full`` against the stack CA, the superuser's password from a passfile. The
walreceiver runs as the server's OS user, and libpq ignores a passfile that others can read,
so each replica keeps its own copy (``walreceiver.pgpass`` beside its data directory, 0600,
owned by that user), refreshed at every start; ``primary_conninfo`` names it.

The roles live in ``<stack dir>/pg-topology.json``: which node is the primary, which are
replicas, which were retired by a failover. Without the file the stack is the original
single primary (``<stack dir>/pg`` on ``INSIGHTS_STACK_PG_PORT``).
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.errors import StackError
from core.settings import Settings
from insights.db import passfile
from insights.stack import proc, tls
from insights.stack.postgres import DATABASE, SUPERUSER, LocalPostgres, bin_dir, uri_query

TOPOLOGY_FILE = "pg-topology.json"


@dataclass
class NodeSpec:
    name: str  # directory under the stack dir: "pg" (the original primary), "replica-1", ...
    port: int

    @property
    def slot(self) -> str:
        """The physical slot the primary keeps for this node when it is a replica."""
        return re.sub(r"[^a-z0-9_]", "_", self.name.lower())


@dataclass
class Topology:
    primary: NodeSpec
    replicas: list[NodeSpec] = field(default_factory=list)
    retired: list[dict[str, str]] = field(default_factory=list)

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.stack.dir / TOPOLOGY_FILE

    @classmethod
    def load(cls, settings: Settings) -> Topology:
        path = cls.path(settings)
        if not path.exists():
            return cls(NodeSpec("pg", settings.stack.pg_port))
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                NodeSpec(**raw["primary"]),
                [NodeSpec(**r) for r in raw.get("replicas", [])],
                list(raw.get("retired", [])),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackError(f"cannot read {path}: {exc}; fix or remove it (it records which node is primary)") from None

    def save(self, settings: Settings) -> None:
        path = self.path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash never leaves half a topology

    def nodes(self) -> list[NodeSpec]:
        return [self.primary, *self.replicas]


class LocalReplica(LocalPostgres):
    """A hot standby streaming from ``primary`` through its own physical slot."""

    def __init__(self, settings: Settings, spec: NodeSpec, primary: LocalPostgres) -> None:
        super().__init__(settings, root=settings.stack.dir / spec.name, port=spec.port)
        self.spec = spec
        self.primary = primary

    @property
    def walreceiver_passfile(self) -> Path:
        """The superuser's password for this node's walreceiver (and its pg_basebackup)."""
        return self.paths.root / "walreceiver.pgpass"

    def _write_walreceiver_passfile(self) -> None:
        """Copy the superuser's line from the stack's passfile, 0600, owned by the user the
        server runs as (libpq skips a passfile others can read; the walreceiver cannot read
        one only root can)."""
        password = tls.read_passfile(self.passfile).get(SUPERUSER)
        if password is None:
            raise StackError(f"no password for {SUPERUSER} in {self.passfile}: the TLS stack's passfile is damaged")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        target = self.walreceiver_passfile
        passfile.write(target, passfile.with_password([], passfile.LOOPBACK, tls.ANY_PORT, SUPERUSER, password))
        user = self._user()
        if user:
            os.chown(target, user.pw_uid, user.pw_gid)

    def primary_conninfo(self, primary: LocalPostgres) -> str:
        """How this node's walreceiver (and pg_basebackup) reaches ``primary``."""
        parts = {"host": "127.0.0.1", "port": str(primary.port), "user": SUPERUSER,
                 "application_name": self.spec.name}
        if primary.tls:
            parts.update(primary.tls_params(), passfile=str(self.walreceiver_passfile))
        return make_conninfo("", **parts)

    def up(self) -> str:
        if self.tls:  # the stack's passfile may have changed (password rotation) since the clone
            self._write_walreceiver_passfile()
        return super().up()

    def _init(self, binaries: Path, user: pwd.struct_passwd | None) -> bool:
        if (self.paths.data / "PG_VERSION").exists():
            return False
        if not self.primary.answers():
            raise StackError(f"cannot clone {self.spec.name}: the primary on port {self.primary.port} does not answer")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if user:
            proc.chown_tree(self.paths.root, user)
        drop_inactive_slot(self.primary, self.spec.slot)
        proc.run(
            [
                str(binaries / "pg_basebackup"),
                # -R writes these parameters into primary_conninfo (with TLS: verify-full,
                # the stack CA and this node's own passfile)
                "-d", self.primary_conninfo(self.primary),
                "-D", str(self.paths.data),
                "-X", "stream",  # the WAL written during the copy comes along: the clone is consistent
                "-R",  # standby.signal + primary_conninfo
                "-C", "-S", self.spec.slot,  # its own physical slot, created with the copy
                "--checkpoint=fast",
                "--no-password",
            ],
            user=user,
            what=f"pg_basebackup of {self.spec.name}",
            timeout=900,
        )
        # the copy carries the primary's port and socket directory; these lines come last and win
        with open(self.paths.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(
                f"\n# --- {self.spec.name}: written by insights stack up --replicas ---\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.paths.socket_dir}'\n"
                # the walreceiver reports cluster_name as application_name in pg_stat_replication
                f"cluster_name = '{self.spec.name}'\n"
                # pg_cron (if loaded) must reach this node, not the primary, once promoted
                f"cron.host = '{self.paths.socket_dir}'\n"
            )
        if user:
            proc.chown_tree(self.paths.root, user)
        return True

    def repoint(self, primary: LocalPostgres) -> str:
        """Follow another primary (after a failover): new primary_conninfo, same slot name."""
        conninfo = self.primary_conninfo(primary)
        if self.running_pid() and self.answers():
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo)))
                # reloadable since PostgreSQL 13: the walreceiver restarts towards the new primary
                conn.execute("SELECT pg_reload_conf()")
            return f"now follows port {primary.port}"
        # stopped: edit the file ALTER SYSTEM would have written; it takes effect at start
        auto = self.paths.data / "postgresql.auto.conf"
        lines = [
            line for line in auto.read_text(encoding="utf-8").splitlines()
            if not line.strip().startswith("primary_conninfo")
        ]
        lines.append(f"primary_conninfo = '{conninfo}'")
        auto.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return f"will follow port {primary.port} when started"

    def receive_lsn(self) -> int | None:
        """How far this standby has WAL (received or replayed), as an integer LSN."""
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'),"
                    " coalesce(pg_last_wal_replay_lsn(), '0/0')), '0/0')::bigint"
                ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else None


def drop_inactive_slot(primary: LocalPostgres, slot: str) -> None:
    """A slot left by an earlier clone of the same name would make ``pg_basebackup -C`` fail."""
    with psycopg.connect(primary.admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND slot_type = 'physical' AND NOT active",
            (slot,),
        )


def ensure_physical_slot(primary: LocalPostgres, slot: str) -> None:
    """Keep WAL for a replica that is not connected yet (e.g. repointed to a new primary)."""
    with psycopg.connect(primary.admin_dsn, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if not exists:
            # immediately_reserve: from now on, before the replica first connects
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))


class Cluster:
    """The primary and its replicas as the topology file says."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = Topology.load(settings)

    @property
    def primary(self) -> LocalPostgres:
        spec = self.topology.primary
        return LocalPostgres(self.settings, root=self.settings.stack.dir / spec.name, port=spec.port)

    def replicas(self) -> list[LocalReplica]:
        primary = self.primary
        return [LocalReplica(self.settings, spec, primary) for spec in self.topology.replicas]

    def _next_spec(self) -> NodeSpec:
        taken = {n.port for n in self.topology.nodes()} | {self.settings.stack.pg_port}
        numbers = [0]
        for name in [n.name for n in self.topology.nodes()] + [r.get("name", "") for r in self.topology.retired]:
            found = re.fullmatch(r"replica-(\d+)", name)
            if found:
                numbers.append(int(found.group(1)))
        port = self.settings.stack.pg_replica_base_port
        while port in taken or not proc.port_is_free(port):
            port += 1
            if port > 65535:
                raise StackError("no free port for a replica above INSIGHTS_STACK_PG_REPLICA_BASE_PORT")
        return NodeSpec(f"replica-{max(numbers) + 1}", port)

    def up(self, wanted: int | None, progress: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
        """Start the known replicas; with ``wanted``, clone new ones until there are that many."""
        result: dict[str, str] = {}
        bin_dir()  # pg_basebackup comes with the server package
        for replica in self.replicas():
            progress(f"starting {replica.spec.name}")
            result[replica.spec.name] = replica.up()
        while wanted is not None and len(self.topology.replicas) < wanted:
            spec = self._next_spec()
            progress(f"cloning {spec.name} from the primary (pg_basebackup)")
            replica = LocalReplica(self.settings, spec, self.primary)
            # recorded before the clone: a half-made replica is found (and retried) next time
            self.topology.replicas.append(spec)
            self.topology.save(self.settings)
            try:
                result[spec.name] = replica.up() + f" as a hot standby on port {spec.port}"
            except StackError:
                self.topology.replicas.remove(spec)
                self.topology.save(self.settings)
                raise
        if wanted is not None and len(self.topology.replicas) > wanted:
            result["replicas"] = (
                f"{len(self.topology.replicas)} exist, {wanted} asked for: none is removed automatically"
            )
        return result

    def down(self) -> dict[str, str]:
        return {r.spec.name: r.down() for r in self.replicas()}

    # --- addresses -----------------------------------------------------------------------
    def _multi_host(self, nodes: list[NodeSpec], attrs: str) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        params = {"target_session_attrs": attrs, **self.primary.tls_params()}
        return f"postgresql://{SUPERUSER}@{hosts}/{DATABASE}?{uri_query(params)}"

    def write_dsn(self) -> str:
        """Every node, the primary first: after a failover libpq finds the new primary itself."""
        if not self.topology.replicas:
            return self.primary.dsn
        return self._multi_host(self.topology.nodes(), "read-write")

    def read_dsn(self) -> str | None:
        """Replicas first, the primary last: prefer-standby falls back to it when no replica answers."""
        if not self.topology.replicas:
            return None
        return self._multi_host([*self.topology.replicas, self.topology.primary], "prefer-standby") + (
            "&load_balance_hosts=random"
        )


def local_stack_dsn(settings: Settings) -> Settings:
    """INSIGHTS_PG_DSN unset and the local stack made with TLS (the default): the stack's own
    DSN (its nodes, verify-full against its CA, its passfile), the one `insights stack up`
    prints. The built-in default DSN has neither the CA nor the passfile, so on a TLS stack
    every command would be refused until the user exported the printed line. Called at the
    CLI's entry point, and by the demo once the stack it starts exists."""
    if "dsn" in settings.pg.model_fields_set:
        return settings
    from insights.stack import tls

    stack_dir = settings.stack.dir
    if not ((tls.stack_ca_dir(stack_dir) / "ca.crt").exists() and tls.stack_passfile(stack_dir).exists()):
        return settings
    cluster = Cluster(settings)
    read_dsn = cluster.read_dsn()
    return settings.replace(
        pg_dsn=cluster.write_dsn(),
        **({"pg_read_dsn": read_dsn} if read_dsn and "read_dsn" not in settings.pg.model_fields_set else {}),
    )
