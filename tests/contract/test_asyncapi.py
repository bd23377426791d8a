"""The AsyncAPI document is generated, current, and consistent with the topics and schemas."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from core.paths import REPO_ROOT
from insights.cli.main import app
from core.settings import load_settings
from streams.contracts.asyncapi import render_asyncapi
from streams.topics import event_topics
from tests.contract.helpers import repo_store

DOC = REPO_ROOT / "schemas" / "asyncapi.yaml"


def test_the_committed_document_is_current() -> None:
    rendered = render_asyncapi(repo_store(), load_settings())
    assert DOC.read_text(encoding="utf-8") == rendered, "run `insights schemas docs`"


def test_the_document_does_not_depend_on_the_callers_topic_prefix() -> None:
    # the caller passes its settings; the prefix becomes the {prefix} parameter either way
    one = render_asyncapi(repo_store(), load_settings(topic_prefix="one"))
    other = render_asyncapi(repo_store(), load_settings(topic_prefix="other.env"))
    assert one == other
    assert "one." not in one and "other.env" not in other


def test_cli_docs_check_agrees() -> None:
    result = CliRunner().invoke(app, ["schemas", "docs", "--check"])
    assert result.exit_code == 0, result.output


def test_cli_docs_check_fails_on_a_stale_file(tmp_path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n")
    result = CliRunner().invoke(app, ["schemas", "docs", "--check", "--output", str(stale)])
    assert result.exit_code == 1
    assert CliRunner().invoke(app, ["schemas", "docs", "--output", str(stale)]).exit_code == 0
    assert stale.read_text() == render_asyncapi(repo_store(), load_settings())


def test_document_covers_every_topic_and_version_with_resolvable_refs() -> None:
    doc = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    topics = event_topics(load_settings(topic_prefix="insights"))
    addresses = {c["address"].replace("{prefix}", "insights") for c in doc["channels"].values()}
    assert addresses == {t.name for t in topics}
    messages = doc["components"]["messages"]
    for spec in topics:
        if spec.value_subject:
            for version in repo_store().subject(spec.value_subject).versions:
                message = messages[f"{spec.value_subject}_v{version.version}"]
                assert message["payload"]["schema"] == version.raw
    for channel_id, channel in doc["channels"].items():
        for ref in channel["messages"].values():
            assert ref["$ref"].split("/")[-1] in messages
    for operation in doc["operations"].values():
        channel_id = operation["channel"]["$ref"].split("/")[-1]
        for ref in operation["messages"]:
            parts = ref["$ref"].split("/")
            assert parts[2] == channel_id and parts[-1] in doc["channels"][channel_id]["messages"]
