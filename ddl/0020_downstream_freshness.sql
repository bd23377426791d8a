-- downstream_freshness: per consumer of the CDC topics (summaries, rules, competitive), the
-- newest source commit it applied and how long after their scrape the snapshots of its
-- last batch were applied (consumers/freshness.py). Written in the batch transaction, so
-- it is exactly as fresh as what the consumer committed; read by `insights status`.
CREATE TABLE downstream_freshness (
    consumer           text        NOT NULL,
    consumer_group     text        NOT NULL,
    applied_commit_at  timestamptz NOT NULL, -- newest source commit time applied
    applied_at         timestamptz NOT NULL, -- when that batch committed (its transaction's time)
    newest_scraped_at  timestamptz,          -- newest scraped_at among the batch's snapshots
    scrape_lag_seconds double precision,     -- applied_at - newest_scraped_at of that batch
    PRIMARY KEY (consumer, consumer_group)
);
