-- HOT-capable updates of the summaries state (issue 13). Every scrape updates its product,
-- so the summaries consumer rewrites a summaries.products row per event, and an alert's
-- read/resolve flags rewrite its summaries.alerts row. An UPDATE is HOT (the new version on
-- the same page, no new index entry) only when no indexed column changes, and the tombstone
-- indexes of 0015 were on changed_at, the commit time every write moves: no update of these
-- tables could be HOT, each added an entry to the primary key too, and summaries.products
-- bloated (10,000 rows on 667 pages an hour into a 2,000 events/s run, BENCHMARKS.md
-- "Downstream latency"). The purge (consumers/summaries/sql.PURGE_TOMBSTONES: deleted AND
-- changed_at < cutoff) needs only the few deleted rows: a partial index on the key finds
-- them all, and changed_at is checked on those. The predicate's column, deleted, changes
-- only when a row becomes a tombstone.
DROP INDEX summaries.idx_summaries_products_tombstones;
CREATE INDEX idx_summaries_products_tombstones ON summaries.products (asin) WHERE deleted;
DROP INDEX summaries.idx_summaries_alerts_tombstones;
CREATE INDEX idx_summaries_alerts_tombstones ON summaries.alerts (id) WHERE deleted;
DROP INDEX summaries.idx_summaries_snapshots_tombstones;
CREATE INDEX idx_summaries_snapshots_tombstones ON summaries.snapshots (id) WHERE deleted;
