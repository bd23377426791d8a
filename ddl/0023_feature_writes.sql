-- product_features are written only when a value changes (issue 17): the scrape sink's
-- upsert skips a scrape that confirms the stored value, and a late scrape (no newer than
-- its product's newest stored scrape) changes no stored feature. extracted_at therefore
-- no longer moves with every scrape; ddl/README.md "Features: written when they change".
COMMENT ON COLUMN product_features.extracted_at IS
    'scraped_at of the scrape that first showed the current value (feature_value, confidence_score, '
    'extraction_method): when it was first seen or last changed, in the order scrapes arrived. '
    'A scrape confirming the value writes nothing; products.last_scraped_at is when the product was last scraped.';
