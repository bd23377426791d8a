"""A single-node Apache Kafka 4 broker in KRaft mode under ``.stack/kafka``.

The jars come from Maven Central through ``stack/kafka/pom.xml`` (``mvn
dependency:copy-dependencies``) and are cached in ``.stack/kafka/libs``. The broker
listens on loopback only and never creates topics by itself: topics are declared
in code (``streams.topics``).
"""

from __future__ import annotations

import base64
import os
import logging
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from core.paths import REPO_ROOT
from core.errors import StackError
from core.settings import Settings
from insights.stack import proc

_QUIET = logging.getLogger("insights.stack.kafka.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

POM = REPO_ROOT / "stack" / "kafka" / "pom.xml"
LOG4J2 = REPO_ROOT / "stack" / "kafka" / "log4j2.properties"
#: downloaded jars are a cache shared by every stack directory (tests start their own stacks)
JAR_CACHE = REPO_ROOT / ".stack" / "kafka" / "libs"

SERVER_PROPERTIES = """# written by insights stack
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
"""


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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.stack.kafka_port
        self.controller_port = settings.stack.kafka_controller_port
        self.root = settings.stack.dir / "kafka"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return JAR_CACHE

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def running_pid(self) -> int | None:
        return proc.read_pid(self.pid_file)

    def answers(self, timeout: float = 3.0) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000},
            logger=_QUIET,  # refused connections while it boots are expected, not news
        )
        try:
            admin.list_topics(timeout=timeout)
            return True
        except Exception:  # KafkaException: broker not (yet) reachable
            return False

    # --- install ---------------------------------------------------------------------
    def fetch_jars(self) -> None:
        """Resolve the broker jars once; later runs reuse the directory."""
        marker = self.libs / ".complete"
        if marker.exists() and marker.read_text() == POM.read_text():
            return
        proc.which("java", "install a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
        mvn = proc.which("mvn", "install Maven (apt-get install maven)")
        self.libs.mkdir(parents=True, exist_ok=True)
        for stale in self.libs.glob("*.jar"):
            stale.unlink()
        proc.run(
            [
                mvn, "-q", "-B", "-f", str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            what="downloading the Kafka broker with mvn",
            timeout=900,
        )
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"mvn finished but no kafka_2.13 jar is in {self.libs}")
        marker.write_text(POM.read_text())

    def _java(self) -> list[str]:
        java = proc.which("java", "install a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
        return [
            java,
            "-Xms256m", "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
            "-cp", f"{self.libs}/*",
        ]

    @property
    def ssl_port(self) -> int:
        return self.settings.stack.kafka_ssl_port

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def ca_file(self) -> Path:
        """The stack CA (shared with PostgreSQL): what SSL clients set as ssl.ca.location."""
        return self.settings.stack.dir / "pg" / "tls" / "ca.crt"

    def _keystores(self) -> str:
        """PKCS12 key- and truststore for the TLS listener, from the stack CA (keytool for the
        truststore, openssl for the key pair); their password is generated and stays in the
        0600 properties file."""
        from insights.stack import tls

        tls_dir = self.settings.stack.dir / "pg" / "tls"
        ks_dir = self.root / "tls"
        ks_dir.mkdir(parents=True, exist_ok=True)
        secret_file = ks_dir / "store.password"
        if not secret_file.exists():
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(tls.new_password())
        password = secret_file.read_text().strip()
        keystore, truststore = ks_dir / "broker.p12", ks_dir / "truststore.p12"
        if not keystore.exists():
            crt, key = tls.issue(tls_dir, "kafka")
            proc.run(["openssl", "pkcs12", "-export", "-in", str(crt), "-inkey", str(key),
                      "-certfile", str(tls_dir / "ca.crt"), "-name", "kafka", "-out", str(keystore),
                      "-passout", f"file:{secret_file}"], what="openssl: Kafka keystore")
        if not truststore.exists():
            keytool = proc.which("keytool", "install a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
            proc.run([keytool, "-importcert", "-noprompt", "-alias", "insights-ca", "-file", str(tls_dir / "ca.crt"),
                      "-keystore", str(truststore), "-storetype", "PKCS12", "-storepass:file", str(secret_file)],
                     what="keytool: Kafka truststore")
        keystore.chmod(0o600)
        return (
            f"ssl.keystore.type=PKCS12\nssl.keystore.location={keystore}\nssl.keystore.password={password}\n"
            f"ssl.key.password={password}\n"
            f"ssl.truststore.type=PKCS12\nssl.truststore.location={truststore}\n"
            f"ssl.truststore.password={password}\nssl.enabled.protocols=TLSv1.3,TLSv1.2\n"
            "ssl.endpoint.identification.algorithm=https\n"
        )

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "server.properties"
        text = SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.root / "data",
        )
        if self.ssl_port:
            from insights.stack import tls

            tls.ensure_ca(self.settings.stack.dir / "pg" / "tls")
            listeners = f"PLAINTEXT://127.0.0.1:{self.port},SSL://127.0.0.1:{self.ssl_port}"
            text = (text
                    .replace(f"listeners=PLAINTEXT://127.0.0.1:{self.port},", f"listeners={listeners},", 1)
                    .replace(f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                             f"advertised.listeners={listeners}")
                    .replace("listener.security.protocol.map=PLAINTEXT:PLAINTEXT,",
                             "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,"))
            text += self._keystores()
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return config

    def _format(self, cluster_id: str | None = None) -> bool:
        """Format the data directory once; ``cluster_id`` is for tests (default: a new one)."""
        data = self.root / "data"
        if (data / "meta.properties").exists():
            return False
        proc.run(
            format_command(self._java(), cluster_id or random_cluster_id(), self.root / "server.properties"),
            what="formatting Kafka storage",
            timeout=120,
        )
        return True

    # --- lifecycle -------------------------------------------------------------------
    def up(self, wait: float = 90.0) -> str:
        if self.running_pid() and self.answers():
            return "already running"
        self.fetch_jars()
        proc.require_port_free(self.port, "Kafka", "INSIGHTS_STACK_KAFKA_PORT")
        proc.require_port_free(
            self.controller_port, "the Kafka controller", "INSIGHTS_STACK_KAFKA_CONTROLLER_PORT"
        )
        if self.ssl_port:
            proc.require_port_free(self.ssl_port, "the Kafka TLS listener", "INSIGHTS_STACK_KAFKA_SSL_PORT")
        self.write_config()
        formatted = self._format()
        with open(self.log, "ab") as log:
            child = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(self.root / "server.properties")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI, not killed by the terminal's ^C
                cwd=self.root,
            )
        self.pid_file.write_text(f"{child.pid}\n")
        if not proc.wait_for(lambda: child.poll() is not None or self.answers(1.0), wait, 0.5):
            raise StackError(f"Kafka did not answer within {wait:.0f}s; see {self.log}")
        if child.poll() is not None:
            raise StackError(f"Kafka exited with code {child.returncode}; see {self.log}")
        return "formatted and started" if formatted else "started"

    def down(self) -> str:
        pid = self.running_pid()
        kill_orphans(self.root)  # a broker whose pid file was lost
        if not pid:
            return "not running"
        proc.stop_pid(pid, timeout=60)
        self.pid_file.unlink(missing_ok=True)
        return "stopped"


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

