-- cdc_schemas: the versions of the typed CDC change events (INSIGHTS_CDC_FORMAT=typed,
-- docs/cdc.md "Typed change events") when no schema registry is configured. One row per
-- version of each subject (<topic>-value, one per published table). Each event starts with
-- Avro single-object encoding's header: C3 01 and the 8-byte fingerprint of this table's
-- fingerprint column, which is how a consumer finds the schema the event was written with.
-- The fingerprint is CRC-64-AVRO of the schema's JSON with sorted keys (not of the Parsing
-- Canonical Form, which drops logical types: decimal(10,2) and decimal(10,3) would collide).
-- Rows are only added: a version, once events use it, is needed for as long as they exist.
CREATE TABLE cdc_schemas (
    subject       text        NOT NULL,
    version       integer     NOT NULL CONSTRAINT cdc_schemas_version_check CHECK (version > 0),
    fingerprint   bytea       NOT NULL CONSTRAINT cdc_schemas_fingerprint_check CHECK (octet_length(fingerprint) = 8),
    schema        jsonb       NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cdc_schemas_pkey PRIMARY KEY (subject, version),
    -- the same schema registered twice is one version (a reverted ALTER TABLE finds its old one)
    CONSTRAINT cdc_schemas_subject_fingerprint_key UNIQUE (subject, fingerprint)
);

-- consumers look a schema up by the fingerprint alone
CREATE INDEX idx_cdc_schemas_fingerprint ON cdc_schemas (fingerprint);

-- the reader registers versions; it never changes or removes one
GRANT SELECT, INSERT ON cdc_schemas TO insights_cdc;
