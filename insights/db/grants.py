"""Least privilege, checked: the catalog's grants against the table in ``ddl/README.md``.

The README's "Grants, checked" table is the one statement of what each role may do; this
module parses it and walks the catalog (``has_table_privilege``, ``has_column_privilege``,
``has_function_privilege``, ``pg_roles``, ownership) for every role the table names. Anything
the catalog allows that the table does not, or the table promises that the catalog lacks, is
a finding. Partitions are judged by their root's rows, so a partition created later with
other grants than its parent is a finding too.

Table rows: ``| role | on | privileges |`` where ``on`` is one of

* ``role``: the role's attributes (``LOGIN``, ``REPLICATION``, ...; ``-`` for none);
* ``schema NAME``: schema privileges (``USAGE``, ``CREATE``);
* ``SCHEMA.TABLE[, ...]`` or ``SCHEMA.*`` with an optional ``except SCHEMA.TABLE, ...``: table
  privileges on tables, views and materialized views;
* ``SCHEMA.TABLE (col, ...)`` or ``SCHEMA.TABLE (all but col, ...)``: column privileges;
* ``sequence SCHEMA.*``: sequence privileges;
* ``function SCHEMA.NAME(argtypes)``: EXECUTE on a SECURITY DEFINER function (a SECURITY
  DEFINER function nobody is listed for must be executable by no checked role, and each must
  pin its ``search_path``; ordinary functions run with the caller's rights and are not checked).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from insights.db.errors import DatabaseError
from insights.db.migrations import DDL_DIR

README = DDL_DIR / "README.md"
HEADING = "Grants, checked"
SCHEMAS = ("public", "summaries", "rules", "competitive")
TABLE_PRIVS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVS = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
SEQUENCE_PRIVS = ("USAGE", "SELECT", "UPDATE")
SCHEMA_PRIVS = ("USAGE", "CREATE")
ATTRIBUTES = ("SUPERUSER", "LOGIN", "REPLICATION", "CREATEDB", "CREATEROLE", "BYPASSRLS", "INHERIT")


@dataclass
class Expected:
    """What the README grants, per role."""

    attributes: dict[str, set[str]] = field(default_factory=dict)
    schemas: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # (role, include patterns, exclude patterns, privileges)
    tables: list[tuple[str, list[str], list[str], set[str]]] = field(default_factory=list)
    # (role, table, columns, all-but?, privileges)
    columns: list[tuple[str, str, set[str], bool, set[str]]] = field(default_factory=list)
    sequences: list[tuple[str, str, set[str]]] = field(default_factory=list)
    functions: dict[str, set[str]] = field(default_factory=dict)  # signature -> roles

    @property
    def roles(self) -> list[str]:
        return sorted(self.attributes)

    def table_privs(self, role: str, table: str) -> set[str]:
        out: set[str] = set()
        for r, inc, exc, privs in self.tables:
            if r == role and any(fnmatch.fnmatchcase(table, p) for p in inc) and table not in exc:
                out |= privs
        return out

    def column_privs(self, role: str, table: str, column: str) -> set[str]:
        out = {p for p in self.table_privs(role, table) if p in COLUMN_PRIVS}
        for r, t, cols, all_but, privs in self.columns:
            if r == role and t == table and ((column not in cols) if all_but else (column in cols)):
                out |= privs
        return out

    def sequence_privs(self, role: str, seq: str) -> set[str]:
        out: set[str] = set()
        for r, pattern, privs in self.sequences:
            if r == role and fnmatch.fnmatchcase(seq, pattern):
                out |= privs
        return out


def _words(text: str) -> set[str]:
    text = text.strip()
    return set() if text in {"", "-"} else {w.strip().upper() for w in text.split(",") if w.strip()}


def _cell(text: str) -> str:
    return text.strip().strip("`").strip()


def parse(markdown: str) -> Expected:
    """The "Grants, checked" table of a README."""
    lines = markdown.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip().startswith(HEADING))
    except StopIteration:
        raise DatabaseError(f"ddl/README.md has no '{HEADING}' section") from None
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([_cell(c) for c in line.strip().strip("|").split("|")])
    if not rows or [c.lower() for c in rows[0]] != ["role", "on", "privileges"]:
        raise DatabaseError(f"the '{HEADING}' table must have the columns role | on | privileges")
    exp = Expected()
    for role, on, privs_text in rows[1:]:
        privs = _words(privs_text)
        exp.attributes.setdefault(role, set())
        if on == "role":
            exp.attributes[role] |= privs
        elif on.startswith("schema "):
            exp.schemas.setdefault((role, on.split()[1]), set()).update(privs)
        elif on.startswith("sequence "):
            exp.sequences.append((role, on.split()[1], privs))
        elif on.startswith("function "):
            sig = re.sub(r"\s*,\s*", ",", on.split(" ", 1)[1].strip())
            exp.functions.setdefault(sig, set()).add(role)
        elif m := re.fullmatch(r"(\S+)\s*\((all but )?([^)]*)\)", on):
            cols = {c.strip() for c in m.group(3).split(",") if c.strip()}
            exp.columns.append((role, m.group(1), cols, bool(m.group(2)), privs))
        else:
            inc_text, _, exc_text = on.partition(" except ")
            inc = [t.strip() for t in inc_text.split(",") if t.strip()]
            exc = [t.strip() for t in exc_text.split(",") if t.strip()]
            exp.tables.append((role, inc, exc, privs))
    return exp


def expected_from_readme(path: Path = README) -> Expected:
    return parse(path.read_text())


def _qualified_tables(conn: psycopg.Connection) -> list[tuple[int, str, str, str]]:
    """(oid, name, name of the root of its partition tree, relkind) of every table/view."""
    return conn.execute(
        """
        SELECT c.oid::int, format('%%s.%%s', n.nspname, c.relname),
               coalesce((SELECT format('%%s.%%s', rn.nspname, r.relname)
                         FROM pg_partition_root(c.oid) AS root(oid)
                         JOIN pg_class r ON r.oid = root.oid
                         JOIN pg_namespace rn ON rn.oid = r.relnamespace),
                        format('%%s.%%s', n.nspname, c.relname)),
               c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        ORDER BY 2
        """,
        (list(SCHEMAS),),
    ).fetchall()


def check(conn: psycopg.Connection, expected: Expected | None = None) -> list[str]:
    """Every difference between the catalog and the README table, one line each ([] = clean)."""
    exp = expected or expected_from_readme()
    roles = exp.roles
    found: list[str] = []
    known = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,))}
    for role in roles:
        if role not in known:
            found.append(f"{role}: role does not exist")
    roles = [r for r in roles if r in known]

    # attributes and memberships (a membership would hand over another role's privileges)
    for role, *flags in conn.execute(
        "SELECT rolname, rolsuper, rolcanlogin, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls, "
        "rolinherit FROM pg_roles WHERE rolname = ANY(%s)", (roles,)
    ):
        have = {a for a, on in zip(ATTRIBUTES, flags, strict=True) if on and a != "INHERIT"}
        want = exp.attributes[role] - {"INHERIT"}
        for a in sorted(have - want):
            found.append(f"{role}: has attribute {a}, not in the table")
        for a in sorted(want - have):
            found.append(f"{role}: lacks attribute {a}")
    for role, parent in conn.execute(
        "SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member "
        "JOIN pg_roles g ON g.oid = a.roleid WHERE m.rolname = ANY(%s)", (roles,)
    ):
        found.append(f"{role}: is a member of {parent}")

    # schemas
    for role in roles:
        for schema in SCHEMAS:
            have = {p for p in SCHEMA_PRIVS if conn.execute(
                "SELECT has_schema_privilege(%s, %s, %s)", (role, schema, p)).fetchone()[0]}
            want = exp.schemas.get((role, schema), set())
            for p in sorted(have - want):
                found.append(f"{role}: {p} on schema {schema}, not in the table")
            for p in sorted(want - have):
                found.append(f"{role}: lacks {p} on schema {schema}")

    tables = _qualified_tables(conn)
    owners = dict(conn.execute(
        "SELECT c.oid::int, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)", (list(SCHEMAS),)).fetchall())
    reported: dict[tuple[str, int], set[str]] = {}
    for oid, name, root, kind in tables:
        if owners.get(oid) in roles:
            found.append(f"{owners[oid]}: owns {name} (so it can ALTER and DROP it)")
        for role in roles:
            if kind == "S":
                privs, want = SEQUENCE_PRIVS, exp.sequence_privs(role, name)
                fn = "has_sequence_privilege"
            else:
                privs, want = TABLE_PRIVS, exp.table_privs(role, root)
                fn = "has_table_privilege"
            row = conn.execute(
                "SELECT " + ", ".join(f"{fn}(%s, %s::oid, %s)" for _ in privs),
                [x for p in privs for x in (role, oid, p)],
            ).fetchone()
            have = {p for p, ok in zip(privs, row, strict=True) if ok}
            reported[(role, oid)] = have ^ want  # a column differing for these is said once, here
            where = name if name == root else f"{name} (partition of {root})"
            for p in sorted(have - want):
                found.append(f"{role}: {p} on {where}, not in the table")
            for p in sorted(want - have):
                found.append(f"{role}: lacks {p} on {where}")

    # columns: a column grant (e.g. SELECT on api_keys.key_hash) is invisible at table level
    for role in roles:
        for table_oid, name, root, column, *flags in conn.execute(
            """
            SELECT c.oid::int, format('%%s.%%s', n.nspname, c.relname),
                   coalesce((SELECT format('%%s.%%s', rn.nspname, r.relname)
                             FROM pg_partition_root(c.oid) AS root(oid) JOIN pg_class r ON r.oid = root.oid
                             JOIN pg_namespace rn ON rn.oid = r.relnamespace),
                            format('%%s.%%s', n.nspname, c.relname)),
                   a.attname,
                   has_column_privilege(%(r)s, c.oid, a.attnum, 'SELECT'),
                   has_column_privilege(%(r)s, c.oid, a.attnum, 'INSERT'),
                   has_column_privilege(%(r)s, c.oid, a.attnum, 'UPDATE'),
                   has_column_privilege(%(r)s, c.oid, a.attnum, 'REFERENCES')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            ORDER BY 2, a.attnum
            """,
            {"r": role, "s": list(SCHEMAS)},
        ):
            skip = reported.get((role, table_oid), set())
            have = {p for p, ok in zip(COLUMN_PRIVS, flags, strict=True) if ok} - skip
            want = exp.column_privs(role, root, column) - skip
            for p in sorted(have - want):
                found.append(f"{role}: {p} on column {name}.{column}, not in the table")
            for p in sorted(want - have):
                found.append(f"{role}: lacks {p} on column {name}.{column}")

    # SECURITY DEFINER functions: pinned search_path, EXECUTE only for the listed roles
    for sig, config, public_exec in conn.execute(
        """
        SELECT format('%%s.%%s(%%s)', n.nspname, p.proname,
                      replace(oidvectortypes(p.proargtypes), ', ', ',')),
               p.proconfig,
               coalesce(aclcontains(p.proacl, makeaclitem(0, p.proowner, 'EXECUTE', false)), true)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%s) AND p.prosecdef ORDER BY 1
        """,
        (list(SCHEMAS),),
    ):
        if not any(c.startswith("search_path=") for c in config or []):
            found.append(f"function {sig}: SECURITY DEFINER without a fixed search_path")
        if public_exec:
            found.append(f"function {sig}: SECURITY DEFINER and executable by PUBLIC")
        want = exp.functions.get(sig, set())
        for role in roles:
            ok = conn.execute("SELECT has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
                              (role, sig)).fetchone()[0]
            if ok and role not in want:
                found.append(f"{role}: EXECUTE on {sig}, not in the table")
            if not ok and role in want:
                found.append(f"{role}: lacks EXECUTE on {sig}")
    for sig in exp.functions:
        if conn.execute("SELECT to_regprocedure(%s) IS NULL", (sig,)).fetchone()[0]:
            found.append(f"function {sig}: in the table, not in the database")
    return found
