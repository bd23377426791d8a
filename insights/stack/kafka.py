"""Apache Kafka 4 in KRaft mode under ``.stack/kafka``: one node, or a cluster of several.

The jars come from Maven Central through ``stack/kafka/pom.xml`` (``mvn
dependency:copy-dependencies``) and are cached per pom in ``.stack/kafka/libs/<version>-<hash>``:
a new pom (an upgrade) downloads into a new directory, so a broker that still runs keeps
the jars it loads classes from. The nodes listen on loopback only and never create
topics by themselves: topics are declared in code (``streams.topics``).

Several nodes (``insights stack up --brokers 3``): each node is broker *and* controller
(combined roles) and every node votes in the controller quorum. Three JVMs instead of six
on a developer's or CI's two cores; the quorum of three survives one node, as the
brokers do. Production separates the roles (a controller should not share a JVM with
broker load that can starve its heartbeats; docs/scaling.md). Node *n* uses the
configured broker and controller ports plus ``2(n-1)``, so the default single node and
node 1 of a cluster share their ports, and the ports of a stack never interleave with
another's.

The layout a stack directory was formatted with is recorded in ``cluster.json``: a
KRaft quorum's voters are fixed at format time, so a directory formatted for one node
cannot be started as three (and the other way round); that is one clear error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.paths import REPO_ROOT
from core.errors import StackError
from core.settings import Settings
from insights.stack import proc, tls

_QUIET = logging.getLogger("insights.stack.kafka.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

POM = REPO_ROOT / "stack" / "kafka" / "pom.xml"
LOG4J2 = REPO_ROOT / "stack" / "kafka" / "log4j2.properties"
#: downloaded jars are a cache shared by every stack directory (tests start their own stacks)
JAR_ROOT = REPO_ROOT / ".stack" / "kafka" / "libs"

#: what the quorum tool and the format tool need to be told apart from the broker's JVM
_TOOL_JVM = ["-Xms32m", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

SERVER_PROPERTIES = """# written by insights stack
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocol_map}
log.dirs={data_dir}
auto.create.topics.enable=false
num.partitions=1
# the internal topics (group offsets, transactions) replicated like the declared ones
default.replication.factor={replication}
min.insync.replicas={min_insync}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=6
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_insync}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_insync}
# an acknowledged record is never given up for availability: a partition whose in-sync
# replicas are all gone stays offline until one of them is back
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
# the local stack shares two cores with PostgreSQL and a dozen Python processes: a
# controller event can wait seconds for a CPU there. Kafka's defaults (fetch timeout
# 2 s, election 1 s, broker session 9 s) assume dedicated machines, and on a starved
# one the quorum keeps re-electing and fencing live brokers. Longer timeouts cost a
# slower failover when a node really dies (about 15 s instead of 9 s until its
# partitions move), which is what a shared machine can honestly offer.
controller.quorum.fetch.timeout.ms=10000
controller.quorum.election.timeout.ms=5000
broker.session.timeout.ms=15000
broker.heartbeat.interval.ms=3000
# leadership goes back to the preferred replicas after a restart (default 300 s: a
# rolling restart would leave every leader on the last node up for minutes)
leader.imbalance.check.interval.seconds=10
"""

# The TLS listener (docs/security.md, "Kafka TLS"). The keystore is PKCS12, made by
# `openssl pkcs12` from the stack CA's certificate (insights/stack/tls.py): the JVM's own
# keystore format, built by the tool that made the certificate, so neither keytool nor
# Kafka's PEM parser (which wants PKCS#8 keys, encrypted when a password is given) is in
# the way. Its password is generated into a 0600 file that Kafka's FileConfigProvider
# reads at start: this file names the password, it never holds it. No truststore: the
# broker asks clients for no certificate (ssl.client.auth=none) and talks to the other
# nodes over PLAINTEXT, so it never verifies a peer. TLS 1.3 only, like the stack's
# PostgreSQL: every client of the project is librdkafka 2 on OpenSSL 3.
#
# Beside it, on the TLS port + 1, SASL_SSL: the same TLS, then SCRAM-SHA-512 logins, the
# users registered from settings (LocalKafka.register_scram_user). The salted verifiers
# live in the cluster metadata; no password is in any file of the broker.
PROVIDER_PROPERTIES = """# the TLS listeners: certificate from the stack CA, password read from a 0600 file
config.providers=insightsfile
config.providers.insightsfile.class=org.apache.kafka.common.config.provider.FileConfigProvider
"""
LISTENER_TLS_PROPERTIES = """listener.name.{listener}.ssl.keystore.type=PKCS12
listener.name.{listener}.ssl.keystore.location={keystore}
listener.name.{listener}.ssl.keystore.password=${{insightsfile:{password_file}:password}}
listener.name.{listener}.ssl.key.password=${{insightsfile:{password_file}:password}}
listener.name.{listener}.ssl.protocol=TLSv1.3
listener.name.{listener}.ssl.enabled.protocols=TLSv1.3
listener.name.{listener}.ssl.client.auth=none
"""
SCRAM_MECHANISM = "SCRAM-SHA-512"
SASL_PROPERTIES = f"""listener.name.sasl_ssl.sasl.enabled.mechanisms={SCRAM_MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"""
#: the listeners that carry the stack's certificate (lower-case: Kafka's per-listener prefix)
TLS_LISTENERS = ("ssl", "sasl_ssl")


def pom_version(pom_text: str) -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_text)
    if not found:
        raise StackError(f"{POM} names no <kafka.version>")
    return found.group(1)


def jar_dir(pom_text: str) -> Path:
    """Where the jars of this pom live: one directory per pom content (version + hash)."""
    digest = hashlib.sha256(pom_text.encode()).hexdigest()[:10]
    return JAR_ROOT / f"{pom_version(pom_text)}-{digest}"


def node_ports(settings: Settings, node_id: int) -> tuple[int, int]:
    """(broker port, controller port) of node ``node_id`` (1-based)."""
    step = 2 * (node_id - 1)
    return settings.stack.kafka_port + step, settings.stack.kafka_controller_port + step


def node_ssl_port(settings: Settings, node_id: int, nodes: int) -> int | None:
    """The TLS listener's port of node ``node_id`` of a ``nodes``-node stack; None: no TLS listener.

    ``INSIGHTS_STACK_KAFKA_SSL_PORT`` plus ``2(n-1)``, like :func:`node_ports`; unset, the
    first port above the cluster's broker and controller ports (the default single node:
    59094; three nodes: 59098, 59100, 59102), so a stack on other ports, such as a test's
    private one, never reaches for the shared stack's TLS port.
    """
    base = settings.stack.kafka_ssl_port
    if base == 0:
        return None
    if base is None:
        base = settings.stack.kafka_port + 2 * nodes
    return base + 2 * (node_id - 1)


@dataclass(frozen=True)
class NodeTls:
    """The files of one node's TLS listener (``<node>/tls/``)."""

    root: Path

    @property
    def keystore(self) -> Path:
        return self.root / "broker.p12"

    @property
    def password_file(self) -> Path:
        """``password=…`` (0600): the keystore's and its key's password, read by the broker."""
        return self.root / "keystore.properties"

    @property
    def certificate(self) -> Path:
        return self.root / "broker.crt"

    def password(self) -> str:
        for line in self.password_file.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "password":
                return value.strip()
        raise StackError(f"{self.password_file} has no password= line: delete {self.root} and restart Kafka to re-create it")


def server_properties(
    node: KafkaNode, voters: str, replication: int, min_insync: int
) -> str:
    """The ``server.properties`` of ``node``: PLAINTEXT (clients and the other nodes), CONTROLLER,
    and, when the node has a TLS port, SSL for clients."""
    plain = f"PLAINTEXT://127.0.0.1:{node.port}"
    advertised = [plain]
    protocols = ["PLAINTEXT:PLAINTEXT"]
    if node.ssl_port is not None:
        advertised += [f"SSL://127.0.0.1:{node.ssl_port}", f"SASL_SSL://127.0.0.1:{node.sasl_port}"]
        protocols += ["SSL:SSL", "SASL_SSL:SASL_SSL"]
    text = SERVER_PROPERTIES.format(
        node_id=node.node_id,
        voters=voters,
        listeners=",".join([*advertised, f"CONTROLLER://127.0.0.1:{node.controller_port}"]),
        advertised=",".join(advertised),
        protocol_map=",".join([*protocols, "CONTROLLER:PLAINTEXT"]),
        data_dir=node.data,
        replication=replication,
        min_insync=min_insync,
    )
    if node.ssl_port is not None:
        text += PROVIDER_PROPERTIES
        for listener in TLS_LISTENERS:
            text += LISTENER_TLS_PROPERTIES.format(
                listener=listener, keystore=node.tls.keystore, password_file=node.tls.password_file
            )
        text += SASL_PROPERTIES
    return text


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    #: the node's own directory: config, data, pid file and log
    root: Path
    #: the TLS listener's port; None: PLAINTEXT only (INSIGHTS_STACK_KAFKA_SSL_PORT=0)
    ssl_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_address(self) -> str | None:
        return None if self.ssl_port is None else f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_port(self) -> int | None:
        """SASL_SSL (SCRAM over TLS): the TLS port + 1, a port no other node uses (theirs step by 2)."""
        return None if self.ssl_port is None else self.ssl_port + 1

    @property
    def sasl_address(self) -> str | None:
        return None if self.sasl_port is None else f"127.0.0.1:{self.sasl_port}"

    @property
    def tls(self) -> NodeTls:
        return NodeTls(self.root / "tls")

    @property
    def controller_address(self) -> str:
        return f"127.0.0.1:{self.controller_port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def running_pid(self) -> int | None:
        return proc.read_pid(self.pid_file)


@dataclass(frozen=True)
class QuorumMember:
    node_id: int
    #: "Leader", "Follower" (a voter) or "Observer"
    status: str
    lag: int


@dataclass(frozen=True)
class Quorum:
    leader_id: int
    leader_epoch: int
    voters: tuple[int, ...]
    members: tuple[QuorumMember, ...]

    @property
    def max_lag(self) -> int:
        return max((m.lag for m in self.members), default=0)

    def describe(self) -> str:
        voters = ",".join(str(v) for v in self.voters)
        return f"leader {self.leader_id} (epoch {self.leader_epoch}), voters {voters}, max lag {self.max_lag}"


def parse_quorum(status: str, replication: str) -> Quorum:
    """The output of ``kafka-metadata-quorum describe --status`` and ``--replication``."""
    fields: dict[str, str] = {}
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            fields[key.strip()] = value.strip()
    try:
        voters = tuple(sorted(int(v["id"]) for v in json.loads(fields["CurrentVoters"])))
        leader, epoch = int(fields["LeaderId"]), int(fields["LeaderEpoch"])
    except (KeyError, ValueError, TypeError) as exc:
        raise StackError(f"unexpected answer from the quorum tool (no {exc})") from None
    members = []
    columns: list[str] = []
    for line in replication.splitlines():
        cells = line.split()
        if cells[:1] == ["NodeId"]:
            columns = cells
        elif columns and cells and cells[0].isdigit() and len(cells) == len(columns):
            row = dict(zip(columns, cells, strict=True))
            members.append(QuorumMember(int(row["NodeId"]), row.get("Status", "?"), int(row.get("Lag", "0"))))
    return Quorum(leader, epoch, voters, tuple(sorted(members, key=lambda m: m.node_id)))


#: Kafka's reserved ids (Uuid.ZERO_UUID and Uuid.ONE_UUID, the metadata topic's id)
_RESERVED_IDS = frozenset({bytes(16), bytes(15) + b"\x01"})


def encode_uuid(raw: bytes) -> str:
    """Kafka's text form of a 16-byte id (``Uuid.toString``): URL-safe base64, no padding."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def random_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A cluster id as ``kafka-storage random-uuid`` makes it (Kafka's ``Uuid.randomUuid``).

    The URL-safe alphabet includes ``-``, so about 1 id in 64 starts with one; Kafka's
    own generator draws again in that case (an id that looks like an option breaks
    command lines), and never returns the reserved all-zero and one ids.
    """
    while True:
        raw = random_bytes()
        text = encode_uuid(raw)
        if raw not in _RESERVED_IDS and not text.startswith("-"):
            return text


def format_command(java: list[str], cluster_id: str, config: Path) -> list[str]:
    """``StorageTool format`` for ``cluster_id``.

    ``--cluster-id=<id>`` in one argument: with ``-t <id>`` argparse4j takes an id
    starting with ``-`` for an option and fails ("argument --cluster-id/-t: expected
    one argument"). Ids this module generates never start with ``-``, but one kept
    from elsewhere (an operator's, an older stack's) may.
    """
    return [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(config)]




class LocalKafka:
    """The local Kafka: ``nodes`` KRaft nodes, each broker and controller.

    ``brokers`` (or ``INSIGHTS_STACK_KAFKA_BROKERS``) is what ``stack up`` should start;
    unset, the stack keeps the layout it was formatted with (one node for a new one).
    """

    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.settings = settings
        self.root = settings.stack.dir / "kafka"
        self.requested = brokers or settings.stack.kafka_brokers
        self.formatted_nodes = self._recorded_nodes()
        self.count = self.formatted_nodes or self.requested or 1
        self.nodes = [self._node(i) for i in range(1, self.count + 1)]
        # kept for callers of the single-node era (tests, status): node 1
        self.port = self.nodes[0].port
        self.controller_port = self.nodes[0].controller_port

    def _node(self, node_id: int) -> KafkaNode:
        port, controller_port = node_ports(self.settings, node_id)
        # one node keeps the layout of the single-node stack (.stack/kafka/data…), so a
        # stack formatted before clusters existed is still found and stopped
        root = self.root if self.count == 1 else self.root / f"node-{node_id}"
        return KafkaNode(node_id, port, controller_port, root, node_ssl_port(self.settings, node_id, self.count))

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    @property
    def layout_file(self) -> Path:
        return self.root / "cluster.json"

    def _recorded_nodes(self) -> int | None:
        try:
            return int(json.loads(self.layout_file.read_text())["nodes"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # formatted by a version of this module that wrote no layout: one node
        return 1 if (self.root / "data" / "meta.properties").exists() else None

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def ssl_bootstrap(self) -> str | None:
        """The TLS listeners as bootstrap servers; None when the stack has none."""
        found = [n.ssl_address for n in self.nodes if n.ssl_address]
        return ",".join(found) if found else None

    @property
    def ca_file(self) -> Path:
        """The stack CA's certificate: what a TLS client trusts (``INSIGHTS_KAFKA_SSL_CA_LOCATION``)."""
        return tls.stack_ca_dir(self.settings.stack.dir) / "ca.crt"

    def ssl_client_env(self) -> dict[str, str]:
        """The settings a client needs to use the TLS listeners (empty: there are none)."""
        if self.ssl_bootstrap is None:
            return {}
        return {
            "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS": self.ssl_bootstrap,
            "INSIGHTS_KAFKA_SECURITY_PROTOCOL": "SSL",
            "INSIGHTS_KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }

    @property
    def sasl_bootstrap(self) -> str | None:
        found = [n.sasl_address for n in self.nodes if n.sasl_address]
        return ",".join(found) if found else None

    def sasl_client_env(self) -> dict[str, str]:
        """The settings of a SCRAM client over TLS, but its password (the operator's, in
        ``INSIGHTS_KAFKA_SASL_PASSWORD``: never printed) and its user when none is set."""
        if self.sasl_bootstrap is None:
            return {}
        env = {
            "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
            "INSIGHTS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "INSIGHTS_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "INSIGHTS_KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }
        if self.settings.kafka.sasl_username:
            env["INSIGHTS_KAFKA_SASL_USERNAME"] = self.settings.kafka.sasl_username
        return env

    def register_scram_user(self, timeout: float = 60.0) -> str | None:
        """Register (or re-password) the SCRAM user of the settings on the running cluster.

        ``INSIGHTS_KAFKA_SASL_USERNAME`` and ``INSIGHTS_KAFKA_SASL_PASSWORD``, both set: the
        client's own credentials, so whoever configures a client configures the broker too.
        Idempotent (an upsert, through the PLAINTEXT listener); librdkafka salts and hashes
        the password before it leaves this process. None when the settings name no user.
        """
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        kafka = self.settings.kafka
        if self.sasl_bootstrap is None or not kafka.sasl_username or kafka.sasl_password is None:
            return None
        upsert = UserScramCredentialUpsertion(
            kafka.sasl_username,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
            kafka.sasl_password.get_secret_value().encode(),
        )
        admin = AdminClient({"bootstrap.servers": self.bootstrap}, logger=_QUIET)
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=timeout)
        return f"{SCRAM_MECHANISM} user {kafka.sasl_username!r} registered (SASL_SSL {self.sasl_bootstrap})"

    @property
    def libs(self) -> Path:
        return jar_dir(POM.read_text())

    # kept for the single-node callers: node 1's files
    @property
    def pid_file(self) -> Path:
        return self.nodes[0].pid_file

    @property
    def log(self) -> Path:
        return self.nodes[0].log

    def running_pid(self) -> int | None:
        return self.nodes[0].running_pid()

    def running_pids(self) -> dict[int, int | None]:
        return {n.node_id: n.running_pid() for n in self.nodes}

    def replication(self) -> tuple[int, int]:
        """Replication of the internal topics: what the declared topics get on this many nodes."""
        return self.settings.kafka.replication(self.count)

    def node_answers(self, node: KafkaNode, timeout: float = 3.0) -> bool:
        return self._brokers_seen(node.address, timeout) is not None

    def answers(self, timeout: float = 3.0) -> bool:
        """Every node answers (one node: that one)."""
        return all(self.node_answers(n, timeout) for n in self.nodes)

    def _brokers_seen(self, bootstrap: str, timeout: float) -> set[int] | None:
        """The broker ids that ``bootstrap`` reports as registered, or None when it does not answer."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000},
            logger=_QUIET,  # refused connections while it boots are expected, not news
        )
        try:
            return set(admin.list_topics(timeout=timeout).brokers)
        except Exception:  # KafkaException: broker not (yet) reachable
            return None

    # --- install ---------------------------------------------------------------------
    def fetch_jars(self) -> None:
        """Resolve the broker jars once per pom; later runs reuse the directory."""
        pom = POM.read_text()
        libs = jar_dir(pom)
        marker = libs / ".complete"
        if marker.exists() and marker.read_text() == pom:
            return
        proc.which("java", "install a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
        mvn = proc.which("mvn", "install Maven (apt-get install maven)")
        libs.mkdir(parents=True, exist_ok=True)
        for stale in libs.glob("*.jar"):  # an interrupted download of this same pom
            stale.unlink()
        proc.run(
            [
                mvn, "-q", "-B", "-f", str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            what="downloading the Kafka broker with mvn",
            timeout=900,
        )
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"mvn finished but no kafka_2.13 jar is in {libs}")
        marker.write_text(pom)

    def heap_mb(self) -> int:
        return self.settings.stack.kafka_heap_mb or (1024 if self.count == 1 else 384)

    def _java(self, node: KafkaNode | None = None, tool: bool = False) -> list[str]:
        java = proc.which("java", "install a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
        heap = self.heap_mb()
        memory = _TOOL_JVM if tool else [f"-Xms{min(256, heap)}m", f"-Xmx{heap}m", "-XX:+UseG1GC"]
        logs = (node or self.nodes[0]).root / "logs"
        return [
            java,
            *memory,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={logs}",
            "-cp", f"{self.libs}/*",
        ]

    def rendered_config(self, node: KafkaNode) -> str:
        voters = ",".join(f"{n.node_id}@{n.controller_address}" for n in self.nodes)
        replication, min_insync = self.replication()
        return server_properties(node, voters, replication, min_insync)

    def write_config(self) -> Path:
        """Every node's ``server.properties``, rewritten at each start: a stack formatted
        before a listener existed gets it at its next start, its data untouched.

        The keystores come first: every Kafka tool that reads the file (the broker, the
        storage format) resolves the password file it names, and fails without it.
        """
        self.ensure_keystores()
        for node in self.nodes:
            node.root.mkdir(parents=True, exist_ok=True)
            node.config.write_text(self.rendered_config(node))
        return self.nodes[0].config

    def stale_nodes(self) -> list[int]:
        """Running nodes whose ``server.properties`` is not what this code would write now
        (a node started before its TLS listener existed): a restart applies it."""
        stale = []
        for node in self.nodes:
            try:
                current = node.config.read_text()
            except OSError:
                current = ""
            if node.running_pid() and current != self.rendered_config(node):
                stale.append(node.node_id)
        return stale

    def ensure_keystores(self) -> None:
        """Each TLS node's keystore (created once; delete ``<node>/tls`` to re-issue)."""
        for node in self.nodes:
            if node.ssl_port is not None:
                make_keystore(node.tls, tls.stack_ca_dir(self.settings.stack.dir))

    def _format(self, cluster_id: str | None = None) -> bool:
        """Format every node's data directory once, all with one cluster id.

        ``cluster_id`` is for tests (default: the recorded one, else a new one).
        """
        if all((n.data / "meta.properties").exists() for n in self.nodes):
            return False
        cluster_id = cluster_id or self._recorded_cluster_id() or random_cluster_id()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps({"nodes": self.count, "cluster_id": cluster_id}) + "\n")
        for node in self.nodes:
            if (node.data / "meta.properties").exists():
                continue
            proc.run(
                format_command(self._java(node, tool=True), cluster_id, node.config),
                what=f"formatting Kafka storage of node {node.node_id}",
                timeout=120,
            )
        self.formatted_nodes = self.count
        return True

    def _recorded_cluster_id(self) -> str | None:
        try:
            return str(json.loads(self.layout_file.read_text())["cluster_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _require_layout(self) -> None:
        if self.requested and self.formatted_nodes and self.requested != self.formatted_nodes:
            raise StackError(
                f"the Kafka in {self.root} was formatted with {self.formatted_nodes} node(s), not {self.requested}; "
                f"run `insights stack down` and delete {self.root} to re-create it (its topics are lost), "
                "or use another INSIGHTS_STACK_DIR"
            )

    # --- lifecycle -------------------------------------------------------------------
    def _require_distinct_ports(self) -> None:
        taken: dict[int, str] = {}
        for node in self.nodes:
            named = [(node.port, "INSIGHTS_STACK_KAFKA_PORT"), (node.controller_port, "INSIGHTS_STACK_KAFKA_CONTROLLER_PORT")]
            if node.ssl_port is not None and node.sasl_port is not None:
                named += [(node.ssl_port, "INSIGHTS_STACK_KAFKA_SSL_PORT"), (node.sasl_port, "INSIGHTS_STACK_KAFKA_SSL_PORT + 1")]
            for port, setting in named:
                if port in taken:
                    raise StackError(
                        f"Kafka port {port} is given twice ({taken[port]} and {setting} of node {node.node_id}); "
                        f"node n uses each port + 2(n-1): choose {setting} outside the others' ranges"
                    )
                taken[port] = f"{setting} of node {node.node_id}"

    def up(self, wait: float = 120.0) -> str:
        self._require_layout()
        self._require_distinct_ports()
        if all(n.running_pid() for n in self.nodes) and self.answers():
            stale = self.stale_nodes()
            if stale:
                # not restarted here: `stack up` runs at the start of every test session,
                # and a broker other work is using must not go away under it
                nodes = ", ".join(str(i) for i in stale)
                return (
                    f"already running, with an older configuration (node {nodes}: e.g. no TLS listener); "
                    "`insights stack down` then `insights stack up` applies it, data kept"
                )
            return "already running"
        self.fetch_jars()
        for node in self.nodes:
            if node.running_pid():
                continue
            suffix = "" if node.node_id == 1 else f" (node {node.node_id}: the port + {2 * (node.node_id - 1)})"
            proc.require_port_free(node.port, f"Kafka{suffix}", "INSIGHTS_STACK_KAFKA_PORT")
            proc.require_port_free(
                node.controller_port, f"the Kafka controller{suffix}", "INSIGHTS_STACK_KAFKA_CONTROLLER_PORT"
            )
            if node.ssl_port is not None and node.sasl_port is not None:
                proc.require_port_free(node.ssl_port, f"the Kafka TLS listener{suffix}", "INSIGHTS_STACK_KAFKA_SSL_PORT")
                proc.require_port_free(
                    node.sasl_port, f"the Kafka SASL_SSL listener (the TLS port + 1){suffix}", "INSIGHTS_STACK_KAFKA_SSL_PORT"
                )
        self.write_config()
        formatted = self._format()
        for node in self.nodes:
            if not node.running_pid():
                self._spawn(node)
        self.wait_until_ready(wait)
        started = "formatted and started" if formatted else "started"
        return started if self.count == 1 else f"{started} ({self.count} nodes)"

    def _spawn(self, node: KafkaNode) -> subprocess.Popen[bytes]:
        node.root.mkdir(parents=True, exist_ok=True)
        with open(node.log, "ab") as log:
            child = subprocess.Popen(
                [*self._java(node), "kafka.Kafka", str(node.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI, not killed by the terminal's ^C
                cwd=node.root,
            )
        node.pid_file.write_text(f"{child.pid}\n")
        return child

    def wait_until_ready(self, wait: float = 120.0) -> None:
        """Every node answers and reports every node registered (a quorum formed)."""
        expected = {n.node_id for n in self.nodes}

        def ready() -> bool:
            for node in self.nodes:
                if not node.running_pid():
                    raise StackError(f"Kafka node {node.node_id} exited{last_error(node.log)}; see {node.log}")
                seen = self._brokers_seen(node.address, 1.0)
                if seen is None or not expected <= seen:
                    return False
            return True

        if not proc.wait_for(ready, wait, 0.5):
            slow = [n for n in self.nodes if self._brokers_seen(n.address, 1.0) is None]
            where = slow[0].log if slow else self.nodes[0].log
            raise StackError(f"Kafka did not answer within {wait:.0f}s; see {where}")

    def start_node(self, node_id: int, wait: float = 120.0) -> None:
        """Start one stopped node of a running cluster and wait until the cluster sees it."""
        node = self.node(node_id)
        if not node.running_pid():
            self._spawn(node)
        self.wait_until_ready(wait)

    def stop_node(self, node_id: int, *, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop one node: SIGTERM (a controlled shutdown that moves its leaders first) or SIGKILL."""
        node = self.node(node_id)
        pid = node.running_pid()
        if pid is None:
            return
        if kill:
            os.kill(pid, signal.SIGKILL)
            proc.wait_for(lambda: not proc.pid_alive(pid), 10.0)
        else:
            proc.stop_pid(pid, timeout=timeout)
        node.pid_file.unlink(missing_ok=True)

    def down(self) -> str:
        pids = {n.node_id: n.running_pid() for n in self.nodes}
        running = {i: p for i, p in pids.items() if p}
        # every node at once: stopped one by one, the last ones lose their quorum and
        # wait for a controlled shutdown no controller can grant any more
        for pid in running.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in running.values():
            proc.stop_pid(pid, timeout=60)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)
        kill_orphans(self.root)  # a broker whose pid file was lost
        if not running:
            return "not running"
        return "stopped" if self.count == 1 else f"stopped ({len(running)} of {self.count} nodes ran)"

    # --- certificate rotation --------------------------------------------------------
    def rotate_certificates(self, timeout: float = 60.0) -> list[int]:
        """Re-issue every TLS node's certificate from the stack CA; running nodes load it
        without a restart. Returns the nodes that serve the new one now.

        The keystore is rebuilt at the same path with the same password, then each running
        node is told the keystore location of its two TLS listeners (``ssl``, ``sasl_ssl``;
        the same value): a broker reloads a keystore whose file changed when that setting
        is altered. The
        reload happens after the alter is acknowledged and fails only in the broker's
        log, so success is what the listener serves afterwards. The dynamic setting is
        removed again, leaving ``server.properties`` in charge. Connections already open
        keep the old certificate until they reconnect; a stopped node loads the new one
        at its next start.
        """
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        tls_nodes = [n for n in self.nodes if n.ssl_port is not None]
        if not tls_nodes:
            raise StackError("this stack has no Kafka TLS listener (INSIGHTS_STACK_KAFKA_SSL_PORT=0): nothing to rotate")
        for node in tls_nodes:
            for old in (node.tls.keystore, node.tls.certificate, node.tls.root / "broker.key"):
                old.unlink(missing_ok=True)
            make_keystore(node.tls, tls.stack_ca_dir(self.settings.stack.dir))
        # a node started before its TLS listener existed has nothing to reload
        stale = set(self.stale_nodes())
        running = [n for n in tls_nodes if n.running_pid() and n.node_id not in stale]
        if not running:
            return []
        admin = AdminClient({"bootstrap.servers": self.bootstrap}, logger=_QUIET)

        def alter(node: KafkaNode, op: AlterConfigOpType) -> None:
            # one broker per request: the admin API refuses several BROKER resources in one
            resource = ConfigResource(ResourceType.BROKER, str(node.node_id), incremental_configs=[
                ConfigEntry(f"listener.name.{listener}.ssl.keystore.location", str(node.tls.keystore),
                            incremental_operation=op)
                for listener in TLS_LISTENERS
            ])
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(timeout=timeout)

        for node in running:
            alter(node, AlterConfigOpType.SET)
            expected = _pem_body(node.tls.certificate.read_text(encoding="ascii"))
            if not proc.wait_for(
                lambda n=node: served_certificate(n) == served_certificate(n, sasl=True) == expected, timeout, 0.5
            ):
                raise StackError(
                    f"Kafka node {node.node_id} still serves its old certificate{last_error(node.log)}; "
                    f"restart it to load {node.tls.keystore}"
                )
            alter(node, AlterConfigOpType.DELETE)
        return [n.node_id for n in running]

    # --- the controller quorum -------------------------------------------------------
    def quorum(self, timeout: float = 60.0) -> Quorum:
        """Leader, voters and each voter's lag, from Kafka's own ``kafka-metadata-quorum`` tool."""
        controllers = ",".join(n.controller_address for n in self.nodes)
        base = [
            *self._java(tool=True),
            "org.apache.kafka.tools.MetadataQuorumCommand",
            "--bootstrap-controller", controllers,
            "describe",
        ]
        # the two questions in parallel: each is a JVM start, seconds on a busy machine
        with ThreadPoolExecutor(2) as pool:
            status, replication = pool.map(
                lambda what: proc.run([*base, what], what="kafka-metadata-quorum describe", timeout=timeout),
                ["--status", "--replication"],
            )
        return parse_quorum(status.stdout, replication.stdout)


def make_keystore(files: NodeTls, ca_dir: Path) -> None:
    """A node's PKCS12 keystore: a key and certificate from the stack CA (SANs 127.0.0.1 and
    localhost) with the CA certificate as its chain; the password generated into a 0600
    ``password=`` file. Passed to openssl through its environment, never its arguments
    (which any local user can read in /proc)."""
    files.root.mkdir(parents=True, exist_ok=True)
    files.root.chmod(0o700)
    if not files.password_file.exists():
        fd = os.open(files.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # URL-safe characters: a properties value as it is
            fh.write(f"password={tls.new_password()}\n")
    if files.keystore.exists():
        return
    # the password outlives the keystore: a running broker holds it, and reloads a
    # re-issued keystore at the same path only if it opens with the same one (rotation)
    password = files.password()
    crt, key = tls.issue(files.root, "broker", ca_dir=ca_dir)
    proc.run(
        ["openssl", "pkcs12", "-export", "-in", str(crt), "-inkey", str(key),
         "-certfile", str(ca_dir / "ca.crt"), "-name", "broker",
         "-out", str(files.keystore), "-passout", "env:INSIGHTS_KEYSTORE_PASSWORD"],
        env={**os.environ, "INSIGHTS_KEYSTORE_PASSWORD": password},
        what="openssl: the Kafka keystore",
        timeout=120,
    )
    files.keystore.chmod(0o600)


def _pem_body(pem: str) -> str:
    return "".join(line.strip() for line in pem.strip().splitlines() if not line.startswith("-----"))


def served_certificate(node: KafkaNode, sasl: bool = False) -> str | None:
    """The base64 body of the certificate ``node``'s TLS (or SASL_SSL) listener presents
    (unverified: this compares, it does not trust), or None when it does not answer."""
    import ssl

    port = node.sasl_port if sasl else node.ssl_port
    if port is None:
        return None
    try:
        return _pem_body(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))
    except OSError:
        return None


def last_error(log: Path) -> str:
    """``: <the last ERROR line>`` of a broker log, to say why a node died in one line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if " ERROR " in line or "Exception" in line]
    return f": {errors[-1].strip()[:300]}" if errors else ""


def kill_orphans(root: Path) -> None:
    """Processes started from a stack dir whose pid file was lost (a crashed CLI)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and any(str(root).encode() in arg for arg in cmdline):
            proc.stop_pid(int(entry.name))
