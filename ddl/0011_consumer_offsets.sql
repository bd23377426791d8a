-- consumer_offsets: the next Kafka offset each consumer group will read, per topic partition.
-- Consumers write it in the same transaction as the rows a batch produced, so rows and
-- offsets commit (or roll back) together: exactly-once effect on the database.
CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    "partition"    integer     NOT NULL CHECK ("partition" >= 0),
    next_offset    bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, "partition")
);
