"""The scrape sink's SQL: staging tables filled by binary COPY, then set-based upserts.

Idempotency and order independence live in these statements:

* products: a new ASIN is inserted; a known one takes the catalog fields only from a
  scrape newer than ``last_scraped_at``, so out-of-order delivery ends in the state of
  the newest scrape, and a redelivered old scrape changes nothing;
* product_snapshots: one row per ``(asin, scraped_at)``; a redelivery is a no-op;
* product_features: one row per ``(asin, feature_category, feature_name)``, written only
  when a scrape newer than every stored scrape of its product changes the value
  (``feature_value``, ``confidence_score`` or ``extraction_method``). A scrape confirming
  the stored value writes nothing, so ``extracted_at`` is the scrape time of the scrape
  that first showed the current value (when it was first seen / last changed), and
  ``products.last_scraped_at`` says when the product was last looked at. A late scrape
  (no newer than the product's newest stored one) changes no stored feature, as it
  changes no catalog field: with ``extracted_at`` no longer advanced by confirmations,
  only the product's newest scrape can tell that a newer page may have shown the same
  value; a feature the product has no row for yet is inserted from it
  (ddl/README.md, "Features: written when they change").

Each statement also says what it did, in PostgreSQL's own words, for the counters the
operator reads (inserted, updated, already stored): an upsert returns ``xmax = 0`` for a
row it inserted and false for one it updated; a row its ``WHERE`` guard kept is not
returned at all; ``DO NOTHING`` counts only the rows it added.
"""

from __future__ import annotations

from consumers.scrape.mapping import FEATURE_COLUMNS, PRODUCT_COLUMNS, SNAPSHOT_COLUMNS

# ON COMMIT DROP: nothing outlives the transaction, which a transaction-pooling
# PgBouncer requires (the next transaction may run on another server connection).
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_products (
    asin text, title text, brand text, category text, manufacturer text, model text,
    dimensions jsonb, weight numeric, last_scraped_at timestamptz
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS stage_snapshots (
    event_id uuid, asin text, title text, price numeric, buybox_price numeric, rating numeric,
    review_count int4, bsr_data jsonb, availability_status text, bullet_points text[],
    product_description text, images jsonb, variations jsonb, scraped_at timestamptz, raw_data jsonb
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS stage_features (
    asin text, feature_category text, feature_name text, feature_value text,
    confidence_score numeric, extracted_at timestamptz, extraction_method text
) ON COMMIT DROP;
TRUNCATE stage_products, stage_snapshots, stage_features;
"""

PRODUCT_TYPES = ["text", "text", "text", "text", "text", "text", "jsonb", "numeric", "timestamptz"]
SNAPSHOT_TYPES = [
    "uuid", "text", "text", "numeric", "numeric", "numeric", "int4", "jsonb", "text", "text[]",
    "text", "jsonb", "jsonb", "timestamptz", "jsonb",
]
FEATURE_TYPES = ["text", "text", "text", "text", "numeric", "timestamptz", "text"]

COPY_PRODUCTS = f"COPY stage_products ({', '.join(PRODUCT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_SNAPSHOTS = f"COPY stage_snapshots ({', '.join(SNAPSHOT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_FEATURES = f"COPY stage_features ({', '.join(FEATURE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

# Before UPSERT_PRODUCTS moves last_scraped_at: the features of a scrape no newer than its
# product's newest stored scrape (a late scrape, or a redelivery) leave the staging table,
# so UPSERT_FEATURES never sees them. Of those, a feature the product has no row for is
# inserted: had a newer scrape shown it, the row would exist, so this is exact whatever the
# arrival order. An existing row is left alone: its extracted_at no longer says when it
# was last confirmed, and a newer scrape may have shown the same value (sql.py's doc).
LATE_FEATURES = """
WITH late AS (
DELETE FROM stage_features sf USING products p
WHERE p.asin = sf.asin AND sf.extracted_at <= p.last_scraped_at
RETURNING sf.*
), added AS (
INSERT INTO product_features (asin, feature_category, feature_name, feature_value,
                              confidence_score, extracted_at, extraction_method)
SELECT asin, feature_category, feature_name, feature_value, confidence_score, extracted_at,
       COALESCE(extraction_method, 'parser')
FROM late
ON CONFLICT (asin, feature_category, feature_name) DO NOTHING
RETURNING 1
)
SELECT count(*) FROM added
"""

UPSERT_PRODUCTS = """
WITH up AS (
INSERT INTO products AS p (asin, title, brand, category, manufacturer, model, dimensions, weight,
                           last_scraped_at, first_tracked_at, last_updated_at, updated_at)
SELECT asin, title, brand, category, manufacturer, model, dimensions, weight,
       last_scraped_at, last_scraped_at, now(), now()
FROM stage_products
ON CONFLICT (asin) DO UPDATE SET
    title = EXCLUDED.title,
    brand = EXCLUDED.brand,
    category = EXCLUDED.category,
    manufacturer = EXCLUDED.manufacturer,
    model = EXCLUDED.model,
    dimensions = EXCLUDED.dimensions,
    weight = EXCLUDED.weight,
    last_scraped_at = EXCLUDED.last_scraped_at,
    first_tracked_at = LEAST(p.first_tracked_at, EXCLUDED.first_tracked_at),
    last_updated_at = now(),
    updated_at = now()
WHERE p.last_scraped_at IS NULL OR EXCLUDED.last_scraped_at > p.last_scraped_at
RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
"""

INSERT_SNAPSHOTS = """
INSERT INTO product_snapshots (event_id, asin, title, price, buybox_price, rating, review_count,
                               bsr_data, availability_status, bullet_points, product_description,
                               images, variations, scraped_at, raw_data)
SELECT event_id, asin, title, price, buybox_price, rating, review_count, bsr_data,
       availability_status, bullet_points, product_description, images, variations,
       scraped_at, raw_data
FROM stage_snapshots
ON CONFLICT (asin, scraped_at) DO NOTHING
"""

UPSERT_FEATURES = """
WITH up AS (
INSERT INTO product_features AS f (asin, feature_category, feature_name, feature_value,
                                   confidence_score, extracted_at, extraction_method)
SELECT asin, feature_category, feature_name, feature_value, confidence_score, extracted_at,
       COALESCE(extraction_method, 'parser')
FROM stage_features
ON CONFLICT (asin, feature_category, feature_name) DO UPDATE SET
    feature_value = EXCLUDED.feature_value,
    confidence_score = EXCLUDED.confidence_score,
    extracted_at = EXCLUDED.extracted_at,
    extraction_method = EXCLUDED.extraction_method
WHERE EXCLUDED.extracted_at > f.extracted_at
  AND (f.feature_value, f.confidence_score, f.extraction_method)
      IS DISTINCT FROM (EXCLUDED.feature_value, EXCLUDED.confidence_score, EXCLUDED.extraction_method)
RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
"""
