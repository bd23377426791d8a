"""The SQL of competitive positions: a ranking over the groups' current snapshots.

"Current" is each product's newest snapshot by ``scraped_at``. The main product and the
group's active members are ranked with ``rank()``: price ascending (1 = cheapest), rating
descending (1 = best), BSR ascending in the group's ``industry_category`` (1 = best
seller); a product without the value is not ranked and does not push others down.
"""

from __future__ import annotations

RANKING = """
WITH g AS (
    SELECT id, main_product_asin, industry_category FROM competitive_groups
    WHERE id = ANY(%(groups)s) AND is_active IS TRUE
), m AS (
    SELECT g.id AS group_id, g.main_product_asin AS main, g.industry_category AS category, x.asin
    FROM g CROSS JOIN LATERAL (
        SELECT g.main_product_asin AS asin
        UNION
        SELECT competitor_asin FROM competitive_group_members
        WHERE group_id = g.id AND is_active IS TRUE
    ) x
), cur AS (
    SELECT m.*, s.price, s.rating, s.scraped_at,
           CASE WHEN jsonb_typeof(s.bsr_data -> m.category) = 'number'
                THEN (s.bsr_data ->> m.category)::numeric END AS bsr
    FROM m LEFT JOIN LATERAL (
        SELECT price, rating, bsr_data, scraped_at FROM product_snapshots p
        WHERE p.asin = m.asin ORDER BY p.scraped_at DESC LIMIT 1
    ) s ON true
), ranked AS (
    SELECT cur.*,
           CASE WHEN price IS NOT NULL THEN rank() OVER (PARTITION BY group_id ORDER BY price ASC NULLS LAST) END AS price_rank,
           CASE WHEN rating IS NOT NULL THEN rank() OVER (PARTITION BY group_id ORDER BY rating DESC NULLS LAST) END AS rating_rank,
           CASE WHEN bsr IS NOT NULL THEN rank() OVER (PARTITION BY group_id ORDER BY bsr ASC NULLS LAST) END AS bsr_rank,
           count(*) OVER (PARTITION BY group_id) AS members,
           min(price) OVER w AS min_price, max(price) OVER w AS max_price, avg(price) OVER w AS avg_price,
           count(price) OVER w AS priced,
           min(rating) OVER w AS min_rating, max(rating) OVER w AS max_rating, avg(rating) OVER w AS avg_rating,
           min(bsr) OVER w AS best_bsr, max(bsr) OVER w AS worst_bsr,
           max(scraped_at) OVER w AS newest, min(scraped_at) OVER w AS oldest
    FROM cur
    WINDOW w AS (PARTITION BY group_id)
)
SELECT group_id, members::int, price_rank::int, rating_rank::int, bsr_rank::int,
       price, min_price, max_price, round(avg_price, 2), priced::int,
       rating, min_rating, max_rating, round(avg_rating, 2),
       category, bsr, best_bsr, worst_bsr, newest, oldest
FROM ranked WHERE asin = main
"""

GROUPS_OF = """
SELECT id FROM competitive_groups WHERE is_active IS TRUE AND main_product_asin = ANY(%(asins)s)
UNION
SELECT m.group_id FROM competitive_group_members m JOIN competitive_groups g ON g.id = m.group_id
WHERE g.is_active IS TRUE AND m.competitor_asin = ANY(%(asins)s)
"""

#: advisory lock class of a group's position (pg_advisory_xact_lock(class, group id))
LOCK_CLASS = 0x434F_4D31  # "COM1"

# Wait for every group this transaction will rank, in one global order (no deadlock between
# consumers): two processes whose partitions both touch a group would otherwise both see the
# old position and both write an analysis; the second now ranks after the first committed
# (a new statement, a new snapshot under READ COMMITTED) and finds the position unchanged.
LOCK_GROUPS = """
SELECT count(pg_advisory_xact_lock(%(class)s, g))
FROM (SELECT DISTINCT unnest(%(groups)s::int[]) AS g ORDER BY 1) AS sorted
"""

ALL_GROUPS = "SELECT id FROM competitive_groups WHERE is_active IS TRUE UNION SELECT group_id FROM competitive.positions"

STORED = "SELECT group_id, members, price_rank, rating_rank, bsr_rank FROM competitive.positions WHERE group_id = ANY(%(groups)s)"

INSERT_ANALYSIS = """
INSERT INTO competitive_analyses (group_id, analysis_type, status, competitive_scores, position_summary,
                                  price_analysis, rating_analysis, bsr_analysis, data_freshness_hours,
                                  created_at, completed_at)
VALUES (%(group)s, 'standard', 'completed', %(scores)s, %(position)s, %(price)s, %(rating)s, %(bsr)s,
        %(freshness)s, now(), now())
RETURNING id
"""

UPSERT_POSITION = """
INSERT INTO competitive.positions AS p (group_id, members, price_rank, rating_rank, bsr_rank, analysis_id, computed_at)
VALUES (%(group)s, %(members)s, %(price_rank)s, %(rating_rank)s, %(bsr_rank)s, %(analysis)s, now())
ON CONFLICT (group_id) DO UPDATE
SET members = EXCLUDED.members, price_rank = EXCLUDED.price_rank, rating_rank = EXCLUDED.rating_rank,
    bsr_rank = EXCLUDED.bsr_rank, analysis_id = EXCLUDED.analysis_id, computed_at = now()
"""

FORGET = "DELETE FROM competitive.positions WHERE group_id = ANY(%(groups)s)"
