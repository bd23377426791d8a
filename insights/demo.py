"""The README's main job, end to end on the local stack, printing what happened.

Steps: start the stack, migrate, create the topics, set up CDC and start its reader,
seed the alert rules (the simulated alerting service's, and rules the engine evaluates
on the products the generator will scrape), produce a realistic stream (with duplicates,
out-of-order events and a few poison records), run the consumers as real processes until
they are idle, create competitive groups on the stored products, wait until the CDC
reader has published every committed change, fold the changes into the summaries and
the price history, run the alert-rule engine and store its alerts, rank the groups, and
report row counts, dead letters, summaries, the alerts the rules fired, the groups'
positions and a PNG price chart.

Long-running applications run as the same ``insights`` processes an operator
would start; the demo only orchestrates them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from core.errors import InsightsError
from core.settings import Settings
from insights.db import migrations
from consumers.rules.conditions import validate_fields
from insights.chart import price_chart
from insights.generate import alerts as alert_generator
from insights.generate import groups as group_generator
from insights.generate.run import Plan, publish
from insights.stack import LocalStack
from streams.admin import admin_client, ensure_topics
from streams.kafka import producer_config
from streams.pg import connect
from streams.replay import dlq_depths
from streams.topics import declared_topics, event_topics


class DemoError(InsightsError):
    """A demo step did not do what it promised."""


@dataclass
class DemoRun:
    settings: Settings
    report: Callable[[str], None]
    products: int = 200
    scrapes: int = 20_000
    alerts: int = 2_000
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        path = self.settings.stack.dir / "demo"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def step(self, title: str, action: Callable[[], str]) -> None:
        started = time.perf_counter()
        result = action()
        self.report(f"[{time.perf_counter() - started:6.1f}s] {title}: {result}")

    # --- processes -------------------------------------------------------------------
    def _cli(self, *args: str, log: str, background: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, "INSIGHTS_METRICS_PORT": "0", "INSIGHTS_PG_DSN": self.settings.pg.dsn}
        with open(self.log_dir / log, "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "insights", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        if background:
            self.background.append(child)
        return child

    def _finish(self, child: subprocess.Popen[bytes], what: str, timeout: float = 600) -> None:
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.terminate()
            raise DemoError(f"{what} did not finish within {timeout:.0f}s; see {self.log_dir}") from None
        if code != 0:
            raise DemoError(f"{what} exited with {code}; see {self.log_dir}")

    def stop_background(self) -> None:
        for child in self.background:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.background:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        self.background.clear()

    def _conn(self) -> psycopg.Connection:
        return connect(self.settings.pg, "demo")

    # --- steps -----------------------------------------------------------------------
    def stack_up(self) -> str:
        stack = LocalStack(self.settings)
        result = stack.up()
        # INSIGHTS_PG_DSN not set: the demo runs on the stack it started, so it uses the
        # stack's own DSN (on a TLS stack, the default, the plain default DSN has neither the
        # CA nor the passfile and would be refused)
        if "dsn" not in self.settings.pg.model_fields_set:
            self.settings = self.settings.replace(pg_dsn=stack.postgres.dsn)
        return ", ".join(f"{k} {v}" for k, v in result.items())

    def migrate(self) -> str:
        applied = migrations.migrate(self.settings.pg.conninfo())
        return f"{len(applied)} migrations applied" if applied else "schema up to date"

    def topics(self) -> str:
        specs = declared_topics(self.settings)
        report = ensure_topics(self.settings, specs)
        drift = f", drift on {report.drifted}" if report.drifted else ""
        return f"{len(specs)} declared, {len(report.created)} created{drift}"

    def cdc_start(self) -> str:
        self._finish(self._cli("cdc", "setup", log="cdc-setup.log"), "insights cdc setup", 120)
        self._cli("cdc", "run", log="cdc.log", background=True)
        return "publication and slot ready; reader streaming in the background"

    def alert_rules(self) -> str:
        rules = alert_generator.alert_rules(12)
        with self._conn() as conn:
            for rule in rules:
                conn.execute(
                    """
                    INSERT INTO alert_rules (id, name, rule_type, target_type, target_id, conditions, severity,
                                             is_active)
                    OVERRIDING SYSTEM VALUE
                    VALUES (%s, %s, %s, 'product', '*', %s, %s, false)
                    ON CONFLICT (id) DO UPDATE SET is_active = false
                    """,
                    (rule.id, rule.name, rule.rule_type, Jsonb({"threshold": str(rule.threshold)}), rule.severity),
                )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('alert_rules', 'id'), GREATEST(max(id), 1)) FROM alert_rules"
            )
        # the simulated alerting service's rules: its alerts name them; the engine does not
        # evaluate them (inactive: their conditions are that service's, not docs/alert-rules.md's)
        return f"{len(rules)} rules of the simulated alerting service present"

    SEED = 7

    def engine_rules(self) -> str:
        """Rules the engine evaluates, on products of the catalogue the generator will scrape."""
        products = group_generator.catalogue(self.products, self.SEED)
        rules = [validate_fields(r) for r in group_generator.watch_rules(products)]
        with self._conn() as conn:
            for rule in rules:
                conn.execute(
                    "INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions, severity) "
                    "SELECT %s, %s, %s, %s, %s, %s WHERE NOT EXISTS "
                    "(SELECT 1 FROM alert_rules WHERE name = %s AND is_active)",
                    (rule.name, rule.rule_type, rule.target_type, rule.target_id, Jsonb(rule.conditions),
                     rule.severity, rule.name),
                )
        return f"{len(rules)} rules on {len(rules) // 2} products (price drop >= 10 %, stock-out)"

    def groups(self) -> str:
        """Competitive groups per category of the stored products, and a rank rule on each."""
        with self._conn() as conn:
            products = conn.execute("SELECT asin, category FROM products ORDER BY asin").fetchall()
            defs = group_generator.competitive_groups(products)
            for g in defs:
                found = conn.execute("SELECT id FROM competitive_groups WHERE name = %s", (g.name,)).fetchone()
                if found is None:
                    found = conn.execute(
                        "INSERT INTO competitive_groups (name, main_product_asin, industry_category) "
                        "VALUES (%s, %s, %s) RETURNING id", (g.name, g.main_asin, g.category),
                    ).fetchone()
                    conn.cursor().executemany(
                        "INSERT INTO competitive_group_members (group_id, competitor_asin) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING", [(found[0], a) for a in g.members],
                    )
                    rule = validate_fields({"name": f"{g.name}: rank past 1000", "rule_type": "rank_change",
                                            "target_type": "group", "target_id": str(found[0]),
                                            "conditions": {"category": g.category, "rank_worse_than": 1000}})
                    conn.execute(
                        "INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions, severity) "
                        "VALUES (%s, %s, %s, %s, %s, 'low')",
                        (rule.name, rule.rule_type, rule.target_type, rule.target_id, Jsonb(rule.conditions)),
                    )
        return f"{len(defs)} competitive groups (one per category) with a rank rule each"

    def produce(self) -> str:
        scrape = publish(
            self.settings,
            Plan("scrape", products=self.products, events=self.scrapes, seed=7, duplicates=0.05, out_of_order=0.1),
        )
        alerts = publish(self.settings, Plan("alerts", products=self.products, events=self.alerts, seed=7))
        # poison: bytes no schema can read, on the scrape topic
        producer = Producer(producer_config(self.settings.kafka, "events"))
        for i in range(3):
            producer.produce(scrape.topic, key=f"poison-{i}".encode(), value=b"\x00not avro at all")
        producer.flush(30)
        return (
            f"{scrape.events} scrapes (+{scrape.duplicates} duplicates, {scrape.reordered} reordered, "
            f"+3 corrupt) and {alerts.events} alerts"
        )

    def consume(self) -> str:
        lines = []
        for sink in ("scrape", "alerts"):
            child = self._cli("consume", sink, "--exit-when-idle", "5", log=f"consume-{sink}.log")
            self._finish(child, f"insights consume {sink}")
            lines.append(self._closing_line(f"consume-{sink}.log", sink))
        return "; ".join(lines)

    def _closing_line(self, log: str, name: str) -> str:
        """The process's own closing sentence (``<name>: stopped cleanly: …``), unwrapped."""
        text = (self.log_dir / log).read_text()
        start = text.rfind(f"{name}: ")
        return " ".join(text[start:].split()) if start >= 0 else f"{name}: done"


    def cdc_caught_up(self) -> str:
        with self._conn() as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn, confirmed_flush_lsn FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (target, self.settings.cdc.slot_name),
                ).fetchone()
                if row and row[0]:
                    return f"slot {self.settings.cdc.slot_name} confirmed up to {row[1]} (target {target})"
                time.sleep(1)
        raise DemoError(f"the CDC reader did not reach {target} in time; see {self.log_dir / 'cdc.log'}")

    def summaries(self) -> str:
        child = self._cli("consume", "summaries", "--exit-when-idle", "5", log="consume-summaries.log")
        self._finish(child, "insights consume summaries")
        return self._closing_line("consume-summaries.log", "summaries")

    def rules_engine(self) -> str:
        """The engine over the CDC topics, then the alerts consumer again to store what it published."""
        child = self._cli("consume", "rules", "--exit-when-idle", "5", log="consume-rules.log")
        self._finish(child, "insights consume rules")
        child = self._cli("consume", "alerts", "--exit-when-idle", "5", log="consume-alerts-engine.log")
        self._finish(child, "insights consume alerts")
        return self._closing_line("consume-rules.log", "rules")

    def drained(self) -> str:
        """What the rules and positions steps wrote (alerts, trigger counts, analyses) went
        through CDC too: the rules engine and the summaries apply it now, so the demo ends
        with nothing waiting downstream for `insights status` to flag (issue 10)."""
        self.cdc_caught_up()
        for sink in ("rules", "summaries"):
            child = self._cli("consume", sink, "--exit-when-idle", "3", log=f"consume-{sink}-final.log")
            self._finish(child, f"insights consume {sink}")
        return "rules engine and summaries caught up with the alerts and analyses written since"

    def competitive(self) -> str:
        child = self._cli("consume", "competitive", "--exit-when-idle", "5", log="consume-competitive.log")
        self._finish(child, "insights consume competitive")
        return self._closing_line("consume-competitive.log", "competitive")

    def fired_alerts(self) -> str:
        with self._read_conn() as conn:
            per_type = conn.execute(
                "SELECT alert_type, count(*) FROM alerts WHERE metadata ->> 'source' = 'rules-engine' "
                "GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
            latest = conn.execute(
                "SELECT a.triggered_at, a.title FROM alerts a "
                "WHERE a.metadata ->> 'source' = 'rules-engine' ORDER BY a.triggered_at DESC LIMIT 5"
            ).fetchall()
        if not per_type:
            raise DemoError("the rules created up front fired no alert; see consume-rules.log")
        lines = [f"{at:%Y-%m-%d %H:%M} {title}" for at, title in latest]  # the title starts with the rule's name
        return ", ".join(f"{t}={n}" for t, n in per_type) + "\n    " + "\n    ".join(lines)

    def positions(self) -> str:
        with self._read_conn() as conn:
            rows = conn.execute(
                "SELECT g.name, p.members, p.price_rank, p.rating_rank, p.bsr_rank FROM competitive.positions p "
                "JOIN competitive_groups g ON g.id = p.group_id ORDER BY g.name LIMIT 5"
            ).fetchall()
            analyses = conn.execute("SELECT count(*) FROM competitive_analyses").fetchone()[0]
        lines = [f"{name}: price #{pr}, rating #{rr}, BSR #{br} of {m}" for name, m, pr, rr, br in rows]
        return f"{analyses} analyses written\n    " + "\n    ".join(lines)

    def chart(self) -> str:
        path = self.log_dir / "price-chart.png"
        with self._read_conn() as conn:
            shown = price_chart(conn, path)
        return f"{path} ({', '.join(f'{a} -{d:.0%} {n} alert(s)' for a, d, n in shown)})"

    def summaries_match_view(self) -> str:
        """The CDC-fed summaries against the seed's materialized view, refreshed once here."""
        with self._conn() as conn:
            conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY product_summary_view")
            total, differ = conn.execute(
                """
                SELECT count(*),
                       count(*) FILTER (WHERE s.asin IS NULL
                                        OR s.current_price IS DISTINCT FROM v.current_price
                                        OR s.min_price_30d IS DISTINCT FROM v.min_price_30d
                                        OR s.max_price_30d IS DISTINCT FROM v.max_price_30d)
                FROM product_summary_view v
                LEFT JOIN summaries.product_summary s USING (asin)
                """
            ).fetchone()
        if differ:
            raise DemoError(f"{differ} of {total} CDC-fed summaries differ from product_summary_view")
        return f"all {total} CDC-fed summaries equal product_summary_view after a REFRESH"

    def _read_conn(self) -> psycopg.Connection:
        """The report reads through INSIGHTS_PG_READ_DSN, once the replica replayed the demo's writes."""
        from insights.ops.routing import read_after_writes

        return read_after_writes(self.settings, "demo-report")

    def counts(self) -> str:
        with self._read_conn() as conn:
            parts = []
            for table in ("products", "product_snapshots", "product_features", "alerts"):
                n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # constant names
                parts.append(f"{table}={n}")
            partitions = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'product_snapshots'::regclass"
            ).fetchone()[0]
            parts.append(f"snapshot partitions={partitions}")
        return ", ".join(parts)

    def dead_letters(self) -> str:
        admin = admin_client(self.settings)
        dlqs = {s.name: s.partitions for s in event_topics(self.settings) if s.name.endswith(".dlq")}
        # pending = not yet replayed or purged (what `insights status` grades); the log keeps
        # every dead letter ever written, earlier demo runs' included
        depths = dlq_depths(admin, self.settings.kafka, dlqs)
        return ", ".join(f"{t}={d.depth} pending ({d.log_end} ever written)" for t, d in sorted(depths.items()))

    def show_summaries(self) -> str:
        with self._read_conn() as conn:
            rows = conn.execute(
                """
                SELECT asin, current_price, min_price_30d, max_price_30d, round(avg_price_30d, 2), alerts_total
                FROM summaries.product_summary
                WHERE current_price IS NOT NULL
                ORDER BY alerts_total DESC, asin
                LIMIT 5
                """
            ).fetchall()
        lines = [f"{a}: now {p}, 30d {lo}..{hi} avg {avg}, {n} alerts" for a, p, lo, hi, avg, n in rows]
        return "\n    " + "\n    ".join(lines) if lines else "no summaries yet"


def run_demo(settings: Settings, report: Callable[[str], None]) -> None:
    demo = DemoRun(settings, report)
    try:
        demo.step("local stack", demo.stack_up)
        demo.step("migrations", demo.migrate)
        demo.step("topics", demo.topics)
        demo.step("cdc", demo.cdc_start)
        demo.step("alert rules", demo.alert_rules)
        demo.step("rules for the engine", demo.engine_rules)
        demo.step("produced", demo.produce)
        demo.step("consumed", demo.consume)
        demo.step("competitive groups", demo.groups)
        demo.step("cdc published", demo.cdc_caught_up)
        demo.step("summarised", demo.summaries)
        demo.step("rules evaluated", demo.rules_engine)
        demo.step("positions ranked", demo.competitive)
        demo.step("downstream drained", demo.drained)
        demo.step("summaries check", demo.summaries_match_view)
        demo.step("rows", demo.counts)
        demo.step("dead letters", demo.dead_letters)
        demo.step("top products", demo.show_summaries)
        demo.step("alerts the rules fired", demo.fired_alerts)
        demo.step("competitive positions", demo.positions)
        demo.step("price chart", demo.chart)
    finally:
        demo.stop_background()
