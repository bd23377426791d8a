-- Operator replays (docs/replay.md): the range of an event replay, and the dead letters re-driven.

-- replay_runs: the fixed range of an `insights replay events` run, per topic partition.
-- The range is decided once, when a replay of that name first starts (its end is the log end
-- or --to-time/--to-offset as of then), and kept here so that the same command after a
-- Ctrl-C continues the same range: records written later are not part of it. The progress
-- itself is a consumer_offsets row under the replay's group, written in the batch
-- transaction with the rows, like any consumer's.
CREATE TABLE replay_runs (
    replay_name   text        NOT NULL,
    topic         text        NOT NULL,
    "partition"   integer     NOT NULL CHECK ("partition" >= 0),
    start_offset  bigint      NOT NULL CHECK (start_offset >= 0),
    end_offset    bigint      NOT NULL CHECK (end_offset >= start_offset),
    -- the sink and the options the range was computed from: a rerun with other options is refused
    sink          text        NOT NULL,
    request       text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replay_name, topic, "partition")
);

GRANT SELECT, INSERT, UPDATE, DELETE ON replay_runs TO insights_ingest;

-- dlq_replays: each dead letter `insights dlq replay` re-published, and where it went. A
-- filtered replay re-drives records out of order, so "replayed" is kept per record, not
-- only as the replayer group's committed offset (the prefix every record of which was
-- handled). target_* is the re-published record's position in the event topic: a dead
-- letter whose original position is one of them failed again (`insights dlq list`).
CREATE TABLE dlq_replays (
    dlq_topic        text        NOT NULL,
    "partition"      integer     NOT NULL CHECK ("partition" >= 0),
    "offset"         bigint      NOT NULL CHECK ("offset" >= 0),
    error_class      text        NOT NULL,
    target_topic     text        NOT NULL,
    target_partition integer     NOT NULL,
    target_offset    bigint      NOT NULL,
    replayed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, "partition", "offset")
);

CREATE INDEX idx_dlq_replays_target ON dlq_replays (target_topic, target_partition, target_offset);
