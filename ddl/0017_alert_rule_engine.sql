-- The alert-rule engine (consumers/rules, docs/alert-rules.md): rule versions and what fired.
--
-- alert_rules.version: an alert's event_id is derived from (rule id, rule version,
-- snapshot key), so that a redelivered change, a restart or a replay of the CDC topic
-- yields the same event, while a rule whose meaning changed is a new rule for the
-- snapshots it fires on. The version moves only when the meaning moves (type, target,
-- conditions, severity): the alerts consumer's counter updates (trigger_count,
-- last_triggered_at, updated_at) and enabling/disabling leave it alone.
ALTER TABLE alert_rules ADD COLUMN version integer NOT NULL DEFAULT 1;

CREATE FUNCTION alert_rules_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.rule_type, NEW.target_type, NEW.target_id, NEW.conditions, NEW.severity)
       IS DISTINCT FROM (OLD.rule_type, OLD.target_type, OLD.target_id, OLD.conditions, OLD.severity) THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER alert_rules_version BEFORE UPDATE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION alert_rules_bump_version();

-- rules.firings: one row per (rule, rule version, snapshot) the engine fired on, written in
-- the engine's batch transaction with its offsets. It is how the engine knows, across
-- batches and restarts, that a snapshot already fired (a second evaluation publishes
-- nothing new), which snapshot it was compared with (a late snapshot that splits that
-- pair does not report the same change again) and when a rule last fired for a product
-- (cooldown). The alert itself is stored by the alerts consumer, keyed by event_id.
CREATE SCHEMA rules;

CREATE TABLE rules.firings (
    rule_id         integer     NOT NULL,
    rule_version    integer     NOT NULL,
    asin            text        NOT NULL,
    scraped_at      timestamptz NOT NULL,
    -- the predecessor it was compared with (by scraped_at)
    previous_at     timestamptz NOT NULL,
    event_id        uuid        NOT NULL,
    fired_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, rule_version, asin, scraped_at)
);

CREATE INDEX idx_firings_asin ON rules.firings (asin, rule_id, scraped_at);

GRANT USAGE ON SCHEMA rules TO app_readonly, app_readwrite, app_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA rules TO app_readonly, app_readwrite;
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA rules TO app_admin;
