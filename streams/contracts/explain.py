"""Turn the avro package's compatibility findings into one sentence each.

The checker reports *where* (a location such as ``/fields/3/type``) and *what* (an
incompatibility type); this module walks both schemas along that location to name the
field and the types involved, and states the evolution rule that was broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avro.compatibility import SchemaIncompatibilityType as Kind

RULES = {
    Kind.reader_field_missing_default_value: "a field the reader expects but the writer may lack needs a default",
    Kind.type_mismatch: "a field's type may only change to one the old type promotes to (int to long, float or double; long to float or double; float to double; string and bytes)",
    Kind.missing_enum_symbols: "an enum may drop symbols only if the reader declares a default symbol",
    Kind.missing_union_branch: "the reader's union must accept every branch the writer may write",
    Kind.name_mismatch: "a named type keeps its full name, or lists the old one in its aliases",
    Kind.fixed_size_mismatch: "a fixed type keeps its size",
}


def _named_types(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name else (f"{ns}.{name}" if ns else name)
            names[full] = schema
            names.setdefault(name, schema)
            namespace = full.rpartition(".")[0]
            for field in schema.get("fields", []):
                _named_types(field["type"], names, namespace)
        elif kind == "array":
            _named_types(schema["items"], names, namespace)
        elif kind == "map":
            _named_types(schema["values"], names, namespace)
        elif isinstance(kind, (dict, list)):
            _named_types(kind, names, namespace)


class _Walker:
    def __init__(self, schema: Any) -> None:
        self.names: dict[str, Any] = {}
        _named_types(schema, self.names)
        self.root = schema

    def resolve(self, node: Any) -> Any:
        if isinstance(node, str) and node in self.names:
            return self.names[node]
        if isinstance(node, dict) and isinstance(node.get("type"), (dict, list)) and "name" not in node:
            return self.resolve(node["type"])
        return node


def describe(node: Any) -> str:
    """A short human name for a schema node: ``long``, ``decimal(10,2)``, ``array<string>``."""
    if node is None:
        return "absent"
    if isinstance(node, str):
        return node.rpartition(".")[2]
    if isinstance(node, list):
        return "union[" + ", ".join(describe(b) for b in node) + "]"
    kind = node.get("type")
    logical = node.get("logicalType")
    if logical == "decimal":
        return f"decimal({node.get('precision')},{node.get('scale', 0)})"
    if logical:
        return f"{logical} ({kind})"
    if kind in ("record", "enum", "fixed", "error"):
        return f"{kind} {node['name']}"
    if kind == "array":
        return f"array<{describe(node['items'])}>"
    if kind == "map":
        return f"map<{describe(node['values'])}>"
    return describe(kind)


@dataclass(frozen=True)
class Located:
    path: str
    reader: Any
    writer: Any
    stop: str | None  # "symbols", "name", "size" or a union branch index, when the location ends there


def locate(location: str, reader_raw: Any, writer_raw: Any) -> Located:
    rw, ww = _Walker(reader_raw), _Walker(writer_raw)
    r: Any = rw.resolve(reader_raw)
    w: Any = ww.resolve(writer_raw)
    path: list[str] = []
    tokens = [t for t in location.split("/") if t]
    i = 0
    stop = None
    while i < len(tokens):
        tok = tokens[i]
        if tok == "fields" and i + 1 < len(tokens) and isinstance(r, dict):
            field = r["fields"][int(tokens[i + 1])]
            path.append(field["name"])
            wfield = None
            if isinstance(w, dict) and w.get("type") in ("record", "error"):
                wanted = {field["name"], *field.get("aliases", [])}
                wfield = next((f for f in w["fields"] if f["name"] in wanted), None)
            r, w = field, wfield
            i += 2
            continue
        if tok == "type" and isinstance(r, dict):
            r = rw.resolve(r.get("type"))
            w = ww.resolve(w.get("type")) if isinstance(w, dict) else None
        elif tok in ("items", "values") and isinstance(r, dict):
            r = rw.resolve(r.get(tok))
            w = ww.resolve(w.get(tok)) if isinstance(w, dict) else None
            if path:
                path[-1] += "[]" if tok == "items" else "{}"
        else:
            stop = tok
            break
        i += 1
    return Located(".".join(path) or "(the record itself)", r, w, stop)


def infer_kind(where: Located, kinds: list[Kind]) -> Kind:
    """Which of the reported kinds of break happened at one location.

    The checker merges its findings into unordered sets, so with several kinds of break
    in one pair the kind of each location is read off the schemas themselves.
    """
    if where.stop == "symbols":
        guess = Kind.missing_enum_symbols
    elif where.stop == "name":
        guess = Kind.name_mismatch
    elif where.stop == "size":
        guess = Kind.fixed_size_mismatch
    elif where.stop is not None and where.stop.isdigit():
        guess = Kind.missing_union_branch
    elif where.writer is None:
        guess = Kind.reader_field_missing_default_value
    elif isinstance(where.reader, list):
        guess = Kind.missing_union_branch
    else:
        guess = Kind.type_mismatch
    return guess if guess in kinds or not kinds else kinds[0]


def sentence(kind: Kind | None, message: str, location: str, reader_raw: Any, writer_raw: Any, reader_label: str, writer_label: str, kinds: list[Kind] | None = None) -> str:
    """One sentence: who cannot read whom, which field, what happened, which rule.

    ``kind`` None: infer it from the location among ``kinds``.
    """
    where = locate(location, reader_raw, writer_raw)
    if kind is None:
        kind = infer_kind(where, kinds or [])
    head = f"{reader_label} cannot read data written by {writer_label}"
    rule = RULES.get(kind, kind.value)
    if kind is Kind.reader_field_missing_default_value:
        what = f"field '{where.path}' is not in {writer_label} and has no default in {reader_label}"
    elif kind is Kind.type_mismatch:
        what = f"field '{where.path}' is {describe(where.writer)} in {writer_label} but {describe(where.reader)} in {reader_label}"
    elif kind is Kind.missing_enum_symbols:
        what = f"enum at '{where.path}' lacks the symbols {message} that {writer_label} may write, and has no default symbol"
    elif kind is Kind.missing_union_branch:
        what = f"field '{where.path}': {message} ({describe(where.writer)} in {writer_label}, {describe(where.reader)} in {reader_label})"
    elif kind is Kind.name_mismatch:
        what = f"the type at '{where.path}' is named differently ({message})"
    else:
        what = f"at '{where.path}': {message}"
    return f"{head}: {what} (rule: {rule})."
