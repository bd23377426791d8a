"""Least privilege, checked: the catalog's grants equal the table in ddl/README.md, and the
check fails as soon as a grant is widened (the README table is parsed, so doc and test agree)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from insights.db import grants, partitions

pytestmark = pytest.mark.integration


def test_readme_table_names_every_role_and_the_secrets_rules() -> None:
    exp = grants.expected_from_readme()
    assert exp.roles == ["app_admin", "app_readonly", "app_readwrite", "insights_cdc", "insights_ingest"]
    assert exp.attributes["insights_cdc"] == {"LOGIN", "REPLICATION"}
    # the parse is what the test relies on: spot-check it against the promises of issue 15
    assert "SELECT" not in exp.column_privs("app_readonly", "public.api_keys", "key_hash")
    assert "SELECT" in exp.column_privs("app_readonly", "public.api_keys", "key_id")
    assert exp.table_privs("insights_ingest", "public.api_keys") == set()
    assert not exp.table_privs("insights_ingest", "public.products") & {"DELETE", "TRUNCATE"}
    assert exp.table_privs("app_readonly", "summaries.product_summary") == {"SELECT"}


def test_the_catalog_matches_the_readme(pg: psycopg.Connection) -> None:
    assert grants.check(pg) == []


def test_partitions_created_later_carry_exactly_their_parents_grants(pg: psycopg.Connection) -> None:
    made = []
    for table in ("product_snapshots", "alerts", "api_usage_logs", "competitive_analyses"):
        made += partitions.ensure_partitions_for(pg, table, [datetime(2035, 3, 3, tzinfo=UTC)])
    assert len(made) == 4
    assert grants.check(pg) == []
    # and the check does look at them: a grant on one partition only is found
    pg.execute(f'GRANT DELETE ON "{made[0]}" TO insights_ingest')
    assert grants.check(pg) == [f"insights_ingest: DELETE on public.{made[0]} (partition of public.product_snapshots), "
                            "not in the table"]


WIDENINGS = [
    ("GRANT DELETE ON products TO insights_ingest", "insights_ingest: DELETE on public.products, not in the table"),
    ("GRANT TRUNCATE ON alerts TO insights_ingest", "insights_ingest: TRUNCATE on public.alerts, not in the table"),
    ("GRANT SELECT (key_hash) ON api_keys TO app_readonly",
     "app_readonly: SELECT on column public.api_keys.key_hash, not in the table"),
    ("GRANT SELECT ON api_keys TO insights_ingest", "insights_ingest: SELECT on public.api_keys, not in the table"),
    ("GRANT SELECT ON api_usage_logs TO insights_cdc",
     "insights_cdc: SELECT on public.api_usage_logs, not in the table"),
    ("GRANT CREATE ON SCHEMA public TO insights_ingest",
     "insights_ingest: CREATE on schema public, not in the table"),
    ("ALTER TABLE consumer_offsets OWNER TO insights_ingest",
     "insights_ingest: owns public.consumer_offsets (so it can ALTER and DROP it)"),
    ("GRANT app_admin TO insights_ingest", "insights_ingest: is a member of app_admin"),
    ("GRANT EXECUTE ON FUNCTION split_default_partition(regclass) TO insights_ingest",
     "insights_ingest: EXECUTE on public.split_default_partition(regclass), not in the table"),
    ("GRANT EXECUTE ON FUNCTION copy_parent_grants(regclass) TO PUBLIC",
     "function public.copy_parent_grants(regclass): SECURITY DEFINER and executable by PUBLIC"),
    ("ALTER FUNCTION premake_partitions(regclass, timestamptz, integer) RESET search_path",
     "function public.premake_partitions(regclass,timestamp with time zone,integer): "
     "SECURITY DEFINER without a fixed search_path"),
    ("REVOKE SELECT ON summaries.product_summary FROM app_readonly",
     "app_readonly: lacks SELECT on summaries.product_summary"),
    ("ALTER ROLE insights_cdc CREATEDB", "insights_cdc: has attribute CREATEDB, not in the table"),
]


def test_the_check_fails_when_a_grant_is_widened(pg: psycopg.Connection) -> None:
    """Each change runs in a transaction that is rolled back (roles are cluster-wide); one
    database for all cases, since creating one is the slow part."""
    for widen, finding in WIDENINGS:
        with pytest.raises(_Rollback):
            with pg.transaction():
                pg.execute(widen)
                found = grants.check(pg)
                assert finding in found, (widen, found)
                raise _Rollback
        assert grants.check(pg) == [], widen


class _Rollback(Exception):
    pass
