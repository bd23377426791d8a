"""``insights stack status`` on a three-node stack: a row per node and one for the controller quorum (issue 16, item 1).

The package's cluster is a private stack directory holding only Kafka (PostgreSQL is the
session's, elsewhere), so the command's postgres row says "no" and it exits 1; what is
checked here are the Kafka rows. A node that is down is checked in the SIGKILL test of
test_broker_failures.py, while its victim is down.
"""

from __future__ import annotations

import re

import pytest

from insights.stack.kafka import LocalKafka
from tests.cli.helpers import run_cli
from tests.fix_services import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def test_stack_status_shows_each_node_and_the_controller_quorum(cluster: LocalKafka) -> None:
    # wide enough that rich does not fold the rows (a pipe is 80 columns otherwise)
    done = run_cli("stack", "status", env=child_env(cluster.settings, COLUMNS="250"), timeout=180)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    rows = {cells[0]: cells[1:] for cells in table_rows(done.stdout)}
    for node in cluster.nodes:
        pid, answers, address, details = rows[f"kafka-{node.node_id}"]
        assert (pid, answers, address) == (str(node.running_pid()), "yes", node.address)
        # each node is broker and controller, and a voter that follows or leads the quorum
        assert re.fullmatch(r"broker\+controller, (leader|follower), lag \d+", details), details
    _pid, answers, address, details = rows["kafka quorum"]
    assert answers == "yes"
    assert address == ",".join(n.controller_address for n in cluster.nodes)
    assert re.fullmatch(r"leader [123] \(epoch \d+\), voters 1,2,3, max lag \d+", details), details
    # exactly one node says it leads the quorum, the one the quorum row names
    leading = [name for name, cells in rows.items() if cells[-1].startswith("broker+controller, leader")]
    assert leading == [f"kafka-{details.split()[1]}"]
    assert done.returncode == 1 and rows["postgres"][1] == "no", "only this stack dir's PostgreSQL is missing"


def table_rows(text: str) -> list[list[str]]:
    """The cells of a rich table's body rows (│-separated)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]
