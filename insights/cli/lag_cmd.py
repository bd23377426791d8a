"""``insights status lag``: per group and partition, as ``kafka-consumer-groups --describe`` shows it.

With the offset each group stored in PostgreSQL (``consumer_offsets``, where the consumers
resume) beside Kafka's committed offset (what standard tools see): the two differ by at
most a batch while a consumer runs, and a larger gap says Kafka's copy is stale.
"""

from __future__ import annotations

import json
import sys

import typer

from insights.cli.context import console, settings_of
from insights.cli.tables import print_plain, print_table


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def lag(
    ctx: typer.Context,
    group: list[str] = typer.Option(
        [], "--group", "-g", help="only these groups (repeatable); any Kafka group, not only those in consumer_offsets"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON: one object per group and partition"),
) -> None:
    """Per group and partition: PostgreSQL's stored offset, Kafka's committed offset, log end, lag, consumer.

    Lag is counted from the PostgreSQL offset (where the consumers resume), or from
    Kafka's when a group stores none in PostgreSQL. Exit 3 when a service does not answer.
    """
    from insights.status import partition_lags  # lazy: CLI start-up of the other commands

    rows = partition_lags(settings_of(ctx), group or None)
    if as_json:
        sys.stdout.write(json.dumps({"partitions": [r.as_dict() for r in rows]}, indent=2) + "\n")
        return
    if not rows:
        found = f"no offsets for {', '.join(group)}" if group else "no consumer group has stored offsets yet"
        console.print(found, highlight=False, soft_wrap=True)
        return
    headers = ("GROUP", "TOPIC", "PARTITION", "PG-OFFSET", "KAFKA-OFFSET", "LOG-END", "LAG", "CONSUMER-ID", "HOST")
    cells = [
        (r.group, r.topic, str(r.partition), _cell(r.pg_offset), _cell(r.kafka_offset), _cell(r.log_end),
         _cell(r.lag), r.member_id or "-", r.host or "-")
        for r in rows
    ]
    if not console.is_terminal:
        print_plain(console, headers, cells)
        return
    # a terminal: one table per group (the group is its title), so the columns fit 80 characters
    short = ("TOPIC", "PART", "PG", "KAFKA", "END", "LAG", "CONSUMER (HOST)")
    for name in dict.fromkeys(r.group for r in rows):
        mine = [(*c[1:7], f"{c[7]} ({c[8]})" if c[7] != "-" else "-") for c in cells if c[0] == name]
        print_table(console, short, mine, elide_column=0, title=f"group {name}")
