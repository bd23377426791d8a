"""The generated writers are readable source, pinned for one relation, and safe from odd identifiers.

That they write the right bytes is tests/cdc/test_envelope.py's job; here: what the source
says. After an intended change of the generator, rewrite the golden file with

    .venv/bin/python -m streams.cdc.codegen --show > tests/cdc/golden/product_snapshots.py

and read its diff: it is the diff of the code every Insert of that table runs.
"""

from __future__ import annotations

import ast
import contextlib
import io
import linecache
import struct
import traceback
from pathlib import Path

import pytest

from streams.cdc import codegen
from streams.cdc.envelope import RelationCodec
from streams.cdc.pgoutput import Column, Relation
from streams.cdc.values import ValueConverter

GOLDEN = Path(__file__).parent / "golden" / "product_snapshots.py"

#: bench/cdc_bench.py's table, shaped like the seed's product_snapshots
SEED_SHAPED = Relation(
    16390,
    "public",
    "product_snapshots",
    "d",
    (
        Column("id", 20, -1, True),
        Column("asin", 1043, 14, False),
        Column("title", 1043, 504, False),
        Column("price", 1700, 655366, False),
        Column("buybox_price", 1700, 655366, False),
        Column("rating", 1700, 196614, False),
        Column("review_count", 23, -1, False),
        Column("bsr_data", 3802, -1, False),
        Column("availability_status", 1043, 54, False),
        Column("bullet_points", 1009, -1, False),
        Column("images", 3802, -1, False),
        Column("scraped_at", 1184, -1, True),
        Column("processing_status", 1043, 24, False),
        Column("created_at", 1184, -1, False),
    ),
)


def test_generated_source_of_a_seed_shaped_relation_is_the_golden_file() -> None:
    source = codegen.relation_source(SEED_SHAPED)
    assert source == GOLDEN.read_text(encoding="utf-8"), (
        "the generated writers changed; if intended, regenerate tests/cdc/golden/product_snapshots.py "
        "(see this module's docstring) and review the diff"
    )
    # what a codec compiles and what it shows are that same text
    assert RelationCodec(SEED_SHAPED, ValueConverter()).source == source


def test_the_module_entry_point_shows_the_same_source() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        codegen.main(["--show"])
    assert codegen.EXAMPLE == SEED_SHAPED
    assert out.getvalue() == GOLDEN.read_text(encoding="utf-8")


def test_the_golden_file_is_plain_python_that_imports_and_binds() -> None:
    namespace: dict[str, object] = {}
    exec(compile(GOLDEN.read_text(encoding="utf-8"), str(GOLDEN), "exec"), namespace)
    row, insert = namespace["bind"](RelationCodec(SEED_SHAPED, ValueConverter()))  # type: ignore[operator]
    assert callable(row) and callable(insert)


def test_identifiers_cannot_inject_code_into_the_source() -> None:
    """A column or table name is data: newlines and quotes stay inside literals and comments."""
    evil = 'x\nraise SystemExit("injected")\n# "\'\u2028'
    relation = Relation(7, "s\nimport os", evil, "d", (Column(evil, 25, -1, True), Column("ok", 20, -1, False)))
    codec = RelationCodec(relation, ValueConverter())  # compiles and binds: nothing ran
    tree = ast.parse(codec.source)
    assert [type(node).__name__ for node in tree.body] == [
        "Expr", "ImportFrom", "ImportFrom", "ImportFrom", "Assign", "FunctionDef",
    ]
    assert not any(isinstance(node, (ast.Raise, ast.Import)) for node in ast.walk(tree))
    assert not {"SystemExit", "os"} & {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert codec.source.isascii()
    after, unchanged = codec.row([b"v", b"1"])
    assert unchanged == () and evil.encode() in after


def test_tracebacks_show_the_generated_lines() -> None:
    relation = Relation(8, "public", "t", "d", (Column("n", 20, -1, True),))
    codec = RelationCodec(relation, ValueConverter())
    frame = b"w" + bytes(24) + b"I" + struct.pack("!I", 8) + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 3) + b"abc"
    with pytest.raises(ValueError) as caught:  # int(b"abc")
        codec.insert(frame, 31, b"", 0, b"")
    where = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert where.filename == "<cdc writers of public.t>"
    assert where.line == "out += zigzag(int(v0))"
    assert linecache.getline(where.filename, where.lineno).strip() == where.line
