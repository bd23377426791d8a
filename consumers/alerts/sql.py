"""The alerts sink's SQL.

``alerts`` is insert-only and keyed by the producing event (``event_id, triggered_at``).
The rule counters must count each alert once however often it is delivered, so they
are derived from the rows the INSERT actually added (``RETURNING`` of an ``ON CONFLICT
DO NOTHING`` yields only those), in the same statement.
"""

from __future__ import annotations

from consumers.alerts.mapping import ALERT_COLUMNS

CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_alerts (
    event_id uuid, rule_id int4, alert_type text, target_asin text, severity text, title text,
    message text, old_value jsonb, new_value jsonb, change_percentage numeric, metadata jsonb,
    triggered_at timestamptz
) ON COMMIT DROP;
TRUNCATE stage_alerts;
"""

COPY_ALERTS = f"COPY stage_alerts ({', '.join(ALERT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

INSERT_AND_COUNT = f"""
WITH inserted AS (
    INSERT INTO alerts ({', '.join(ALERT_COLUMNS)})
    SELECT {', '.join(ALERT_COLUMNS)} FROM stage_alerts
    ON CONFLICT (event_id, triggered_at) DO NOTHING
    RETURNING rule_id, triggered_at
), per_rule AS (
    SELECT rule_id, count(*) AS n, max(triggered_at) AS newest
    FROM inserted WHERE rule_id IS NOT NULL GROUP BY rule_id
), bumped AS (
    UPDATE alert_rules AS r
    SET trigger_count = COALESCE(r.trigger_count, 0) + per_rule.n,
        last_triggered_at = GREATEST(r.last_triggered_at, per_rule.newest),
        updated_at = now()
    FROM per_rule WHERE r.id = per_rule.rule_id
    RETURNING r.id
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM bumped)
"""
