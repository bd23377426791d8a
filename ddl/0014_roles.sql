-- Roles (seed "Access Control"), without secrets.
--
-- Changes from the seed:
--  * no login users with hard-coded passwords ('secure_password'). The group roles are
--    NOLOGIN; insights_ingest and insights_cdc may log in but get no password here: an
--    operator sets one from settings (`insights db passwords`, which sends only a SCRAM
--    verifier) or uses another authentication method.
--  * roles are cluster-wide while migrations run per database: creation is guarded, and a
--    concurrent creation by another database's migration is tolerated.
--  * grants reach tables and partitions created later: ALTER DEFAULT PRIVILEGES for new
--    tables, and every partition copies its parent's grants when it is created (0013).
--  * app_readonly no longer reads api_keys.key_hash.
--  * insights_ingest: least privilege for the event consumers; insights_cdc: REPLICATION and
--    SELECT on the published tables (streams/topics.py CDC_TABLES).
DO $roles$
DECLARE
    v_role  text;
    v_attrs text;
BEGIN
    FOR v_role, v_attrs IN VALUES
        ('app_readonly', 'NOLOGIN'),
        ('app_readwrite', 'NOLOGIN'),
        ('app_admin', 'NOLOGIN'),
        ('insights_ingest', 'LOGIN'),
        ('insights_cdc', 'LOGIN REPLICATION')
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I %s', v_role, v_attrs);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created a moment ago by the migration of another database in this cluster
        END;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA public TO app_readonly, app_readwrite, app_admin, insights_ingest, insights_cdc;

-- app_readonly: everything but the API key hashes
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_readonly;
REVOKE SELECT ON api_keys FROM app_readonly;
GRANT SELECT (id, key_id, name, key_type, permissions, rate_limit_tier, is_active, last_used_at,
              usage_count, expires_at, created_by, metadata, created_at, updated_at)
    ON api_keys TO app_readonly;

-- app_readwrite: the application (it verifies API keys, so it reads key_hash)
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO app_readwrite;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO app_readwrite;

-- app_admin
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO app_admin;
GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO app_admin;

-- insights_ingest: exactly what the event consumers write
GRANT SELECT, INSERT, UPDATE ON products, product_snapshots, product_features, alerts,
                                consumer_offsets TO insights_ingest;
GRANT SELECT ON alert_rules TO insights_ingest;
GRANT UPDATE (trigger_count, last_triggered_at) ON alert_rules TO insights_ingest;

-- insights_cdc: reads the published tables (initial snapshots) and streams changes
GRANT SELECT ON products, product_snapshots, alerts, alert_rules, competitive_groups,
                competitive_group_members TO insights_cdc;

-- partitions on demand for the writers
GRANT EXECUTE ON FUNCTION ensure_partitions(regclass, timestamptz[])
    TO insights_ingest, app_readwrite, app_admin;
GRANT EXECUTE ON FUNCTION split_default_partition(regclass) TO app_admin;
GRANT EXECUTE ON FUNCTION premake_partitions(regclass, timestamptz, integer) TO app_admin;

-- tables created later by the migration owner (which also owns every partition, since the
-- partition functions run as it)
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO app_readwrite;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL PRIVILEGES ON TABLES TO app_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO app_readwrite;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL PRIVILEGES ON SEQUENCES TO app_admin;

-- partitions that exist already (the DEFAULT ones) get their parent's grants
SELECT copy_parent_grants(c."partition") FROM partition_catalog c;
