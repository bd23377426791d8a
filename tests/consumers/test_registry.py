"""Sinks by name: the registry is what ``insights consume`` offers, and every sink reads declared topics."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from consumers.registry import SINKS, build_loop, get, names
from core.errors import ConfigError
from core.settings import load_settings
from insights.cli.main import app
from streams.topics import declared_topics


def test_the_registry_holds_the_five_sinks_under_their_own_names() -> None:
    assert names() == ["scrape", "alerts", "summaries", "rules", "competitive"]
    settings = load_settings()
    for name, spec in SINKS.items():
        assert spec.build(settings).name == name


def test_an_unknown_sink_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="scrape, alerts, summaries, rules, competitive"):
        get("bogus")


def test_insights_consume_offers_exactly_the_registered_sinks() -> None:
    result = CliRunner().invoke(app, ["consume", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<scrape|alerts|summaries|rules|competitive>" in result.output
    refused = CliRunner().invoke(app, ["consume", "bogus"])
    assert refused.exit_code == 2


def test_every_sink_reads_topics_declared_in_streams_topics() -> None:
    settings = load_settings()
    declared = {spec.name for spec in declared_topics(settings)}
    for spec in SINKS.values():
        topics = spec.topics(settings)
        assert topics and set(topics) <= declared, (spec.name, topics)


def test_the_summaries_loop_reads_its_three_cdc_topics_in_one_group() -> None:
    settings = load_settings()
    loop = build_loop(settings, "summaries")
    assert loop.topics == [f"{settings.kafka.topic_prefix}.cdc.public.{t}" for t in ("products", "product_snapshots", "alerts")]
    assert loop.group == settings.consumer.group
    assert loop.source.before_consuming is not None  # creates the summaries' DLQs before the first record
