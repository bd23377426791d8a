"""drift_of: the pure comparison of a declared topic with what the broker reports."""

from __future__ import annotations

import dataclasses

from core.settings import load_settings
from streams.admin import LiveTopic, drift_of
from streams.topics import event_topics


def _spec():
    return event_topics(load_settings(topic_prefix="unit"))[0]


def _live(spec, **changes):
    base = LiveTopic(spec.name, spec.partitions, spec.replication_factor, dict(spec.config()))
    return dataclasses.replace(base, **changes)


def test_matching_topic_has_no_drift():
    spec = _spec()
    # the broker reports many more configs than we declare: only declared keys count
    live = _live(spec, config={**spec.config(), "segment.bytes": "1073741824"})
    assert drift_of(spec, live) == ()


def test_fewer_partitions_is_fixable_more_is_not():
    spec = _spec()
    fewer = drift_of(spec, _live(spec, partitions=spec.partitions - 2))
    more = drift_of(spec, _live(spec, partitions=spec.partitions + 2))
    assert [(d.kind, d.fixable) for d in fewer] == [("partitions", True)]
    assert [(d.kind, d.fixable) for d in more] == [("partitions", False)]
    assert fewer[0].declared == str(spec.partitions) and fewer[0].live == str(spec.partitions - 2)


def test_replication_factor_drift_is_never_fixable():
    spec = _spec()
    (drift,) = drift_of(spec, _live(spec, replication_factor=3))
    assert drift.name == "replication.factor" and not drift.fixable


def test_config_drift_names_key_and_both_values():
    spec = _spec()
    live = _live(spec, config={"cleanup.policy": "compact", "retention.ms": spec.config()["retention.ms"]})
    (drift,) = drift_of(spec, live)
    assert (drift.kind, drift.name, drift.declared, drift.live) == ("config", "cleanup.policy", "delete", "compact")
    assert "declared delete, live compact" in str(drift)


def test_missing_config_reported_as_none():
    spec = _spec()
    (drift,) = drift_of(spec, _live(spec, config={"cleanup.policy": "delete"}))
    assert drift.name == "retention.ms" and drift.live is None
