-- summaries.price_daily: one row per product and UTC day with snapshots, the price history a
-- chart needs (consumers/summaries/price_daily.py, docs/summaries.md). Kept by the summaries
-- consumer from its version-guarded state (summaries.snapshots), so it is exactly
--   SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date, first/max/min/last price, count(*)
--   FROM product_snapshots GROUP BY 1, 2
-- over the rows the CDC stream delivered: inserts, updates, deletes, moves and truncates.
-- open/close are the first/last non-null price of the day by scraped_at; high/low over the
-- non-null prices; snapshots counts every snapshot of the day (a day of only missing prices
-- has a row with null prices).
CREATE TABLE summaries.price_daily (
    asin        text        NOT NULL,
    day         date        NOT NULL,
    open        numeric,
    high        numeric,
    low         numeric,
    close       numeric,
    snapshots   integer     NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asin, day)
);

GRANT SELECT ON summaries.price_daily TO app_readonly, app_readwrite;
GRANT ALL PRIVILEGES ON summaries.price_daily TO app_admin;
