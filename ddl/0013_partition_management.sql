-- Partition management: the policy per partitioned table, a catalog view of partition bounds,
-- and functions that create partitions on demand without ever losing or rejecting a row.
--
-- Why in the database: consumers write as the least-privilege role insights_ingest, which
-- must not own tables (owning means it could DROP them), yet creating a partition requires
-- owning the parent. ensure_partitions() is SECURITY DEFINER (runs as the migration owner),
-- hardened with a fixed search_path, accepts only tables registered in partition_policy, and
-- is executable only by the roles granted in 0014_roles.sql.
--
-- Partitions are found through pg_inherits and their bounds (pg_get_expr(relpartbound)),
-- never by matching table names. Bounds are UTC instants: the seed's date literals were
-- interpreted in the session's TimeZone, so a session outside UTC shifted every partition.

CREATE TABLE partition_policy (
    parent    regclass PRIMARY KEY,
    period    text     NOT NULL CHECK (period IN ('month', 'day')),
    premake   integer  NOT NULL CHECK (premake BETWEEN 0 AND 400), -- periods created ahead
    retention interval CHECK (retention IS NULL OR retention > interval '0') -- NULL: keep forever
);

INSERT INTO partition_policy (parent, period, premake, retention) VALUES
    ('product_snapshots',    'month', 3,  interval '12 months'),
    ('competitive_analyses', 'month', 3,  NULL),
    ('alerts',               'month', 3,  interval '6 months'),
    ('api_usage_logs',       'day',   14, interval '3 months');

-- Every partition of a range-partitioned table keyed by one timestamptz column, with its
-- bounds as timestamptz (-infinity/infinity for MINVALUE/MAXVALUE, NULL for DEFAULT).
-- pg_get_expr prints the bounds in this session's TimeZone and DateStyle and the casts read
-- them back in the same session, so the round trip is exact.
CREATE VIEW partition_catalog AS
WITH parts AS (
    SELECT i.inhparent AS parent_oid,
           c.oid       AS part_oid,
           pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
    JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = i.inhparent
    JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
    WHERE pt.partstrat = 'r' AND pt.partnatts = 1
      AND a.atttypid = 'pg_catalog.timestamptz'::pg_catalog.regtype
), parsed AS (
    SELECT parent_oid, part_oid, bound = 'DEFAULT' AS is_default,
           pg_catalog.regexp_match(bound, '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS m
    FROM parts
)
SELECT parent_oid::regclass AS parent,
       part_oid::regclass   AS "partition",
       is_default,
       CASE WHEN m IS NULL THEN NULL
            WHEN m[1] = 'MINVALUE' THEN '-infinity'::timestamptz
            ELSE pg_catalog.btrim(m[1], '''')::timestamptz END AS lower_bound,
       CASE WHEN m IS NULL THEN NULL
            WHEN m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz
            ELSE pg_catalog.btrim(m[2], '''')::timestamptz END AS upper_bound
FROM parsed;

-- The period [lower_bound, upper_bound) containing p_at, in UTC.
CREATE FUNCTION partition_period(p_period text, p_at timestamptz,
                                 OUT lower_bound timestamptz, OUT upper_bound timestamptz)
LANGUAGE sql STABLE STRICT
AS $$
    SELECT pg_catalog.date_trunc(p_period, p_at, 'UTC'),
           (pg_catalog.timezone('UTC', pg_catalog.date_trunc(p_period, p_at, 'UTC'))
               + ('1 ' || p_period)::interval) AT TIME ZONE 'UTC'
$$;

-- Give a partition the grants its parent has. Access through the parent is checked on the
-- parent only, but anyone reading a partition directly (maintenance, CDC snapshots, ad-hoc
-- queries) needs the grants on the partition itself; GRANT ... ON ALL TABLES does not reach
-- tables created later.
CREATE FUNCTION copy_parent_grants(p_partition regclass) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_acl record;
BEGIN
    FOR v_acl IN
        SELECT a.privilege_type, a.grantee
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhparent
        CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE i.inhrelid = p_partition AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON TABLE %s TO %s', v_acl.privilege_type, p_partition,
                       CASE WHEN v_acl.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(v_acl.grantee)) END);
    END LOOP;
END;
$$;

-- Create the partitions that rows dated p_stamps need and do not have. Returns the
-- partitions created (none when everything is covered: the common, cheap case).
--
-- Safe under concurrent callers: creators of one table serialise on an advisory lock and
-- look at the catalog again after the wait, so the loser sees the winner's partition and
-- creates nothing. Rows already held by the DEFAULT partition for the new range are moved
-- into the new partition in the same transaction, so none is lost; the parent is locked
-- first (ACCESS EXCLUSIVE, as CREATE ... PARTITION OF needs anyway) to avoid a lock-upgrade
-- deadlock with writers. Call it in READ COMMITTED, in a short transaction of its own.
CREATE FUNCTION ensure_partitions(p_parent regclass, p_stamps timestamptz[])
RETURNS SETOF regclass
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_period  text;
    v_nsp     name;
    v_rel     name;
    v_key     name;
    v_cols    text;
    v_default regclass;
    v_at      timestamptz;
    v_lower   timestamptz;
    v_upper   timestamptz;
    v_name    text;
    v_suffix  integer;
    v_new     regclass;
    v_moved   bigint;
BEGIN
    SELECT p.period INTO v_period FROM public.partition_policy p WHERE p.parent = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition policy', p_parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR v_at IN
        SELECT min(s)
        FROM unnest(p_stamps) AS s
        WHERE s IS NOT NULL AND isfinite(s)
          AND NOT EXISTS (SELECT 1 FROM public.partition_catalog c
                          WHERE c.parent = p_parent AND NOT c.is_default
                            AND c.lower_bound <= s AND s < c.upper_bound)
        GROUP BY date_trunc(v_period, s, 'UTC')
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('insights.partitions:' || p_parent::oid::text, 0));
        CONTINUE WHEN EXISTS (SELECT 1 FROM public.partition_catalog c
                              WHERE c.parent = p_parent AND NOT c.is_default
                                AND c.lower_bound <= v_at AND v_at < c.upper_bound);

        SELECT pp.lower_bound, pp.upper_bound INTO v_lower, v_upper
        FROM public.partition_period(v_period, v_at) pp;
        -- clip to the gap around v_at, so a hand-made partition is never overlapped
        SELECT greatest(v_lower, max(c.upper_bound)) INTO v_lower FROM public.partition_catalog c
        WHERE c.parent = p_parent AND NOT c.is_default AND c.upper_bound <= v_at;
        SELECT least(v_upper, min(c.lower_bound)) INTO v_upper FROM public.partition_catalog c
        WHERE c.parent = p_parent AND NOT c.is_default AND c.lower_bound > v_at;

        SELECT n.nspname, c.relname INTO v_nsp, v_rel
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_parent;
        SELECT a.attname INTO v_key
        FROM pg_partitioned_table pt
        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
        WHERE pt.partrelid = p_parent;

        -- the name is for people only; nothing ever finds a partition by its name
        v_name := left(v_rel, 40) || '_' || to_char(v_lower AT TIME ZONE 'UTC',
                  CASE v_period WHEN 'day' THEN 'YYYY_MM_DD' ELSE 'YYYY_MM' END);
        v_suffix := 0;
        WHILE EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = v_nsp
                        AND c.relname = v_name || CASE WHEN v_suffix = 0 THEN '' ELSE '_' || v_suffix END)
        LOOP
            v_suffix := v_suffix + 1;
        END LOOP;
        IF v_suffix > 0 THEN
            v_name := v_name || '_' || v_suffix;
        END IF;

        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', p_parent);

        v_moved := 0;
        SELECT c.partition INTO v_default FROM public.partition_catalog c
        WHERE c.parent = p_parent AND c.is_default;
        IF v_default IS NOT NULL THEN
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
            FROM pg_attribute a WHERE a.attrelid = p_parent AND a.attnum > 0 AND NOT a.attisdropped;
            DROP TABLE IF EXISTS pg_temp.insights_partition_stash;
            EXECUTE format('CREATE TEMP TABLE insights_partition_stash (LIKE %s) ON COMMIT DROP', p_parent);
            EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING %s) '
                           'INSERT INTO pg_temp.insights_partition_stash (%s) SELECT %s FROM moved',
                           v_default, v_key, v_key, v_cols, v_cols, v_cols)
                USING v_lower, v_upper;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
        END IF;

        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       v_nsp, v_name, p_parent, v_lower, v_upper);
        v_new := format('%I.%I', v_nsp, v_name)::regclass;

        IF v_moved > 0 THEN
            EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE '
                           'SELECT %s FROM pg_temp.insights_partition_stash', p_parent, v_cols, v_cols);
            RAISE NOTICE 'moved % row(s) from % into %', v_moved, v_default, v_new;
        END IF;
        IF v_default IS NOT NULL THEN
            DROP TABLE pg_temp.insights_partition_stash;
        END IF;

        PERFORM public.copy_parent_grants(v_new);
        RETURN NEXT v_new;
    END LOOP;
END;
$fn$;

-- Split the DEFAULT partition: create the partitions its rows belong to (moving the rows).
CREATE FUNCTION split_default_partition(p_parent regclass)
RETURNS SETOF regclass
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period  text;
    v_key     name;
    v_default regclass;
    v_stamps  timestamptz[];
BEGIN
    SELECT p.period INTO v_period FROM public.partition_policy p WHERE p.parent = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition policy', p_parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.partition INTO v_default FROM public.partition_catalog c
    WHERE c.parent = p_parent AND c.is_default;
    IF v_default IS NULL THEN
        RETURN;
    END IF;
    SELECT a.attname INTO v_key
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
    WHERE pt.partrelid = p_parent;
    EXECUTE format('SELECT array_agg(s) FROM (SELECT min(%I) AS s FROM %s GROUP BY date_trunc(%L, %I, %L)) g',
                   v_key, v_default, v_period, v_key, 'UTC')
        INTO v_stamps;
    IF v_stamps IS NOT NULL THEN
        RETURN QUERY SELECT * FROM public.ensure_partitions(p_parent, v_stamps);
    END IF;
END;
$$;

-- Create the partitions around p_now: one period back (late data) to p_ahead periods ahead
-- (the policy's premake when p_ahead is NULL).
CREATE FUNCTION premake_partitions(p_parent regclass, p_now timestamptz DEFAULT now(),
                                   p_ahead integer DEFAULT NULL)
RETURNS SETOF regclass
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_policy public.partition_policy;
    v_start  timestamp;
BEGIN
    SELECT * INTO v_policy FROM public.partition_policy p WHERE p.parent = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition policy', p_parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_ahead IS NOT NULL AND p_ahead < 0 THEN
        RAISE EXCEPTION 'periods ahead must be >= 0, not %', p_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- step in UTC wall-clock time so daylight-saving changes never skew a bound
    v_start := timezone('UTC', date_trunc(v_policy.period, p_now, 'UTC'));
    RETURN QUERY SELECT * FROM public.ensure_partitions(p_parent, ARRAY(
        SELECT (v_start + (i || ' ' || v_policy.period)::interval) AT TIME ZONE 'UTC'
        FROM generate_series(-1, coalesce(p_ahead, v_policy.premake)) AS i));
END;
$$;

REVOKE ALL ON FUNCTION copy_parent_grants(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION ensure_partitions(regclass, timestamptz[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION split_default_partition(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION premake_partitions(regclass, timestamptz, integer) FROM PUBLIC;
