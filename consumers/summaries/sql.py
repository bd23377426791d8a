"""The SQL of the summaries consumer, composed once from the table specs in ``changes``.

Every statement is set-based over a whole batch: the net changes of a table travel as
one JSON array (``jsonb_to_recordset``), the ASINs to recompute as one text array.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from consumers.summaries.changes import TABLES

SCHEMA = "summaries"
#: every table of the summaries schema, state first: what a rebuild copies and swaps and a
#: resync empties (ddl/0015_summaries.sql and later; a new table is added here or it is missed)
ALL_TABLES = ("products", "snapshots", "alerts", "truncations", "product_summary", "price_daily")

#: advisory lock class of summary rows (pg_advisory_xact_lock(class, hashtext(asin)))
LOCK_CLASS = 0x5355_4D31  # "SUM1"

#: the JSON record types of the columns (jsonb travels as its text, cast on the way in)
_RECORD_TYPES = {
    "asin": "text", "title": "text", "brand": "text", "category": "text", "is_active": "boolean",
    "id": "bigint", "scraped_at": "timestamptz", "price": "numeric", "rating": "numeric",
    "review_count": "integer", "bsr_data": "text", "availability_status": "text",
    "triggered_at": "timestamptz", "target_asin": "text", "is_read": "boolean", "is_resolved": "boolean",
}
_CASTS = {"bsr_data": "jsonb"}


@dataclass(frozen=True)
class StateTable:
    source: str  # the source table's name, as the envelope's source.table says it
    name: str  # table in the summaries schema
    asin_column: str  # the column naming the product a row belongs to

    @property
    def key(self) -> tuple[str, ...]:
        return TABLES[self.source][0]

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(TABLES[self.source][1])


STATE_TABLES = {
    "products": StateTable("products", "products", "asin"),
    "product_snapshots": StateTable("product_snapshots", "snapshots", "asin"),
    "alerts": StateTable("alerts", "alerts", "target_asin"),
}


def _ids(names: tuple[str, ...], prefix: str | None = None) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(prefix, n) if prefix else sql.Identifier(n) for n in names)


def apply_statement(table: StateTable, schema: str = SCHEMA) -> sql.Composed:
    """Upsert a batch of net changes where they are newer; return the ASINs they touch.

    Parameters: ``rows`` (JSON array of objects: key and value columns, ``toast`` (columns
    to keep), ``del``, ``cl``/``l`` (version), ``ct`` (commit time)) and ``source``.
    A row older than the table's newest truncate, or not newer than the stored row, is
    skipped. A delete becomes a tombstone that keeps the row's last values (its ASIN).
    Returns ``(asin, inserted)`` rows: one per row written (``inserted`` true for a new
    row, false for an update: PostgreSQL's ``xmax = 0``), and ``(old asin, NULL)`` for the
    ASIN a row had before the change. The touched ASINs are all of them (NULLs aside).
    """
    state = sql.Identifier(schema, table.name)
    columns = table.key + table.values
    record = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_RECORD_TYPES[c])) for c in columns
    )
    merged_values = sql.SQL(", ").join(
        sql.SQL("CASE WHEN f.del OR {lit} = ANY (f.toast) THEN e.{c} ELSE f.{c}{cast} END AS {c}").format(
            lit=sql.Literal(c),
            c=sql.Identifier(c),
            cast=sql.SQL("::" + _CASTS[c]) if c in _CASTS else sql.SQL(""),
        )
        for c in table.values
    )
    key_match = sql.SQL(" AND ").join(
        sql.SQL("e.{c} = f.{c}").format(c=sql.Identifier(c)) for c in table.key
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*table.values, "deleted", "commit_lsn", "lsn", "changed_at")
    )
    return sql.SQL(
        """
WITH i AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS i({record}, toast text[], del boolean, cl bigint, l bigint, ct timestamptz)
), fresh AS (
    SELECT i.* FROM i
    WHERE NOT EXISTS (
        SELECT 1 FROM {truncations} w
        WHERE w.source_table = %(source)s AND (i.cl, i.l) <= (w.commit_lsn, w.lsn))
), merged AS (
    SELECT {fkeys}, {merged_values}, f.del, f.cl, f.l, f.ct, e.{asin} AS old_asin
    FROM fresh f LEFT JOIN {state} e ON {key_match}
    WHERE e.commit_lsn IS NULL OR (e.commit_lsn, e.lsn) < (f.cl, f.l)
), up AS (
    INSERT INTO {state} AS s ({columns}, deleted, commit_lsn, lsn, changed_at)
    SELECT {columns}, del, cl, l, ct FROM merged
    ON CONFLICT ({keys}) DO UPDATE SET {updates}
    WHERE (s.commit_lsn, s.lsn) < (EXCLUDED.commit_lsn, EXCLUDED.lsn)
    RETURNING s.{asin} AS asin, (xmax = 0) AS inserted
)
SELECT asin, inserted FROM up
UNION ALL
SELECT old_asin, NULL FROM merged WHERE old_asin IS NOT NULL
"""
    ).format(
        record=record,
        fkeys=_ids(table.key, "f"),
        merged_values=merged_values,
        asin=sql.Identifier(table.asin_column),
        state=state,
        key_match=key_match,
        columns=_ids(columns),
        keys=_ids(table.key),
        updates=updates,
        truncations=sql.Identifier(schema, "truncations"),
    )


def truncate_statement(table: StateTable, schema: str = SCHEMA) -> sql.Composed:
    """Forget every stored row older than a truncate, remember the truncate; return the ASINs.

    Parameters: ``source``, ``cl``, ``l`` (the truncate's version), ``at`` (its commit time).
    A redelivered (older) truncate deletes nothing: what it would remove is gone already.
    """
    return sql.SQL(
        """
WITH gone AS (
    DELETE FROM {state} WHERE (commit_lsn, lsn) < (%(cl)s, %(l)s) RETURNING {asin} AS asin
), mark AS (
    INSERT INTO {truncations} AS w (source_table, commit_lsn, lsn, truncated_at)
    VALUES (%(source)s, %(cl)s, %(l)s, %(at)s)
    ON CONFLICT (source_table) DO UPDATE
    SET commit_lsn = EXCLUDED.commit_lsn, lsn = EXCLUDED.lsn, truncated_at = EXCLUDED.truncated_at
    WHERE (w.commit_lsn, w.lsn) < (EXCLUDED.commit_lsn, EXCLUDED.lsn)
)
SELECT DISTINCT asin FROM gone WHERE asin IS NOT NULL
"""
    ).format(state=sql.Identifier(schema, table.name), asin=sql.Identifier(table.asin_column),
             truncations=sql.Identifier(schema, "truncations"))


# Wait for every summary row this transaction will recompute, in one global order (no
# deadlock between consumers): a concurrent batch of another partition that changed the
# same ASIN commits first, and the recompute below (a new statement, a new snapshot under
# READ COMMITTED) then sees its rows.
LOCK_ASINS = """
SELECT count(pg_advisory_xact_lock(%(class)s, hashtext(a)))
FROM (SELECT DISTINCT unnest(%(asins)s::text[]) AS a ORDER BY 1) AS sorted
"""

# Rows whose 30-day window lost a price since they were computed.
EXPIRED = """
SELECT asin FROM summaries.product_summary
WHERE window_expires_at <= now()
ORDER BY window_expires_at
LIMIT %(limit)s
"""

_SUMMARY_COLUMNS = (
    "title", "brand", "category", "is_active", "current_price", "current_rating",
    "current_review_count", "bsr_data", "availability_status", "last_updated",
    "min_price_30d", "max_price_30d", "avg_price_30d", "alerts_total", "alerts_unread",
    "alerts_unresolved", "window_expires_at",
)

# The summary of each ASIN from the state tables, computed as product_summary_view
# computes it from the source tables (newest snapshot by scraped_at; min/max/avg of the
# non-null prices scraped after now() - 30 days), plus alert counts. A row that did not
# change is not rewritten (computed_at stays: a replay leaves the table as it was).
# Parameter: ``asins``. Returns (rows written, rows deleted).
def recompute_statement(schema: str = SCHEMA) -> sql.Composed:
    """RECOMPUTE over the tables of ``schema`` (the rebuild's shadow copy uses it too)."""
    return sql.SQL(
    """
WITH t AS (
    SELECT DISTINCT unnest(%(asins)s::text[]) AS asin
), calc AS (
    SELECT p.asin, p.title, p.brand, p.category, p.is_active,
           latest.price AS current_price, latest.rating AS current_rating,
           latest.review_count AS current_review_count, latest.bsr_data, latest.availability_status,
           latest.scraped_at AS last_updated,
           w.min_price_30d, w.max_price_30d, w.avg_price_30d,
           coalesce(al.total, 0) AS alerts_total, coalesce(al.unread, 0) AS alerts_unread,
           coalesce(al.unresolved, 0) AS alerts_unresolved,
           w.expires AS window_expires_at
    FROM t
    JOIN {s_products} p ON p.asin = t.asin AND NOT p.deleted
    LEFT JOIN LATERAL (
        SELECT s.price, s.rating, s.review_count, s.bsr_data, s.availability_status, s.scraped_at
        FROM {s_snapshots} s
        WHERE s.asin = p.asin AND NOT s.deleted
        ORDER BY s.scraped_at DESC, s.id DESC
        LIMIT 1
    ) latest ON true
    LEFT JOIN LATERAL (
        SELECT min(s.price) AS min_price_30d, max(s.price) AS max_price_30d, avg(s.price) AS avg_price_30d,
               min(s.scraped_at) + interval '30 days' AS expires
        FROM {s_snapshots} s
        WHERE s.asin = p.asin AND NOT s.deleted AND s.price IS NOT NULL
          AND s.scraped_at > now() - interval '30 days'
    ) w ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE a.is_read IS NOT TRUE) AS unread,
               count(*) FILTER (WHERE a.is_resolved IS NOT TRUE) AS unresolved
        FROM {s_alerts} a
        WHERE a.target_asin = p.asin AND NOT a.deleted
    ) al ON true
), gone AS (
    DELETE FROM {s_product_summary} s USING t
    WHERE s.asin = t.asin AND NOT EXISTS (SELECT 1 FROM calc c WHERE c.asin = s.asin)
    RETURNING 1
), up AS (
    INSERT INTO {s_product_summary} AS s (asin, {columns}, computed_at)
    SELECT asin, {columns}, now() FROM calc
    ON CONFLICT (asin) DO UPDATE SET {updates}, computed_at = EXCLUDED.computed_at
    WHERE ({old}) IS DISTINCT FROM ({new})
    RETURNING 1
)
SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM gone)
"""
).format(
    columns=_ids(_SUMMARY_COLUMNS),
    updates=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in _SUMMARY_COLUMNS),
    old=_ids(_SUMMARY_COLUMNS, "s"),
    new=_ids(_SUMMARY_COLUMNS, "excluded"),
    **{f"s_{t}": sql.Identifier(schema, t) for t in ("products", "snapshots", "alerts", "product_summary")},
)


RECOMPUTE = recompute_statement()


#: deleted rows whose commit is older than the cutoff (no redelivery can be older)
PURGE_TOMBSTONES = [
    sql.SQL("DELETE FROM {} WHERE deleted AND changed_at < %(cutoff)s").format(sql.Identifier(SCHEMA, t.name))
    for t in STATE_TABLES.values()
]

# The source's retention drops whole partitions, which the CDC stream never shows (see
# docs/cdc.md). The sweep applies the same rule to the state: rows older than the start of
# the current UTC month minus the retention, exactly what the prune's partition bounds remove.
# Parameters: ``months``. Returns the ASINs whose rows went.
RETENTION = {
    source: sql.SQL(
        """
WITH gone AS (
    DELETE FROM {state} WHERE {time} < date_trunc('month', now()) - make_interval(months => %(months)s)
    RETURNING {asin} AS asin
)
SELECT DISTINCT asin FROM gone WHERE asin IS NOT NULL
"""
    ).format(
        state=sql.Identifier(SCHEMA, STATE_TABLES[source].name),
        time=sql.Identifier(STATE_TABLES[source].key[1]),
        asin=sql.Identifier(STATE_TABLES[source].asin_column),
    )
    for source in ("product_snapshots", "alerts")
}
