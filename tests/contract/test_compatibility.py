"""`insights schemas check`: passes on the repository, catches deliberate breaks with a reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from insights.cli.main import app
from streams.contracts.compatibility import check_subject, required_pairs
from tests.contract.helpers import SCHEMAS, repo_store, store_with

runner = CliRunner()


def _latest(subject: str) -> dict:
    return json.loads((SCHEMAS / subject / f"v{len(repo_store().subject(subject).versions)}.avsc").read_text())


def _broken_store(tmp_path: Path, change) -> tuple:
    """product_scraped with its versions plus a v(N+1) that `change` breaks."""
    versions = [v.version for v in repo_store().subject("product_scraped").versions]
    schema = copy.deepcopy(_latest("product_scraped"))
    change(schema)
    store = store_with(tmp_path, "product_scraped", versions, {len(versions) + 1: schema})
    return store, len(versions) + 1


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_every_subject_of_the_repository_is_compatible_at_its_level() -> None:
    for subject in repo_store().subjects.values():
        report = check_subject(subject)
        assert report.ok, [e for b in report.breaks for e in b.explanations]


def test_required_pairs_per_level() -> None:
    assert required_pairs("FULL_TRANSITIVE", (1, 2, 3)) == {(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}
    assert required_pairs("BACKWARD", (1, 2, 3)) == {(2, 1), (3, 2)}
    assert required_pairs("FORWARD_TRANSITIVE", (1, 2, 3)) == {(1, 2), (1, 3), (2, 3)}
    assert required_pairs("NONE", (1, 2)) == frozenset()


def test_removing_a_field_without_default_is_a_break_explained_in_one_sentence(tmp_path: Path) -> None:
    store, new = _broken_store(tmp_path, lambda s: s["fields"].remove(_field(s, "title")))
    report = check_subject(store.subject("product_scraped"))
    assert not report.ok
    # old readers cannot read the new data; the new reader still reads old data
    assert {(b.reader, b.writer) for b in report.breaks} == {(v, new) for v in range(1, new)}
    sentence = report.breaks[0].explanations[0]
    assert sentence == (
        f"v1 cannot read data written by v{new}: field 'title' is not in v{new} and has no default in v1 "
        "(rule: a field the reader expects but the writer may lack needs a default)."
    )


def test_narrowing_a_type_is_a_break_naming_field_and_types(tmp_path: Path) -> None:
    store, new = _broken_store(tmp_path, lambda s: _field(s, "scraped_at").update(type="int"))
    report = check_subject(store.subject("product_scraped"))
    backward = [b for b in report.breaks if b.reader == new]
    assert backward, "the new reader must fail on old long data"
    assert backward[0].explanations == (
        f"v{new} cannot read data written by v1: field 'scraped_at' is timestamp-micros (long) in v1 but int in v{new} "
        "(rule: a field's type may only change to one the old type promotes to "
        "(int to long, float or double; long to float or double; float to double; string and bytes)).",
    )


def test_dropping_an_enum_default_and_a_symbol_is_explained(tmp_path: Path) -> None:
    def change(schema):
        enum = _field(schema, "availability_status")["type"]
        enum["symbols"].remove("PRE_ORDER")
        del enum["default"]

    store, new = _broken_store(tmp_path, change)
    report = check_subject(store.subject("product_scraped"))
    texts = [e for b in report.breaks for e in b.explanations]
    assert texts and all("enum at 'availability_status' lacks the symbols {'PRE_ORDER'}" in t for t in texts)


def test_a_nested_break_names_the_nested_field(tmp_path: Path) -> None:
    def change(schema):
        feature = _field(schema, "features")["type"]["items"]
        feature["fields"].remove(next(f for f in feature["fields"] if f["name"] == "feature_name"))

    store, new = _broken_store(tmp_path, change)
    texts = [e for b in check_subject(store.subject("product_scraped")).breaks for e in b.explanations]
    assert any("field 'features[].feature_name' is not in" in t for t in texts)


def test_cli_check_passes_on_the_repository() -> None:
    result = runner.invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert "product_scraped: 2 version(s) are FULL_TRANSITIVE compatible" in result.output


def test_cli_check_fails_with_exit_1_and_the_reason(tmp_path: Path) -> None:
    _broken_store(tmp_path, lambda s: s["fields"].remove(_field(s, "title")))
    result = runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)], terminal_width=400)
    assert result.exit_code == 1
    assert "field 'title' is not in v3 and has no default in v1" in result.output
    assert "BREAK" in result.output


def test_a_subject_may_relax_its_level(tmp_path: Path) -> None:
    store, _ = _broken_store(tmp_path, lambda s: s["fields"].remove(_field(s, "title")))
    # removing a field without default breaks only forward compatibility
    (tmp_path / "product_scraped" / "subject.json").write_text('{"compatibility": "BACKWARD_TRANSITIVE"}')
    from streams.serde.store import SchemaStore

    assert check_subject(SchemaStore(tmp_path).subject("product_scraped")).ok


@pytest.mark.parametrize("subject", ["product_scraped", "alert_triggered"])
def test_cli_show_prints_versions_and_fingerprints(subject: str) -> None:
    result = runner.invoke(app, ["schemas", "show", subject], terminal_width=200)
    assert result.exit_code == 0, result.output
    for version in repo_store().subject(subject).versions:
        assert version.fingerprint.hex() in result.output


def test_cli_show_unknown_subject_is_a_one_line_error() -> None:
    from streams.serde.store import SchemaStoreError

    result = runner.invoke(app, ["schemas", "show", "nope"])
    assert isinstance(result.exception, SchemaStoreError)
    assert "unknown subject 'nope'" in str(result.exception)
