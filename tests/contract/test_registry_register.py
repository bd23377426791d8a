"""`insights schemas register` against confluent-kafka's mock registry (no real one runs here)."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner

from insights.cli.main import app
from core.settings import load_settings
from streams.serde import RecordContext, make_deserializer, make_serializer
from streams.serde.registry import registry_client
from streams.topics import event_topics
from tests.contract.helpers import repo_store
from tests.contract.test_property_roundtrip import next_event


def test_register_puts_every_version_under_topic_subjects_and_serde_reuses_the_ids(monkeypatch) -> None:
    url = f"mock://{uuid.uuid4().hex}"
    monkeypatch.setenv("INSIGHTS_SCHEMA_REGISTRY_URL", url)
    result = CliRunner().invoke(app, ["schemas", "register"], terminal_width=200)
    assert result.exit_code == 0, result.output
    client = registry_client(url)
    settings = load_settings(schema_registry_url=url)
    scrape_topic = next(t.name for t in event_topics(settings) if t.value_subject == "product_scraped")
    subject = f"{scrape_topic}-value"
    assert sorted(client.get_versions(subject)) == [1, 2]  # the mock lists them in no set order
    v2 = client.get_version(subject, 2)
    assert v2.schema.schema_str == repo_store().subject("product_scraped").version(2).text
    # a serializer finds the registered id instead of making a new one
    data = make_serializer(settings, "product_scraped")(next_event(), RecordContext(scrape_topic))
    assert int.from_bytes(data[1:5], "big") == v2.schema_id
    assert make_deserializer(settings, "product_scraped")(data, RecordContext(scrape_topic, 0, 0))["currency"] == "USD"


def test_register_without_a_registry_is_a_config_error(monkeypatch) -> None:
    from core.errors import ConfigError

    monkeypatch.delenv("INSIGHTS_SCHEMA_REGISTRY_URL", raising=False)
    result = CliRunner().invoke(app, ["schemas", "register"])
    assert isinstance(result.exception, ConfigError)
