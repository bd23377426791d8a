"""Benchmark (issue 17's "Done when"): the project's consumer with 1, 2 and 3 processes, a
server-side COPY of the same rows and a naive consumer, in interleaved rounds of one run.

    PYTHONPATH=. .venv/bin/python bench/ingest_compare.py [--events 20000] [--rounds 2] [--write]

1. Produces ``--events`` realistic ProductScraped events (insights.generate.Market) once to
   a fresh ``--partitions`` topic (not timed).
2. Each round runs every variant once, in an order rotated from round to round (the host's
   speed drifts; a ratio is taken within a round), each into a freshly migrated database:
   - ``project xN``: N real ``insights consume scrape --exit-when-idle`` processes in one
     new group (the production code, as an operator starts it);
   - ``naive``: a consumer written plainly in this file (``naive_worker``): confluent-kafka,
     fastavro, per batch one transaction of ``executemany`` upserts (products newest-wins,
     snapshots do-nothing, features newest-wins), then a synchronous Kafka commit;
   - ``server COPY``: a server-side ``COPY ... FROM`` file of the rows the first project run
     stored, into a database that also has the three indexes 0024 dropped (the seed's
     indexes, the baseline the issue's ratios use).
3. Timing as bench/scale_out.py: from the first stored batch to the last, counting only the
   events stored after the first one seen (process start-up and the first batch's decode
   are not timed). Backend CPU is the backends' /proc counters over the same window, per
   event stored in it. Client CPU of the project's consumers is their whole-life CPU
   (os.wait4) less that of as many processes starting and idling out on an empty topic
   (measured each round), per event; peak RSS is each process's VmHWM (read from /proc while it lives).
4. Prints, per variant, the median events/s, the range, CPU per event, peak RSS and the
   ratios to the COPY and to the naive consumer of the same round, with load averages;
   ``--write`` replaces the ``## Ingest comparison`` section of BENCHMARKS.md.

Everything it creates (databases, topic, DLQ topic) is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from consume_scrape import TABLES, create_database, drop_database, machine_facts, produce_events  # noqa: E402

from core.paths import REPO_ROOT, SCHEMAS_DIR  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from streams.pg.partitions import ensure_partitions_for  # noqa: E402
from streams.topics import dlq_name  # noqa: E402

INSIGHTS = str(Path(sys.executable).with_name("insights"))
#: how a consumer process is started (bench/ab_consumer.py points it at another tree's code)
CONSUMER_ARGV = [INSIGHTS]
TICK = os.sysconf("SC_CLK_TCK")
#: the seed's indexes that ddl/0024_hot_upserts.sql dropped; the COPY baseline keeps them
SEED_INDEXES = (
    "CREATE INDEX idx_products_last_updated ON products (last_updated_at)",
    "CREATE INDEX idx_products_active_updated ON products (last_updated_at) WHERE is_active = true",
    "CREATE INDEX idx_features_extracted_at ON product_features (extracted_at)",
)
NAIVE_APP = "insights-consume-naive"  # matched by the backend CPU sampler, like the project's


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process. Not ``ru_maxrss`` of os.wait4: Linux carries the parent's
    peak over fork and exec into the child's (a 400 MB parent's ``python -c pass`` child
    reports 411 MB; its own VmHWM is 11)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Window:
    """Progress samples of one run: (time, events stored, client CPU s, backend CPU s)."""

    samples: list[tuple[float, int, float, float]] = field(default_factory=list)

    def result(self, events: int) -> dict[str, float]:
        stored = [s for s in self.samples if s[1] > 0]
        if not stored:
            raise SystemExit("nothing was stored")
        first = stored[0]
        # the first sample at the final count: the last batch's commit
        last = next(s for s in stored if s[1] == stored[-1][1])
        if last[1] < events:
            raise SystemExit(f"stored {last[1]} of {events} events")
        if first[1] >= events:
            raise SystemExit(f"all {events} events were stored in the first batch seen: nothing to time; raise --events")
        counted = last[1] - first[1]
        seconds = last[0] - first[0]
        return {
            "rate": counted / seconds, "seconds": seconds,
            "client_us": (last[2] - first[2]) / counted * 1e6,
            "backend_us": (last[3] - first[3]) / counted * 1e6,
        }


class Sampler:
    """CPU of the client processes and of their PostgreSQL backends (same machine), summed;
    a process that exited keeps its last reading."""

    def __init__(self, admin_dsn: str, dbname: str, app_like: str) -> None:
        self._admin = psycopg.connect(admin_dsn, autocommit=True)
        self._dbname, self._app_like = dbname, app_like
        self._client: dict[int, float] = {}
        self._backend: dict[int, float] = {}
        self._next_lookup = 0.0

    def read(self, client_pids: list[int]) -> tuple[float, float]:
        for pid in client_pids:
            value = cpu_seconds(pid)
            if value is not None:
                self._client[pid] = value
        now = time.monotonic()
        if now >= self._next_lookup:  # new backends appear rarely: look them up twice a second
            self._next_lookup = now + 0.5
            for (pid,) in self._admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name LIKE %s",
                (self._dbname, self._app_like),
            ):
                self._backend.setdefault(pid, 0.0)
        for pid in list(self._backend):
            value = cpu_seconds(pid)
            if value is not None:
                self._backend[pid] = value
        return sum(self._client.values()), sum(self._backend.values())

    def close(self) -> None:
        self._admin.close()


def exited(p: subprocess.Popen[bytes]) -> bool:
    """Has ``p`` ended? Without reaping it (``Popen.poll`` would, and its CPU usage with it:
    wait_all reads that from ``os.wait4``; a member that idled out early was reaped by poll)."""
    try:
        return os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float,
             peaks: dict[int, float] | None = None) -> list[dict[str, float]]:
    """Reap every process (terminate after ``timeout``): exit code, CPU and peak RSS of each
    (VmHWM read while it lives: the last reading before its exit)."""
    deadline = time.monotonic() + timeout
    out: dict[int, dict[str, float]] = {}
    peaks = {} if peaks is None else peaks  # readings taken earlier (a member may end before this starts)
    while len(out) < len(procs):
        for p in procs:
            if p.pid in out:
                continue
            peak = peak_rss_mb(p.pid)  # read before reaping: a zombie has no VmHWM
            if peak is not None:
                peaks[p.pid] = max(peak, peaks.get(p.pid, 0.0))
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                out[p.pid] = {"rc": p.returncode, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": peaks.get(p.pid, 0.0)}
        if time.monotonic() > deadline:
            for p in procs:
                if p.pid not in out:
                    p.terminate()
            deadline = time.monotonic() + 30
        time.sleep(0.05)
    return [out[p.pid] for p in procs]


def stored_offsets(conn: psycopg.Connection[Any], group: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = %s", (group,)
    ).fetchone()
    return int(row[0]) if row else 0


def child_env(settings: Settings, dsn: str) -> dict[str, str]:
    parts = conninfo_to_dict(dsn)
    parts.pop("password", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    env.update(settings.replace(pg_dsn=make_conninfo(**parts)).to_env())
    env["INSIGHTS_LOG_JSON"] = "true"
    return env


def spawn(settings: Settings, dsn: str, group: str, processes: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    env = child_env(settings, dsn)
    return [
        subprocess.Popen(
            [*CONSUMER_ARGV, "consume", "scrape", "--group", group, "--exit-when-idle", "3"],
            env=env, stdout=open(logs / f"{group}-{i}.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        for i in range(processes)
    ]


def idle_cpu(settings: Settings, admin_dsn: str, processes: int, logs: Path) -> float:
    """CPU seconds ``processes`` consumers spend starting, joining and idling out on an empty
    topic: what project_run subtracts from their whole-life CPU. (The window of the rate does
    not suit a pipelined client: at its start each process has decoded one batch ahead.)"""
    db = f"cmp_idle_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, db)
    try:
        procs = spawn(settings, dsn, f"bench-idle-{uuid.uuid4().hex[:8]}", processes, logs)
        reaped = wait_all(procs, 120)
    finally:
        drop_database(admin_dsn, db)
    if any(r["rc"] != 0 for r in reaped):
        raise SystemExit(f"an idle consumer exited with {[r['rc'] for r in reaped]}; logs in {logs}")
    return sum(r["cpu"] for r in reaped)


def project_run(settings: Settings, admin_dsn: str, db: str, dsn: str, events: int, processes: int,
                logs: Path, idle: float) -> dict[str, Any]:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    procs = spawn(settings, dsn, group, processes, logs)
    sampler = Sampler(admin_dsn, db, "insights-consume%")
    window = Window()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 900
            peaks: dict[int, float] = {}
            while True:
                for p in procs:
                    peak = peak_rss_mb(p.pid)
                    if peak is not None:
                        peaks[p.pid] = max(peak, peaks.get(p.pid, 0.0))
                seen = stored_offsets(conn, group)
                window.samples.append((time.perf_counter(), seen, *sampler.read([p.pid for p in procs])))
                if seen >= events:
                    break
                if time.monotonic() > deadline or all(exited(p) for p in procs):
                    raise SystemExit(f"{processes} consumer(s) stored {seen} of {events}; logs in {logs}")
                time.sleep(0.05)
        reaped = wait_all(procs, 60, peaks)
    finally:
        sampler.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(r["rc"] != 0 for r in reaped):
        raise SystemExit(f"a consumer exited with {[r['rc'] for r in reaped]}; logs in {logs}")
    out = window.result(events)
    # client: whole-life CPU less start-up and idling (idle_cpu), over every event
    out["client_us"] = (sum(r["cpu"] for r in reaped) - idle) / events * 1e6
    return {**out, "rss_mb": [r["rss_mb"] for r in reaped]}


# --- the naive consumer: what a hand-written one typically looks like ---------------------

NAIVE_PRODUCTS = """
INSERT INTO products (asin, title, brand, category, manufacturer, model, dimensions, weight,
                      first_tracked_at, last_updated_at, last_scraped_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)
ON CONFLICT (asin) DO UPDATE SET
    title = EXCLUDED.title, brand = EXCLUDED.brand, category = EXCLUDED.category,
    manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model, dimensions = EXCLUDED.dimensions,
    weight = EXCLUDED.weight, last_updated_at = now(), last_scraped_at = EXCLUDED.last_scraped_at
WHERE products.last_scraped_at IS NULL OR EXCLUDED.last_scraped_at > products.last_scraped_at
"""
NAIVE_SNAPSHOTS = """
INSERT INTO product_snapshots (event_id, asin, title, price, buybox_price, rating, review_count, bsr_data,
                               availability_status, bullet_points, product_description, images, variations,
                               scraped_at, raw_data)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (asin, scraped_at) DO NOTHING
"""
NAIVE_FEATURES = """
INSERT INTO product_features (asin, feature_category, feature_name, feature_value, confidence_score,
                              extracted_at, extraction_method)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (asin, feature_category, feature_name) DO UPDATE SET
    feature_value = EXCLUDED.feature_value, confidence_score = EXCLUDED.confidence_score,
    extracted_at = EXCLUDED.extracted_at, extraction_method = EXCLUDED.extraction_method
WHERE EXCLUDED.extracted_at > product_features.extracted_at
"""


def naive_worker(topic: str, group: str, dsn: str, kafka: dict[str, Any], events: int, batch_size: int) -> None:
    """Runs in its own process; prints one JSON line per committed batch."""
    import fastavro
    from confluent_kafka import Consumer
    from psycopg.types.json import Jsonb

    schema = fastavro.parse_schema(json.loads((SCHEMAS_DIR / "product_scraped" / "v2.avsc").read_text()))
    consumer = Consumer({**kafka, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    done = 0
    with psycopg.connect(dsn, application_name=NAIVE_APP) as conn:
        while done < events:
            messages = consumer.consume(batch_size, 1.0)
            if not messages:
                continue
            products, snapshots, features = [], [], []
            for msg in messages:
                if msg.error():
                    continue
                r = fastavro.schemaless_reader(BytesIO(msg.value()[10:]), schema, None)  # single-object header
                dims = r["dimensions"]
                products.append((r["asin"], r["title"], r["brand"], r["category"], r["manufacturer"], r["model"],
                                 Jsonb({k: (float(v) if k != "unit" else v.lower()) for k, v in dims.items() if v is not None})
                                 if dims else None, r["weight"], r["scraped_at"], r["scraped_at"]))
                snapshots.append((r["event_id"], r["asin"], r["title"], r["price"], r["buybox_price"], r["rating"],
                                  r["review_count"], Jsonb(r["bsr"]), (r["availability_status"] or "unknown").lower(), r["bullet_points"],
                                  r["product_description"], Jsonb(r["images"]), Jsonb(r["variations"]), r["scraped_at"],
                                  Jsonb({"marketplace": r["marketplace"], "scraper_id": r["scraper_id"],
                                         "scraper_version": r["scraper_version"]})))
                for f in r["features"]:
                    features.append((r["asin"], f["feature_category"], f["feature_name"], f["feature_value"],
                                     f["confidence_score"], r["scraped_at"], (f["extraction_method"] or "parser").lower()))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(NAIVE_PRODUCTS, products)
                cur.executemany(NAIVE_SNAPSHOTS, snapshots)
                cur.executemany(NAIVE_FEATURES, features)
            consumer.commit(asynchronous=False)
            done += len(messages)
            print(json.dumps({"stored": done}), flush=True)
    consumer.close()


def naive_run(settings: Settings, admin_dsn: str, db: str, dsn: str, topic: str, events: int,
              batch_size: int) -> dict[str, Any]:
    group = f"bench-naive-{uuid.uuid4().hex[:8]}"
    env = child_env(settings, dsn)
    parts = conninfo_to_dict(dsn)
    parts.pop("password", None)
    # the worker's settings go in the environment, not argv: the Kafka config may hold a SASL password
    env["BENCH_NAIVE_WORKER"] = json.dumps({
        "topic": topic, "group": group, "dsn": make_conninfo(**parts),
        "kafka": settings.kafka.client_config(), "events": events, "batch_size": batch_size})
    proc = subprocess.Popen([sys.executable, __file__, "--naive-worker"], env=env, stdout=subprocess.PIPE)
    seen = [0]

    def follow() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen[0] = json.loads(line)["stored"]

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    sampler = Sampler(admin_dsn, db, NAIVE_APP)
    window = Window()
    try:
        deadline = time.monotonic() + 1800
        while True:
            now_seen = seen[0]
            window.samples.append((time.perf_counter(), now_seen, *sampler.read([proc.pid])))
            if now_seen >= events:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the naive consumer stored {now_seen} of {events} (exit {proc.poll()})")
            time.sleep(0.05)
        reaped = wait_all([proc], 60)
    finally:
        sampler.close()
        if proc.poll() is None:
            proc.kill()
    return {**window.result(events), "rss_mb": [r["rss_mb"] for r in reaped]}


# --- the server-side COPY baseline ---------------------------------------------------------

def export_rows(dsn: str, workdir: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as src:
        for table, cols in TABLES.items():
            columns = sql.SQL(", ").join(map(sql.Identifier, cols))
            src.execute(sql.SQL("COPY (SELECT {} FROM {}) TO {}").format(
                columns, sql.Identifier(table), sql.Literal(str(workdir / f"{table}.copy"))))
        stamps = [row[0] for row in src.execute("SELECT DISTINCT date_trunc('day', scraped_at) FROM product_snapshots")]
    (workdir / "stamps.json").write_text(json.dumps([s.isoformat() for s in stamps]))


def copy_run(dsn: str, workdir: Path, events: int) -> dict[str, Any]:
    stamps = [datetime.fromisoformat(s) for s in json.loads((workdir / "stamps.json").read_text())]
    with psycopg.connect(dsn, autocommit=True) as dst:
        for statement in SEED_INDEXES:
            dst.execute(statement)
        ensure_partitions_for(dst, "product_snapshots", stamps)  # made before the clock starts
        backend_pid = dst.info.backend_pid
        cpu_before = cpu_seconds(backend_pid) or 0.0
        started = time.perf_counter()
        with dst.transaction():
            for table, cols in TABLES.items():
                columns = sql.SQL(", ").join(map(sql.Identifier, cols))
                dst.execute(sql.SQL("COPY {} ({}) FROM {}").format(
                    sql.Identifier(table), columns, sql.Literal(str(workdir / f"{table}.copy"))))
        seconds = time.perf_counter() - started
        backend = (cpu_seconds(backend_pid) or 0.0) - cpu_before
        snapshots = int(dst.execute("SELECT count(*) FROM product_snapshots").fetchone()[0])  # type: ignore[index]
    if snapshots != events:
        raise SystemExit(f"the COPY stored {snapshots} snapshots, not {events}")
    return {"rate": snapshots / seconds, "seconds": seconds, "client_us": 0.0, "backend_us": backend / snapshots * 1e6,
            "rss_mb": []}


# --- the run --------------------------------------------------------------------------------

def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in load)


def main() -> None:
    if sys.argv[1:] == ["--naive-worker"]:
        naive_worker(**json.loads(os.environ["BENCH_NAIVE_WORKER"]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--processes", default="1,2,3", help="group sizes of the project's consumer")
    parser.add_argument("--write", action="store_true", help="replace the ## Ingest comparison section of BENCHMARKS.md")
    args = parser.parse_args()
    if args.events < 2 * args.batch_size:
        parser.error("--events must be at least two batches (--batch-size): the first batch seen is not timed")

    base = load_settings()
    admin_dsn = base.pg.conninfo(dbname="postgres")
    tag = uuid.uuid4().hex[:8]
    settings = base.replace(topic_prefix=f"cmp{tag}", batch_size=args.batch_size, batch_wait_ms=100, metrics_port=0)
    topic = settings.kafka.topic("events.product_scraped")
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka.client_config())
    workdir = Path(tempfile.mkdtemp(prefix="insights-compare-"))
    workdir.chmod(0o777)  # the server process (another OS user) writes and reads the COPY files
    logs = workdir / "logs"
    logs.mkdir()
    sizes = [int(n) for n in args.processes.split(",")]
    variants = [f"project x{n}" for n in sizes] + ["naive", "server COPY"]
    # an empty topic of the same shape for idle_cpu
    idle_settings = settings.replace(topic_prefix=f"cmp{tag}idle")
    idle_topic = idle_settings.kafka.topic("events.product_scraped")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    loads: list[tuple[float, float, float]] = [loadavg()]
    started_at = datetime.now(UTC)
    exported = False
    try:
        for name, parts in ((topic, args.partitions), (dlq_name(topic), 1), (idle_topic, args.partitions),
                            (dlq_name(idle_topic), 1)):
            admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
        produce_s = produce_events(settings, topic, args.events, args.products)
        print(f"produced {args.events} events to {args.partitions} partitions in {produce_s:.1f}s "
              f"(load {fmt_load(loadavg())})", flush=True)
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
            if not exported:  # the COPY needs the rows of a project run first
                order = [v for v in order if v != "server COPY"] + ["server COPY"]
                order.insert(0, order.pop(next(i for i, v in enumerate(order) if v.startswith("project"))))
            print(f"round {rnd + 1}/{args.rounds}: {', '.join(order)} (load {fmt_load(loadavg())})", flush=True)
            # start-up CPU of each group size, on an empty topic, this round
            idle = {n: idle_cpu(idle_settings, admin_dsn, n, logs) for n in sizes}
            print(f"  start-up + idle CPU: {', '.join(f'x{n} {v:.2f}s' for n, v in idle.items())}", flush=True)
            for variant in order:
                db = f"cmp_{tag}_{uuid.uuid4().hex[:6]}"
                dsn = create_database(admin_dsn, db)
                try:
                    if variant.startswith("project"):
                        n = int(variant.split("x")[1])
                        out = project_run(settings, admin_dsn, db, dsn, args.events, n, logs, idle[n])
                        if not exported:
                            export_rows(dsn, workdir)
                            exported = True
                    elif variant == "naive":
                        out = naive_run(settings, admin_dsn, db, dsn, topic, args.events, args.batch_size)
                    else:
                        out = copy_run(dsn, workdir, args.events)
                finally:
                    drop_database(admin_dsn, db)
                out["round"] = rnd
                results[variant].append(out)
                rss = f", peak RSS {'/'.join(f'{m:.0f}' for m in out['rss_mb'])} MB" if out["rss_mb"] else ""
                print(f"  {variant:12s} {out['rate']:8,.0f} events/s in {out['seconds']:5.1f}s; CPU per event: client "
                      f"{out['client_us']:4.0f} us, backend {out['backend_us']:4.0f} us{rss} (load {fmt_load(loadavg())})",
                      flush=True)
            loads.append(loadavg())
    finally:
        for future in admin.delete_topics([topic, dlq_name(topic), idle_topic, dlq_name(idle_topic)]).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(args, settings, results, loads, started_at)
    print(text)
    if args.write:
        write_section(text)


def _ratio(results: dict[str, list[dict[str, Any]]], variant: str, to: str) -> list[float]:
    """Per-round ratios of ``variant`` to ``to`` (same round: the host's speed drifts between rounds)."""
    base = {r["round"]: r["rate"] for r in results[to]}
    return [r["rate"] / base[r["round"]] for r in results[variant] if r["round"] in base]


def _med(values: list[float], fmt: str = ",.0f") -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def report(args: argparse.Namespace, settings: Settings, results: dict[str, list[dict[str, Any]]],
           loads: list[tuple[float, float, float]], started_at: datetime) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()
    rows = []
    for variant, runs in results.items():
        rss = [m for r in runs for m in r["rss_mb"] if m > 0]  # 0: ended before it could be read
        rows.append(
            f"| {variant} | {_med([r['rate'] for r in runs])} | {_med([r['client_us'] for r in runs])} | "
            f"{_med([r['backend_us'] for r in runs])} | {max(rss):.0f} MB" if rss else
            f"| {variant} | {_med([r['rate'] for r in runs])} | {_med([r['client_us'] for r in runs])} | "
            f"{_med([r['backend_us'] for r in runs])} | –"
        )
        rows[-1] += (f" | {_med(_ratio(results, variant, 'server COPY'), '.2f')} | "
                     f"{_med(_ratio(results, variant, 'naive'), '.2f')} |")
    return f"""
Measured {started_at:%Y-%m-%d %H:%M} UTC at commit `{rev}` with

    PYTHONPATH=. .venv/bin/python bench/ingest_compare.py --events {args.events} --products {args.products} --partitions {args.partitions} --rounds {args.rounds} --batch-size {args.batch_size} --processes {args.processes}{' --write' if args.write else ''}

Machine: {machine_facts(settings.pg.conninfo(dbname='postgres'))}. Load average (1 / 5 / 15 min) at the start
{fmt_load(loads[0])}, after each round {', '.join(fmt_load(x) for x in loads[1:])}.

{args.rounds} interleaved rounds (order rotated per round), each variant into a fresh database; median
(min–max) over the rounds. Rates count the events stored after the first batch seen. Backend CPU per
event is over the same window (their PostgreSQL backends); client CPU of the project's consumers
is their whole-life CPU less that of the same number of processes starting and idling out on an
empty topic, per event (the naive consumer's is over the rate's window; it does not decode ahead;
the COPY's client does no work). Peak RSS: the largest VmHWM of any one consumer process.
Ratios are taken within a round. `server COPY` keeps the seed's indexes (0024's three included);
`naive` is confluent-kafka + fastavro + `executemany` upserts, one transaction per batch of
{args.batch_size} (`naive_worker` in the bench).

| variant | events/s | client CPU µs/event | backend CPU µs/event | peak RSS / process | ratio to COPY | ratio to naive |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


def write_section(text: str) -> None:
    path = REPO_ROOT / "BENCHMARKS.md"
    current = path.read_text(encoding="utf-8")
    marker = "\n## Ingest comparison\n"
    if marker in current:
        head, rest = current.split(marker, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        current = head.rstrip() + "\n" + tail
    path.write_text(current.rstrip() + "\n" + marker + text.rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
