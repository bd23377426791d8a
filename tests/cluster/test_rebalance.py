"""Six consumer processes on twelve partitions, members leaving and joining every few seconds.

The group uses cooperative rebalancing (``cooperative-sticky``): a member that joins or
leaves moves only the partitions that must move, and the others keep consuming. The
test checks exactly-once through eight membership changes, checks that each change moved
few partitions (stickiness), and measures the pause each rebalance caused: for every
change, the longest time any partition went without progress across it (while the
producer kept every partition fed), next to the median partition's gap.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from insights.stack.kafka import LocalKafka
from tests.cluster.load import Ingest, probe_config, tail
from tests.consumers.procs import terminate

# the cluster starts inside the first test's time, and three JVMs share the machine: 15 min
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

PARTITIONS = 12
MEMBERS = 6
CHANGES = 8
EVERY_S = 5.0


@dataclass
class Sampler:
    """Polls the group's stored offsets and its membership from a thread."""

    ingest: Ingest
    offsets: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    #: (time, member id -> partitions) whenever the membership or assignment changed
    assignments: list[tuple[float, dict[str, frozenset[int]]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    #: the group's state at the last describe, and the last error the sampler met: what a
    #: failed wait reports, so a membership that never changed can be told from a sampler
    #: that stopped seeing it
    state: str = ""
    described_at: float = 0.0
    error: str = ""

    def run(self) -> None:
        admin = AdminClient(probe_config(self.ingest.settings))
        pg: psycopg.Connection | None = None
        last_describe = 0.0
        while not self.stop.is_set():
            try:
                if pg is None or pg.closed:
                    pg = psycopg.connect(self.ingest.pg_dsn, autocommit=True)
                describe = time.monotonic() - last_describe >= 0.5
                if describe:
                    last_describe = time.monotonic()
                self._sample(admin, pg, describe)
            except Exception as exc:  # a busy coordinator or a dropped connection: sample again
                self.error = f"{time.monotonic():.1f}: {type(exc).__name__}: {exc}"
                if pg is not None:
                    pg.close()
                    pg = None
            time.sleep(0.2)
        if pg is not None:
            pg.close()

    def _sample(self, admin: AdminClient, pg: psycopg.Connection, describe: bool) -> None:
        group = self.ingest.group
        now = time.monotonic()
        rows = pg.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
        ).fetchall()
        self.offsets.append((now, dict(rows)))
        if not describe:
            return
        desc = admin.describe_consumer_groups([group])[group].result(timeout=5)
        self.state, self.described_at = str(desc.state), now
        current = {
            m.member_id: frozenset(tp.partition for tp in m.assignment.topic_partitions)
            for m in desc.members
        }
        if not self.assignments or self.assignments[-1][1] != current:
            self.assignments.append((now, current))

    def advances(self) -> dict[int, list[float]]:
        """Partition -> the times its stored offset was seen to move."""
        moved: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
        previous: dict[int, int] = {}
        for at, offsets in self.offsets:
            for p, o in offsets.items():
                if o != previous.get(p):
                    moved[p].append(at)
            previous = offsets
        return moved


def gap_across(times: list[float], at: float) -> float | None:
    """The time between the last advance at or before ``at`` and the first one after it."""
    before = [t for t in times if t <= at]
    after = [t for t in times if t > at]
    if not before or not after:
        return None
    return after[0] - before[-1]


def members(sampler: Sampler) -> int:
    return len(sampler.assignments[-1][1]) if sampler.assignments else 0


def wait_members(sampler: Sampler, ingest: Ingest, count: int, timeout: float = 120, left: str = "") -> None:
    """Wait until the group has ``count`` members; ``left`` names a member that just left,
    whose log's end a failure shows (did it leave the group, or only exit?)."""
    deadline = time.monotonic() + timeout
    while members(sampler) != count:
        ingest.assert_running()
        assert time.monotonic() < deadline, (
            f"the group never had {count} members: {members(sampler)} (state {sampler.state}, "
            f"described {time.monotonic() - sampler.described_at:.0f} s ago, "
            f"last sampler error {sampler.error or 'none'})"
            + (f"; {left}'s log ends: {tail(ingest.logs / f'{left}.log')}" if left else "")
        )
        time.sleep(0.2)


def test_members_joining_and_leaving_every_few_seconds_lose_and_duplicate_nothing(
    cluster: LocalKafka, settings: Settings, pg_dsn: str, tmp_path: Path, record_property
) -> None:
    ingest = Ingest(settings, pg_dsn, tmp_path, partitions=PARTITIONS, consumers=MEMBERS, products=240, rate=200.0)
    ingest.start()
    sampler = Sampler(ingest)
    sampling = threading.Thread(target=sampler.run, daemon=True)
    sampling.start()
    changes: list[tuple[float, str]] = []
    try:
        ingest.wait_stored(600, timeout=180)
        wait_members(sampler, ingest, MEMBERS)
        leaving = 0
        for i in range(CHANGES):
            if i % 2 == 0:  # a member leaves cleanly (SIGTERM: finish the batch, leave the group)
                name = f"scrape-{leaving}"
                leaving += 1
                changes.append((time.monotonic(), f"leave {name}"))
                assert terminate(ingest.procs.pop(name), 60) == 0
                wait_members(sampler, ingest, MEMBERS - 1, left=name)
            else:  # a new process joins (its start-up is not the group's pause: wait for it)
                name = f"scrape-new-{i}"
                ingest.start_consumer(name)
                wait_members(sampler, ingest, MEMBERS)
                changes.append((sampler.assignments[-1][0], f"join {name}"))
            time.sleep(EVERY_S)
        churn_ended = time.monotonic()
        ingest.finish()
    finally:
        sampler.stop.set()
        sampling.join(10)
        ingest.stop_all()

    # --- what each rebalance cost -------------------------------------------------------
    moved_at = sampler.advances()
    snapshots = [(at, a) for at, a in sampler.assignments if at < churn_ended]
    report = []
    for (at, what), (until, _) in zip(changes, [*changes[1:], (churn_ended, "")], strict=True):
        before = next((a for t, a in reversed(snapshots) if t < at), None)
        after = next((a for t, a in reversed(snapshots) if t < until), None)
        # the first change of assignment seen after the membership changed: the rebalance
        started = next((t for t, a in snapshots if t >= at and a != before), at)
        assert before is not None and after is not None
        owner_before = {p: m for m, ps in before.items() for p in ps}
        owner_after = {p: m for m, ps in after.items() for p in ps}
        moved = sorted(p for p in range(PARTITIONS) if owner_before.get(p) != owner_after.get(p))
        gaps = {p: gap_across(moved_at[p], started) for p in range(PARTITIONS)}
        moved_gaps = [g for p, g in gaps.items() if p in moved and g is not None]
        other_gaps = [g for p, g in gaps.items() if p not in moved and g is not None]
        report.append({
            "change": what,
            "members_after": len(after),
            "partitions_moved": moved,
            "pause_of_moved_s": round(max(moved_gaps), 2) if moved_gaps else None,
            "others_median_gap_s": round(statistics.median(other_gaps), 2) if other_gaps else None,
        })
    (tmp_path / "rebalances.json").write_text(json.dumps(report, indent=1))
    print("\nrebalances:", json.dumps(report))
    record_property("rebalances", json.dumps(report))

    assert len(report) == CHANGES
    # sticky and cooperative: a leave moves the leaver's share, a join takes a share;
    # with 5-6 members on 12 partitions a share is 2-3, never the whole assignment
    assert all(1 <= len(r["partitions_moved"]) <= 4 for r in report), report
    pauses = [r["pause_of_moved_s"] for r in report if r["pause_of_moved_s"] is not None]
    assert len(pauses) >= CHANGES // 2, report
    # a clean leave or a join never waits for a session timeout: well under 30 s even here
    assert max(pauses) < 30, report
    # the partitions that did not move kept going while the others changed hands
    assert all(r["others_median_gap_s"] is not None for r in report), report
