"""The declared event identities agree with the schemas' docs, the AsyncAPI document and the
database's unique keys (the consumer behaviour is tested in tests/consumers/test_identity.py)."""

from __future__ import annotations

import psycopg
import pytest
import yaml

from core.paths import REPO_ROOT
from streams.contracts.identity import IDENTITIES
from tests.contract.helpers import repo_store


@pytest.mark.parametrize("subject", sorted(IDENTITIES))
def test_identity_fields_exist_and_every_version_documents_them(subject: str) -> None:
    identity = IDENTITIES[subject]
    for version in repo_store().subject(subject).versions:
        fields = {f["name"]: f for f in version.raw["fields"]}
        assert set(identity.fields) <= set(fields), version.label
        assert "Identity:" in version.raw["doc"], version.label
        event_id_doc = fields["event_id"]["doc"]
        # the old promise, untrue for scrapes, must not come back
        assert "consumers deduplicate on it" not in event_id_doc
        assert "never reused" in event_id_doc
        for name in identity.fields:
            assert "identity" in fields[name]["doc"].lower(), (version.label, name)


def test_asyncapi_carries_the_identities() -> None:
    doc = yaml.safe_load((REPO_ROOT / "schemas" / "asyncapi.yaml").read_text(encoding="utf-8"))
    seen = set()
    for message in doc["components"]["messages"].values():
        found = message.get("x-identity")
        if found is None:
            continue
        subject = message["title"].split()[0]
        identity = IDENTITIES[subject]
        assert found == {"fields": list(identity.fields), "table": identity.table, "uniqueKey": list(identity.key)}
        seen.add(subject)
    assert seen == set(IDENTITIES)


@pytest.mark.integration
@pytest.mark.parametrize("subject", sorted(IDENTITIES))
def test_identity_key_is_a_unique_key_of_its_table(subject: str, pg: psycopg.Connection) -> None:
    identity = IDENTITIES[subject]
    keys = {
        tuple(row[0])
        for row in pg.execute(
            """
            SELECT array_agg(a.attname::text ORDER BY k.ord)
            FROM pg_constraint c
            CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
            WHERE c.conrelid = %s::regclass AND c.contype = 'u'
            GROUP BY c.oid
            """,
            (identity.table,),
        ).fetchall()
    }
    assert identity.key in keys
    # the identity's fields are all in the key: a copy is always caught by it
    assert set(identity.fields) <= set(identity.key)
