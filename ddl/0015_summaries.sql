-- summaries: product summaries kept fresh from the CDC topics (consumers/summaries,
-- docs/summaries.md), replacing REFRESH MATERIALIZED VIEW product_summary_view.
--
-- Its own schema, as if it lived in a downstream store: nothing here references or reads
-- the source tables. The consumer only knows what the change events carry.
--
-- Three "state" tables mirror the few source columns a summary needs, one row per source
-- primary key, live or deleted (a tombstone), with the version of the change that set
-- it: (commit_lsn, lsn) of the envelope's source. A change is applied only when its
-- version is newer than the row's, so a redelivered or replayed event is a no-op and a
-- replayed old insert cannot bring a deleted row back. Tombstones are purged by
-- `insights summaries sweep` once no redelivery can be older than them.
--
-- Types are the widest of their kind (text, numeric, jsonb): a downstream store must
-- accept every value the source accepted.
CREATE SCHEMA summaries;

CREATE TABLE summaries.products (
    asin        text        PRIMARY KEY,
    title       text,
    brand       text,
    category    text,
    is_active   boolean,
    deleted     boolean     NOT NULL DEFAULT false,
    commit_lsn  bigint      NOT NULL,
    lsn         bigint      NOT NULL,
    changed_at  timestamptz NOT NULL  -- commit time of the change (tombstone expiry)
);

-- product_snapshots' key is (id, scraped_at); a delete event carries only that key,
-- so the ASIN it belonged to comes from here.
CREATE TABLE summaries.snapshots (
    id                  bigint      NOT NULL,
    scraped_at          timestamptz NOT NULL,
    asin                text,
    price               numeric,
    rating              numeric,
    review_count        integer,
    bsr_data            jsonb,
    availability_status text,
    deleted             boolean     NOT NULL DEFAULT false,
    commit_lsn          bigint      NOT NULL,
    lsn                 bigint      NOT NULL,
    changed_at          timestamptz NOT NULL,
    PRIMARY KEY (id, scraped_at)
);
-- newest snapshot and 30-day price window of one ASIN
CREATE INDEX idx_summaries_snapshots_asin_time ON summaries.snapshots (asin, scraped_at DESC) WHERE NOT deleted;
CREATE INDEX idx_summaries_snapshots_tombstones ON summaries.snapshots (changed_at) WHERE deleted;

CREATE TABLE summaries.alerts (
    id           bigint      NOT NULL,
    triggered_at timestamptz NOT NULL,
    target_asin  text,
    is_read      boolean,
    is_resolved  boolean,
    deleted      boolean     NOT NULL DEFAULT false,
    commit_lsn   bigint      NOT NULL,
    lsn          bigint      NOT NULL,
    changed_at   timestamptz NOT NULL,
    PRIMARY KEY (id, triggered_at)
);
CREATE INDEX idx_summaries_alerts_asin ON summaries.alerts (target_asin) WHERE NOT deleted;
CREATE INDEX idx_summaries_alerts_tombstones ON summaries.alerts (changed_at) WHERE deleted;
CREATE INDEX idx_summaries_products_tombstones ON summaries.products (changed_at) WHERE deleted;

-- The newest TRUNCATE seen per source table: rows older than it are gone, and an event
-- older than it (a redelivery) is ignored.
CREATE TABLE summaries.truncations (
    source_table text        PRIMARY KEY,
    commit_lsn   bigint      NOT NULL,
    lsn          bigint      NOT NULL,
    truncated_at timestamptz NOT NULL
);

-- One row per known product (active or not): product_summary_view's columns plus alert
-- counts. window_expires_at is when the oldest price inside the 30-day window leaves it:
-- the sweep recomputes rows whose edge passed.
CREATE TABLE summaries.product_summary (
    asin                 text        PRIMARY KEY,
    title                text,
    brand                text,
    category             text,
    is_active            boolean,
    current_price        numeric,
    current_rating       numeric,
    current_review_count integer,
    bsr_data             jsonb,
    availability_status  text,
    last_updated         timestamptz,
    min_price_30d        numeric,
    max_price_30d        numeric,
    avg_price_30d        numeric,
    alerts_total         integer     NOT NULL DEFAULT 0,
    alerts_unread        integer     NOT NULL DEFAULT 0,
    alerts_unresolved    integer     NOT NULL DEFAULT 0,
    window_expires_at    timestamptz,
    computed_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_summaries_window ON summaries.product_summary (window_expires_at)
    WHERE window_expires_at IS NOT NULL;
CREATE INDEX idx_summaries_brand ON summaries.product_summary (brand);
CREATE INDEX idx_summaries_category ON summaries.product_summary (category);

-- Readers of the summaries are the application's roles (0014). The summaries consumer
-- writes as the schema owner (it deletes rows, which insights_ingest may never do on the
-- source tables); a dedicated service role is left to the roles migration.
GRANT USAGE ON SCHEMA summaries TO app_readonly, app_readwrite, app_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA summaries TO app_readonly, app_readwrite;
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA summaries TO app_admin;
