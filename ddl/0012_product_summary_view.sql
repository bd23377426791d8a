-- product_summary_view (seed "Query Optimization"): a real materialized view with the seed's
-- unique index, so REFRESH ... CONCURRENTLY works (it needs a unique index on plain columns).
CREATE MATERIALIZED VIEW product_summary_view AS
SELECT
    p.asin,
    p.title,
    p.brand,
    p.category,
    latest.price              AS current_price,
    latest.rating             AS current_rating,
    latest.review_count       AS current_review_count,
    latest.bsr_data,
    latest.availability_status,
    latest.scraped_at         AS last_updated,
    price_stats.min_price_30d,
    price_stats.max_price_30d,
    price_stats.avg_price_30d
FROM products p
LEFT JOIN LATERAL (
    SELECT ps.price, ps.rating, ps.review_count, ps.bsr_data, ps.availability_status, ps.scraped_at
    FROM product_snapshots ps
    WHERE ps.asin = p.asin
    ORDER BY ps.scraped_at DESC
    LIMIT 1
) latest ON true
LEFT JOIN LATERAL (
    SELECT min(ps.price) AS min_price_30d,
           max(ps.price) AS max_price_30d,
           avg(ps.price) AS avg_price_30d
    FROM product_snapshots ps
    WHERE ps.asin = p.asin
      AND ps.scraped_at > now() - interval '30 days'
      AND ps.price IS NOT NULL
) price_stats ON true
WHERE p.is_active = true;

CREATE UNIQUE INDEX idx_product_summary_asin ON product_summary_view (asin);
CREATE INDEX idx_product_summary_brand ON product_summary_view (brand);
CREATE INDEX idx_product_summary_category ON product_summary_view (category);

-- Kept for compatibility with callers of the seed's function. REFRESH CONCURRENTLY may run in
-- a function (unlike VACUUM); `insights db maintain` issues it directly instead.
CREATE FUNCTION refresh_product_summaries() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY public.product_summary_view;
END;
$$;
