-- HOT-capable upserts (issue 17). An UPDATE can be HOT (heap-only: the new row version on
-- the same page, no new entry in any index) only when no indexed column changes. The scrape
-- sink writes products.last_updated_at and product_features.extracted_at on every write, and
-- the seed indexed both, so every one of those updates inserted a new entry into every index
-- of the table. No query of the project or the seed reads these indexes: the seed creates
-- them ("Indexes", "Partial Indexes") and never filters or sorts on either column; the
-- summary view's last_updated is product_snapshots.scraped_at (ddl/README.md, "HOT upserts").
DROP INDEX idx_products_last_updated;
DROP INDEX idx_products_active_updated;
DROP INDEX idx_features_extracted_at;

-- A HOT update also needs room on the row's page for the new version: at the default
-- fillfactor (100) inserts fill the pages, and a batch that updates many rows of one page
-- finds no room (page pruning only frees versions dead before the batch began). A batch
-- updating a share f of a page's rows stays HOT up to a fillfactor of 1/(1+f). products is
-- updated by every newer scrape of a product (up to f = 0.6 when a batch of 5,000 events
-- covers 5,000 products, as in the ingest bench; far less in a catalog of millions): 70. product_features only when a value changes (about a third of
-- them): 80. Measured with 200 products, a batch updating a quarter of them and every
-- feature changing on every scrape: HOT 0% with the seed's indexes; after the drop,
-- products 69% / features 50% HOT at fillfactor 100, 81-94% / 83-86% at 70 / 80. The tables
-- stay small beside product_snapshots. New pages only: existing ones gain room as rows move and
-- pruning frees dead versions (a VACUUM FULL would rewrite them, under an exclusive lock).
ALTER TABLE products SET (fillfactor = 70);
ALTER TABLE product_features SET (fillfactor = 80);
