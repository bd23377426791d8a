-- products: one row per tracked ASIN (seed §1).
-- Changes from the seed: last_scraped_at (event time of the newest scrape applied) lets
-- consumers apply catalog fields only when an event is newer than what is stored.
CREATE TABLE products (
    asin               varchar(10)  PRIMARY KEY,
    title              varchar(500) NOT NULL,
    brand              varchar(100),
    category           varchar(200),
    manufacturer       varchar(100),
    model              varchar(100),
    dimensions         jsonb,
    weight             numeric(8,2),
    first_tracked_at   timestamptz  NOT NULL DEFAULT now(),
    last_updated_at    timestamptz  NOT NULL DEFAULT now(),
    is_active          boolean      NOT NULL DEFAULT true,
    tracking_frequency interval     DEFAULT '24 hours',
    metadata           jsonb        DEFAULT '{}',
    last_scraped_at    timestamptz,
    created_at         timestamptz  NOT NULL DEFAULT now(),
    updated_at         timestamptz  NOT NULL DEFAULT now()
);

CREATE INDEX idx_products_brand ON products (brand);
CREATE INDEX idx_products_category ON products (category);
CREATE INDEX idx_products_last_updated ON products (last_updated_at);
CREATE INDEX idx_products_active ON products (is_active);
CREATE INDEX idx_products_metadata ON products USING gin (metadata);
-- seed "Partial Indexes"
CREATE INDEX idx_products_active_updated ON products (last_updated_at) WHERE is_active = true;
