"""Batch consumers ask the broker for filled fetches (streams/kafka/clients.batch_fetch).

Why: at 2,000 events/s librdkafka's prompt fetches (fetch.min.bytes 1) cost the broker
176 us of CPU per event across the pipeline's four groups and the summaries missed their
1 s p99; filled fetches halved the broker's share (BENCHMARKS.md "Downstream latency").
"""

from __future__ import annotations

import pytest

from consumers.registry import build_loop
from core.errors import ConfigError
from core.settings import load_settings
from streams.kafka import batch_fetch, consumer_config


def test_batch_consumers_get_the_fetch_settings_and_the_default_is_the_measured_one():
    settings = load_settings()
    assert batch_fetch(settings.consumer) == {"fetch.wait.max.ms": 100, "fetch.min.bytes": 262_144}
    conf = consumer_config(settings.kafka, "g", batching=settings.consumer)
    assert conf["fetch.wait.max.ms"] == 100 and conf["fetch.min.bytes"] == 262_144


def test_the_settings_tune_them_and_a_kafka_override_still_wins(monkeypatch):
    monkeypatch.setenv("INSIGHTS_FETCH_WAIT_MS", "30")
    monkeypatch.setenv("INSIGHTS_FETCH_MIN_BYTES", "1024")
    settings = load_settings()
    conf = consumer_config(settings.kafka, "g", batching=settings.consumer)
    assert (conf["fetch.wait.max.ms"], conf["fetch.min.bytes"]) == (30, 1024)
    monkeypatch.setenv("INSIGHTS_KAFKA_OVERRIDES", '{"fetch.wait.max.ms": "7"}')
    settings = load_settings()
    conf = consumer_config(settings.kafka, "g", batching=settings.consumer)
    assert conf["fetch.wait.max.ms"] == "7" and conf["fetch.min.bytes"] == 1024


def test_a_command_reading_a_few_records_keeps_prompt_fetches():
    conf = consumer_config(load_settings().kafka, "g")
    assert "fetch.wait.max.ms" not in conf and "fetch.min.bytes" not in conf


@pytest.mark.parametrize("sink", ["scrape", "alerts", "summaries", "rules"])
def test_every_sink_loop_builds_its_consumer_with_them(monkeypatch, sink):
    monkeypatch.setenv("INSIGHTS_FETCH_WAIT_MS", "40")
    loop = build_loop(load_settings(), sink)
    try:
        conf = loop.client_config()
    finally:
        loop.writer.close()
    assert conf["fetch.wait.max.ms"] == 40 and conf["fetch.min.bytes"] == 262_144
    assert conf["enable.auto.commit"] is False  # the loop's own properties are still there


@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_a_bad_fetch_wait_is_a_config_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("INSIGHTS_FETCH_WAIT_MS", value)
    with pytest.raises(ConfigError, match="FETCH_WAIT_MS"):
        load_settings()
