-- competitive.positions: the main product's current rank in each active competitive group
-- (consumers/competitive, docs/competitive.md), kept from the CDC stream. A row changes
-- only when the position does (ranks by price, rating and BSR, or the number of ranked
-- members); each change writes one competitive_analyses row, in the same transaction, so
-- a redelivered or replayed change (which finds the position unchanged) writes none.
CREATE SCHEMA competitive;

CREATE TABLE competitive.positions (
    group_id    integer     PRIMARY KEY,
    members     integer     NOT NULL, -- active members and the main product
    price_rank  integer,              -- 1 = cheapest; null: the main product has no current price
    rating_rank integer,              -- 1 = best rated
    bsr_rank    integer,              -- 1 = best seller (in the group's industry_category)
    analysis_id bigint,               -- the competitive_analyses row this position wrote
    computed_at timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA competitive TO app_readonly, app_readwrite, app_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA competitive TO app_readonly, app_readwrite;
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA competitive TO app_admin;
