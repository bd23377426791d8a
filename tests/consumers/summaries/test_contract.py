"""The sink contract (tests/consumers/sink_contract.py) for the summaries sink.

The records are change events on the three CDC topics, written with the CDC reader's
own encoder (as ``tests/summaries/test_redelivery.py`` does): creates, updates and
deletes of products, snapshots and alerts, each with its commit LSN, which is what the
sink orders them by.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import psycopg
import pytest

from consumers.summaries.sql import SCHEMA, STATE_TABLES
from core.settings import Settings
from streams.cdc.envelope import make_encoder
from streams.topics import SUMMARIES_SOURCE_TABLES, cdc_topic_name
from tests.consumers.sink_contract import Poison, Record, SinkContract, State

pytestmark = pytest.mark.integration

PRODUCTS, SNAPSHOTS = 5, 3
T0 = datetime(2099, 1, 1, tzinfo=UTC)  # the 30-day window never passes these by


def _asin(n: int) -> str:
    return f"B0CONTR{n:03d}"


def _at(day: int) -> str:
    return (T0 + timedelta(days=day)).isoformat()


def _snapshot(sid: int, day: int, asin: str, price: str) -> dict[str, Any]:
    return {"id": sid, "scraped_at": _at(day), "asin": asin, "price": price, "rating": "4.00",
            "review_count": 3 + day, "bsr_data": '{"Toys": 5}', "availability_status": "In Stock"}


class TestSummariesContract(SinkContract):
    sink = "summaries"
    tables = ("summaries.products", "summaries.snapshots", "summaries.alerts", "summaries.product_summary")
    volatile = {"summaries.product_summary": frozenset({"computed_at"})}

    def state(self, conn: psycopg.Connection) -> State:
        """Tombstones compared by key and version only: the values a tombstone keeps are the
        row's last *stored* ones (to find its ASIN), so a create and its delete folded in
        one batch leave none, and the same two in separate batches leave the create's."""
        state = super().state(conn)
        for table in STATE_TABLES.values():
            name = f"{SCHEMA}.{table.name}"
            state[name] = sorted(
                ({k: v for k, v in row.items() if k not in table.values} if row["deleted"] else row
                 for row in state[name]),
                key=repr,
            )
        return state

    def records(self, settings: Settings) -> list[Record]:
        encode = make_encoder(settings)
        topic = {t: cdc_topic_name(settings, t, settings.cdc.schema_name) for t in SUMMARIES_SOURCE_TABLES}
        commits = count(1)
        out: list[Record] = []

        def change(table: str, op: str, key: dict[str, Any], row: dict[str, Any]) -> None:
            commit_lsn = next(commits) * 1000  # one transaction per change, in commit order
            envelope = {
                "op": op, "before": row if op == "d" else None, "after": None if op == "d" else row,
                "unchanged_toast": [], "key_columns": list(key),
                "source": {"lsn": commit_lsn + 1, "commit_lsn": commit_lsn, "xid": commit_lsn,
                           "commit_time": 1_700_000_000_000_000 + commit_lsn, "schema": "public",
                           "table": table, "snapshot": False},
            }
            out.append(Record(topic[table], json.dumps(key).encode(), encode(envelope)))

        for n in range(PRODUCTS):
            asin = _asin(n)
            product = {"asin": asin, "title": f"Robot {n}", "brand": "R", "category": "Toys", "is_active": True}
            change("products", "c", {"asin": asin}, product)
            for day in range(SNAPSHOTS):
                sid = n * 100 + day
                change("product_snapshots", "c", {"id": sid, "scraped_at": _at(day)},
                       _snapshot(sid, day, asin, f"{10 + day}.00"))
            # a corrected price, then the oldest snapshot deleted
            change("product_snapshots", "u", {"id": n * 100 + 1, "scraped_at": _at(1)},
                   _snapshot(n * 100 + 1, 1, asin, "99.00"))
            change("product_snapshots", "d", {"id": n * 100, "scraped_at": _at(0)},
                   {"id": n * 100, "scraped_at": _at(0)})
            for k in range(2):
                change("alerts", "c", {"id": n * 10 + k, "triggered_at": _at(k)},
                       {"id": n * 10 + k, "triggered_at": _at(k), "target_asin": asin,
                        "is_read": False, "is_resolved": False})
            change("alerts", "u", {"id": n * 10, "triggered_at": _at(0)},
                   {"id": n * 10, "triggered_at": _at(0), "target_asin": asin, "is_read": True, "is_resolved": False})
            change("products", "u", {"asin": asin}, {**product, "title": f"Robot {n} (renamed)"})
        return out

    def poison(self, settings: Settings) -> list[Poison]:
        encode = make_encoder(settings)
        products = cdc_topic_name(settings, "products", settings.cdc.schema_name)
        no_key = {
            "op": "c", "before": None, "after": {"title": "no key"}, "unchanged_toast": [], "key_columns": [],
            "source": {"lsn": 5, "commit_lsn": 5, "xid": 5, "commit_time": 1_700_000_000_000_000,
                       "schema": "public", "table": "products", "snapshot": False},
        }
        return [
            Poison(Record(products, b"garbage", b"not avro at all"), "corrupt_payload", "magic"),
            Poison(Record(products, b'{"asin":null}', encode(no_key)), "validation", "asin"),
        ]
