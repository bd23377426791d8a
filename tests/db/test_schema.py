"""Every object of the seed exists with its constraints; the seed's duplicates do not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors

from tests.db.conftest import add_product, add_snapshot

pytestmark = pytest.mark.integration

SEED_TABLES = {
    "products": "r",
    "product_snapshots": "p",
    "product_features": "r",
    "competitive_groups": "r",
    "competitive_group_members": "r",
    "competitive_analyses": "p",
    "alert_rules": "r",
    "alerts": "p",
    "api_keys": "r",
    "api_usage_logs": "p",
    "task_executions": "r",
    "product_summary_view": "m",
    "consumer_offsets": "r",
}

SEED_INDEXES = [
    # the seed's indexes that are kept (duplicates are dropped on purpose, and so are those
    # on columns every scrape writes, which no query reads: see ddl/README.md)
    "idx_products_brand", "idx_products_category", "idx_products_active", "idx_products_metadata",
    "idx_snapshots_price", "idx_snapshots_rating", "idx_snapshots_status", "idx_snapshots_bsr",
    "idx_snapshots_rating_reviews",
    "idx_features_category", "idx_features_name",
    "idx_competitive_groups_main_asin", "idx_competitive_groups_active", "idx_competitive_groups_created_by",
    "idx_group_members_asin", "idx_group_members_active", "idx_group_members_group_priority",
    "idx_analyses_group_created", "idx_analyses_status", "idx_analyses_type",
    "idx_alert_rules_type", "idx_alert_rules_target", "idx_alert_rules_active",
    "idx_alerts_asin_time", "idx_alerts_severity", "idx_alerts_unread", "idx_alerts_type",
    "idx_alerts_unresolved_critical", "idx_critical_unread_alerts",
    "idx_api_keys_hash", "idx_api_keys_active", "idx_api_keys_tier", "idx_api_keys_expires",
    "idx_usage_logs_key_time", "idx_usage_logs_status", "idx_usage_logs_ip",
    "idx_usage_logs_endpoint_time", "idx_usage_logs_key_status",
    "idx_task_executions_name", "idx_task_executions_status", "idx_task_executions_queue",
    "idx_task_executions_created", "idx_task_failures",
    "idx_product_summary_asin", "idx_product_summary_brand", "idx_product_summary_category",
]

IDEMPOTENCY_KEYS = {
    "products_pkey": ("products", "p", ["asin"]),
    "product_snapshots_pkey": ("product_snapshots", "p", ["id", "scraped_at"]),
    "product_snapshots_asin_scraped_at_key": ("product_snapshots", "u", ["asin", "scraped_at"]),
    "product_features_asin_feature_category_feature_name_key": (
        "product_features", "u", ["asin", "feature_category", "feature_name"]),
    "alerts_event_id_triggered_at_key": ("alerts", "u", ["event_id", "triggered_at"]),
    "consumer_offsets_pkey": ("consumer_offsets", "p", ["consumer_group", "topic", "partition"]),
}


def test_every_seed_relation_exists_with_its_kind(pg: psycopg.Connection) -> None:
    rows = dict(pg.execute(
        "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relname = ANY(%s)", (list(SEED_TABLES),)
    ).fetchall())
    assert rows == SEED_TABLES


def test_every_seed_index_and_function_exists(pg: psycopg.Connection) -> None:
    present = {r[0] for r in pg.execute(
        "SELECT relname FROM pg_class WHERE relkind IN ('i', 'I') AND relnamespace = 'public'::regnamespace"
    ).fetchall()}
    assert sorted(set(SEED_INDEXES) - present) == []
    functions = {r[0] for r in pg.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace").fetchall()}
    assert {"refresh_product_summaries", "ensure_partitions", "premake_partitions",
            "split_default_partition"} <= functions


def test_idempotency_keys_exist_as_named(pg: psycopg.Connection) -> None:
    for name, (table, kind, columns) in IDEMPOTENCY_KEYS.items():
        row = pg.execute(
            "SELECT c.conrelid::regclass::text, c.contype::text, "
            "array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
            "      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) "
            "FROM pg_constraint c WHERE c.conname = %s AND c.conrelid = %s::regclass", (name, table)
        ).fetchone()
        assert row == (table, kind, columns), name


def test_columns_the_consumers_rely_on(pg: psycopg.Connection) -> None:
    cols = {(t, c): (ty, nullable) for t, c, ty, nullable in pg.execute(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text "
        "FROM information_schema.columns WHERE table_schema = 'public'").fetchall()}
    assert cols[("products", "last_scraped_at")] == ("timestamp with time zone", "YES")
    assert cols[("product_snapshots", "event_id")] == ("uuid", "YES")
    assert cols[("alerts", "event_id")] == ("uuid", "NO")
    assert cols[("consumer_offsets", "next_offset")] == ("bigint", "NO")
    identity = pg.execute(
        "SELECT is_identity FROM information_schema.columns WHERE table_name = 'product_snapshots' AND column_name = 'id'"
    ).fetchone()
    assert identity == ("YES",)


def test_rating_check_rejects_5_01_and_accepts_5(pg: psycopg.Connection) -> None:
    asin = add_product(pg)
    now = datetime.now(UTC)
    pg.execute("INSERT INTO product_snapshots (asin, scraped_at, rating) VALUES (%s, %s, 5.00)", (asin, now))
    with pytest.raises(errors.CheckViolation):
        pg.execute("INSERT INTO product_snapshots (asin, scraped_at, rating) VALUES (%s, %s, 5.01)",
                   (asin, now.replace(microsecond=(now.microsecond + 1) % 1_000_000)))
    with pytest.raises(errors.CheckViolation):
        pg.execute("INSERT INTO product_features (asin, feature_category, feature_name, confidence_score) "
                   "VALUES (%s, 'c', 'n', 1.5)", (asin,))


def test_snapshot_and_alert_keys_make_redelivery_a_no_op(pg: psycopg.Connection) -> None:
    asin = add_product(pg)
    at = datetime.now(UTC)
    add_snapshot(pg, asin, at)
    with pytest.raises(errors.UniqueViolation):
        add_snapshot(pg, asin, at)
    event = uuid.uuid4()
    insert_alert = ("INSERT INTO alerts (event_id, alert_type, target_asin, severity, title, message, triggered_at) "
                    "VALUES (%s, 'price_change', %s, 'high', 't', 'm', %s) ON CONFLICT (event_id, triggered_at) DO NOTHING")
    assert pg.execute(insert_alert, (event, asin, at)).rowcount == 1
    assert pg.execute(insert_alert, (event, asin, at)).rowcount == 0
    with pytest.raises(errors.NotNullViolation):
        pg.execute("INSERT INTO alerts (alert_type, severity, title, message) VALUES ('x', 'low', 't', 'm')")


def test_snapshot_foreign_key_is_enforced(pg: psycopg.Connection) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        add_snapshot(pg, "B0MISSING0", datetime.now(UTC))


# --- seed defects: duplicates -------------------------------------------------------------

FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text, c.conkey::int[], c.confrelid::regclass::text, count(*)
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace AND c.conparentid = 0
GROUP BY 1, 2, 3
"""


def test_each_foreign_key_is_declared_once(pg: psycopg.Connection) -> None:
    """The seed declared three foreign keys twice (inline and again under Referential
    Integrity): every insert then checked the parent twice."""
    rows = pg.execute(FOREIGN_KEYS).fetchall()
    assert rows, "no foreign keys at all"
    assert [r for r in rows if r[3] > 1] == []
    tables = {(r[0], r[2]) for r in rows}
    assert {("product_snapshots", "products"), ("alerts", "alert_rules"), ("alerts", "products"),
            ("competitive_group_members", "competitive_groups"),
            ("competitive_groups", "products")} <= tables


INDEX_KEYS = """
SELECT t.relname, i.relname, x.indkey::int2[]::int[], pg_get_expr(x.indpred, x.indrelid),
       pg_get_expr(x.indexprs, x.indrelid), x.indisunique, am.amname,
       (SELECT array_agg(o) FROM unnest(x.indoption::int2[]) o)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_am am ON am.oid = i.relam
WHERE t.relnamespace = 'public'::regnamespace AND NOT t.relispartition
"""


def test_no_index_is_a_leading_prefix_of_another(pg: psycopg.Connection) -> None:
    """The seed had unique indexes twice (api_keys.key_id, task_executions.task_id) and
    indexes that are prefixes of others (idx_features_asin, idx_group_members_group_id,
    idx_usage_logs_endpoint, idx_snapshots_asin_time): pure write cost."""
    by_table: dict[str, list[tuple]] = {}
    for row in pg.execute(INDEX_KEYS).fetchall():
        by_table.setdefault(row[0], []).append(row)
    redundant = []
    for rows in by_table.values():
        for a in rows:
            for b in rows:
                if a is b or a[4] or b[4] or a[3] != b[3] or a[6] != "btree" or b[6] != "btree":
                    continue
                cols_a, cols_b = a[2], b[2]
                # a is redundant when its columns lead b's (uniqueness is the only reason to keep it)
                if cols_b[: len(cols_a)] == cols_a and (len(cols_a) < len(cols_b) or a[1] > b[1]):
                    if a[5] and len(cols_a) < len(cols_b):
                        continue  # a shorter unique index enforces something the longer cannot
                    redundant.append((a[1], b[1]))
    assert redundant == []


def test_every_foreign_key_is_indexed(pg: psycopg.Connection) -> None:
    """The seed claims so but left alerts.rule_id bare: deleting a rule scanned every alert."""
    fks = pg.execute(
        "SELECT conrelid::regclass::text, conname, conrelid, conkey::int[] FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND conparentid = 0"
    ).fetchall()
    missing = []
    for table, name, relid, cols in fks:
        covered = pg.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = %s AND (indkey::int2[]::int[])[0:%s] = %s::int[]",
            (relid, len(cols) - 1, cols),
        ).fetchone()[0]
        if not covered:
            missing.append((table, name))
    assert missing == []


#: columns the scrape sink's upserts set on every write of a row (consumers/scrape/sql.py)
WRITTEN_EVERY_TIME = {
    "products": ["last_scraped_at", "last_updated_at", "updated_at"],
    "product_features": ["extracted_at"],
}


def test_no_index_covers_a_column_every_upsert_writes(pg: psycopg.Connection) -> None:
    """An index on such a column makes every update of the table non-HOT: a new entry in every
    index per update (0024 dropped the seed's two, which no query reads; ddl/README.md)."""
    found = []
    for table, columns in WRITTEN_EVERY_TIME.items():
        found += pg.execute(
            "SELECT i.indexrelid::regclass::text, a.attname::text FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 "
            "WHERE i.indrelid = %s::regclass AND a.attname = ANY(%s) AND ("
            "  a.attnum = ANY(i.indkey) "
            "  OR coalesce(pg_get_expr(i.indexprs, i.indrelid), '') ~ ('\\m' || a.attname || '\\M') "
            "  OR coalesce(pg_get_expr(i.indpred, i.indrelid), '') ~ ('\\m' || a.attname || '\\M'))",
            (table, columns),
        ).fetchall()
    assert found == []
    # and their pages keep room for the new row versions of HOT updates
    options = dict(pg.execute(
        "SELECT relname::text, reloptions FROM pg_class WHERE oid IN ('products'::regclass, 'product_features'::regclass)"
    ).fetchall())
    assert options == {"products": ["fillfactor=70"], "product_features": ["fillfactor=80"]}
