-- alert_rules.version_at: since when the rule's current version (its meaning) exists.
--
-- A snapshot read (op 'r': `cdc resync`, `cdc snapshot`, full or incremental) republishes
-- every stored snapshot. The engine evaluates a rule version on a pair of snapshots read
-- that way only if the version could have seen that pair live: one of the two rows was
-- stored (product_snapshots.created_at) at or after version_at. Otherwise a rule created
-- (or changed) after the history was stored would fire on all of it at the next resync
-- (docs/alert-rules.md, "Snapshot reads").
--
-- Set on insert by the default and by the version trigger (0017) whenever the version moves.
-- Backfill: a version-1 rule has existed since created_at; for a later version the exact
-- time is lost, so the earliest time known to be at or after it: the first firing of that
-- version, or updated_at (which the alerts consumer also moves, so it can only be later).
-- Later errs on the side of skipping a pair, never of an alert storm. An operator who wants
-- the next resync to evaluate a rule on older history sets version_at back by hand (the
-- trigger only moves it with the version).
ALTER TABLE alert_rules ADD COLUMN version_at timestamptz;

UPDATE alert_rules r SET version_at = CASE
    WHEN r.version = 1 THEN r.created_at
    ELSE LEAST(r.updated_at, (SELECT min(f.fired_at) FROM rules.firings f
                              WHERE f.rule_id = r.id AND f.rule_version = r.version))
END;

ALTER TABLE alert_rules
    ALTER COLUMN version_at SET DEFAULT now(),
    ALTER COLUMN version_at SET NOT NULL;

CREATE OR REPLACE FUNCTION alert_rules_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.rule_type, NEW.target_type, NEW.target_id, NEW.conditions, NEW.severity)
       IS DISTINCT FROM (OLD.rule_type, OLD.target_type, OLD.target_id, OLD.conditions, OLD.severity) THEN
        NEW.version := OLD.version + 1;
        NEW.version_at := now();
    END IF;
    RETURN NEW;
END
$$;
