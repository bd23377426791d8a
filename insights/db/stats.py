"""``insights db stats``: the seed's monitoring queries, corrected.

The seed's versions do not run: the connection query mixes an aggregate with an ungrouped
column (``max_conn``), and the index query reads ``tablename`` / ``indexname`` from
``pg_stat_user_indexes``, whose columns are ``relname`` / ``indexrelname``. Its size query
concatenates unquoted names (breaks on mixed-case names) and lists every partition while
showing the partitioned parents as empty; here sizes are summed over each partition tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Report:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple]


CONNECTIONS = """
SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS active_connections,
       current_setting('max_connections')::int AS max_connections,
       round(100.0 * count(*) FILTER (WHERE backend_type = 'client backend')
             / current_setting('max_connections')::int, 2) AS pct_used
FROM pg_stat_activity
"""

TABLE_SIZES = """
SELECT n.nspname AS schema, c.relname AS "table",
       count(*) FILTER (WHERE c.relkind = 'p' AND t.isleaf) AS partitions,
       pg_size_pretty(sum(pg_total_relation_size(coalesce(t.relid, c.oid)))::bigint) AS size,
       sum(pg_total_relation_size(coalesce(t.relid, c.oid)))::bigint AS size_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
-- pg_partition_tree() is empty for a table that is not partitioned: count the table itself
LEFT JOIN LATERAL pg_partition_tree(c.oid) t ON true
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
GROUP BY n.nspname, c.relname
ORDER BY size_bytes DESC, c.relname
"""

INDEX_USAGE = """
SELECT n.nspname AS schema, t.relname AS "table", i.relname AS index,
       coalesce(sum(s.idx_scan), 0)::bigint AS index_scans,
       pg_size_pretty(sum(pg_relation_size(coalesce(pt.relid, i.oid)))::bigint) AS index_size,
       sum(pg_relation_size(coalesce(pt.relid, i.oid)))::bigint AS size_bytes
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN LATERAL pg_partition_tree(i.oid) pt ON true
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = coalesce(pt.relid, i.oid)
WHERE n.nspname = 'public' AND NOT i.relispartition
GROUP BY n.nspname, t.relname, i.relname
ORDER BY index_scans DESC, size_bytes DESC, i.relname
"""

QUERIES = (
    ("connection usage", CONNECTIONS),
    ("table sizes (partition trees summed)", TABLE_SIZES),
    ("index usage (partition trees summed)", INDEX_USAGE),
)


def reports(conn: psycopg.Connection) -> list[Report]:
    out: list[Report] = []
    for title, query in QUERIES:
        cur = conn.execute(query)
        columns = tuple(col.name for col in cur.description or ())
        out.append(Report(title, columns, cur.fetchall()))
    return out
