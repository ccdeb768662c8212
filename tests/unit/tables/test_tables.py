"""Lookup tables: static, inline, texthash, open_table and table lists."""
from __future__ import annotations

import os

import pytest

from estafeta.core.errors import ConfigError, TempFail
from estafeta.tables import (InlineTable, StaticTable, TableList, TableTempError, TextHashTable, open_table,
                             split_table_list)


def check_lookups(table, cases: dict[str, str | None]) -> None:
    got = {k: table.lookup(k) for k in cases}
    assert got == cases, f"got {got}, want {cases}"


# --- static, inline -----------------------------------------------------------------
def test_static_answers_everything() -> None:
    t = open_table("static:OK")
    assert t.name == "static:OK"
    check_lookups(t, {"anything": "OK", "": "OK"})


def test_static_with_braces_and_spaces() -> None:
    t = StaticTable("{ some text here }")
    check_lookups(t, {"x": "some text here"})


def test_inline_pairs() -> None:
    t = open_table("inline:{ a=1, B=, c=3 d=4 }")
    check_lookups(t, {"a": "1", "b": "", "c": "3", "d": "4", "A": "1", "e": None})


def test_inline_braced_value_with_spaces() -> None:
    t = open_table("inline:{ user@example.org=x, { key = value with spaces }, {other=a,b} }")
    check_lookups(t, {"user@example.org": "x", "key": "value with spaces", "other": "a,b", "value": None})


@pytest.mark.parametrize("spec", ["inline:a=b", "inline:{ a=b", "inline:{ novalue }", "inline:{ a = b }"])
def test_inline_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        open_table(spec)


def test_inline_empty() -> None:
    check_lookups(InlineTable("{}"), {"a": None})


# --- texthash -------------------------------------------------------------------------
def write(path, text: str, mtime: float | None = None) -> str:
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return str(path)


def test_texthash_syntax(tmp_path) -> None:
    p = write(tmp_path / "t", "# comment\n"
                              "\n"
                              "User@Example.ORG   example.org/user/\n"
                              "   # indented comment\n"
                              "multi  first\n"
                              "   second\n"
                              "\tthird\n"
                              "bare\n"
                              "@example.net\t catchall/  \n")
    t = open_table("texthash:" + p)
    assert t.name == "texthash:" + p
    check_lookups(t, {
        "user@example.org": "example.org/user/",
        "USER@EXAMPLE.ORG": "example.org/user/",
        "multi": "first   second\tthird",  # as postmap: indentation kept
        "bare": "",
        "@example.net": "catchall/",
        "second": None,
        "#": None,
    })


def test_texthash_value_keeps_its_case(tmp_path) -> None:
    t = TextHashTable(write(tmp_path / "t", "key Mixed Case Value\n"))
    check_lookups(t, {"KEY": "Mixed Case Value"})


def test_texthash_continuation_before_entry(tmp_path) -> None:
    with pytest.raises(ConfigError) as e:
        TextHashTable(write(tmp_path / "t", "# c\n  orphan\n"))
    assert e.value.line == 2, f"got line {e.value.line}, want 2"


def test_texthash_missing_file_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError):
        open_table(f"texthash:{tmp_path}/nope")


def test_texthash_reloads_when_the_file_changes(tmp_path) -> None:
    path = tmp_path / "t"
    t = TextHashTable(write(path, "a 1\n", mtime=1_000_000))
    check_lookups(t, {"a": "1", "b": None})
    write(path, "a 2\nb 3\n", mtime=1_000_000)          # same mtime: not noticed
    check_lookups(t, {"a": "1", "b": None})
    os.utime(path, (1_000_100, 1_000_100))
    check_lookups(t, {"a": "2", "b": "3"})
    write(path, "b 4\n", mtime=999_000)                 # older mtime is a change too
    check_lookups(t, {"a": None, "b": "4"})


def test_texthash_removed_file_is_temporary(tmp_path) -> None:
    path = tmp_path / "t"
    t = TextHashTable(write(path, "a 1\n"))
    path.unlink()
    with pytest.raises(TableTempError):
        t.lookup("a")
    assert issubclass(TableTempError, TempFail)


# --- open_table, lists -------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["nosuchtype:x", ":x"])
def test_open_table_unknown_type(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_table(spec)
    assert "unsupported table type" in str(e.value), f"got {e.value}"


@pytest.mark.parametrize("spec", ["static", "/etc/postfix/virtual", ""])
def test_open_table_needs_colon(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_table(spec)
    assert "type:name" in str(e.value), f"got {e.value}"


@pytest.mark.parametrize("value, want", [
    ("", []),
    ("static:x", ["static:x"]),
    ("texthash:/a, texthash:/b", ["texthash:/a", "texthash:/b"]),
    ("texthash:/a,texthash:/b\ttexthash:/c", ["texthash:/a", "texthash:/b", "texthash:/c"]),
    ("texthash:/a, inline:{ a=b, c=d }", ["texthash:/a", "inline:{ a=b, c=d }"]),
    ("inline:{ { k = v w }, x=y }, static:z", ["inline:{ { k = v w }, x=y }", "static:z"]),
    ("static:{ a b }", ["static:{ a b }"]),
])
def test_split_table_list(value: str, want: list[str]) -> None:
    got = split_table_list(value)
    assert got == want, f"got {got}, want {want}"


def test_table_list_searches_in_order(tmp_path) -> None:
    p = write(tmp_path / "t", "a from-file\nb from-file\n")
    tl = TableList(f"inline:{{ a=from-inline }}, texthash:{p}, static:fallback")
    assert bool(tl)
    check_lookups(tl, {"a": "from-inline", "b": "from-file", "c": "fallback"})


def test_empty_table_list() -> None:
    tl = TableList("")
    assert not tl
    assert tl.lookup("a") is None


def test_texthash_bad_edit_at_runtime_is_temporary(tmp_path) -> None:
    # A broken table met by a running daemon must defer (TableTempError), not look like
    # a config error at startup nor like "not found".
    path = tmp_path / "t"
    t = TextHashTable(write(path, "a 1\n", mtime=1_000_000))
    write(path, "  orphan continuation\n", mtime=1_000_100)
    with pytest.raises(TableTempError):
        t.lookup("a")
    write(path, "a 5\n", mtime=1_000_200)
    check_lookups(t, {"a": "5"})


def test_unix_passwd_table() -> None:
    t = open_table("unix:passwd.byname")
    got = t.lookup("root")
    assert got is not None and got.split(":")[2] == "0", f"got {got!r}, want root's passwd line"
    assert t.lookup("no-such-user-xyz") is None
