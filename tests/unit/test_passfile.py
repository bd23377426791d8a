"""insights/db/passfile.py: libpq's password file format, lookups as libpq does them, and
writes that keep other lines and never widen the mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from insights.db import passfile
from insights.db.passfile import Entry


def test_escapes_round_trip() -> None:
    entry = Entry("db.example", "5432", "*", "odd:user", "pa:ss\\wo:rd")
    line = passfile.format_line(entry)
    assert line == "db.example:5432:*:odd\\:user:pa\\:ss\\\\wo\\:rd"
    assert passfile.parse_line(line) == entry


def test_comments_blank_and_short_lines_are_skipped() -> None:
    assert passfile.parse_line("# host:port:db:user:pw") is None
    assert passfile.parse_line("   ") is None
    assert passfile.parse_line("host:5432:db:user") is None
    # the password is the rest of the line, unescaped colons included (as libpq reads it)
    assert passfile.parse_line("h:1:d:u:a:b") == Entry("h", "1", "d", "u", "a:b")


def test_lookup_is_first_match_with_wildcards() -> None:
    entries = [Entry("*", "5432", "*", "app", "first"), Entry("localhost", "5432", "*", "app", "second")]
    assert passfile.lookup(entries, "localhost", "5432", "insights", "app") == "first"
    assert passfile.lookup(entries, "localhost", "5433", "insights", "app") is None


def test_with_password_replaces_in_place_and_puts_new_lines_first() -> None:
    wildcard = Entry("*", "*", "*", "insights_cdc", "wild")
    other = Entry("127.0.0.1", "55432", "*", "insights", "superuser")
    entries = [wildcard, other]
    out = passfile.with_password(entries, passfile.LOOPBACK, "55432", "insights_cdc", "new")
    # new lines above the wildcard, so libpq finds them first
    assert passfile.lookup(out, "127.0.0.1", "55432", "insights", "insights_cdc") == "new"
    assert passfile.lookup(out, "localhost", "55432", "insights", "insights_cdc") == "new"
    assert other in out and wildcard in out
    again = passfile.with_password(out, passfile.LOOPBACK, "55432", "insights_cdc", "newer")
    assert len(again) == len(out)  # replaced, not appended
    assert passfile.lookup(again, "localhost", "55432", "x", "insights_cdc") == "newer"


def test_write_is_0600_and_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "passfile"
    passfile.write(path, [Entry("h", "1", "*", "u", "p")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.chmod(0o644)  # widened by someone: the next write narrows it again
    passfile.write(path, [Entry("h", "1", "*", "u", "q")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert passfile.read(path) == [Entry("h", "1", "*", "u", "q")]
    assert [p.name for p in path.parent.iterdir()] == ["passfile"]  # no temporary left
    assert passfile.read(tmp_path / "missing") == []
