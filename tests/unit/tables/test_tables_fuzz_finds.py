"""Bugs the atheris fuzz targets found in the table code (tests/fuzz/), one test each."""
from __future__ import annotations

import struct

import pytest

from estafeta.core.errors import ConfigError
from estafeta.tables import TableTempError, open_table
from estafeta.tables import hash as hash_table
from estafeta.tables.aliases import ADDRESS, Token, parse_aliases, parse_list


def test_alias_value_starting_with_hash_reads_back_as_an_address():
    # The stored value "#admin, b" read back by the local agent (parse_list) was a
    # comment line: the alias expanded to nothing.
    ((name, value, _),) = parse_aliases("postmaster: #admin, b\n", "aliases")
    assert parse_list(value, "aliases") == [Token(ADDRESS, "#admin"), Token(ADDRESS, "b")]


@pytest.mark.parametrize("result", [b"${1\xff}", "${\u00b2}".encode()])
def test_regexp_result_with_odd_group_reference_is_a_config_error(tmp_path, result):
    # Undecodable bytes were a UnicodeDecodeError, "²" a ValueError from int().
    p = tmp_path / "t"
    p.write_bytes(b"/(a)/ " + result + b"\n")
    for kind in ("regexp", "pcre"):
        with pytest.raises(ConfigError):
            open_table(f"{kind}:{p}")


@pytest.mark.parametrize("escape", [r"\x{}", r"\x{ 41}", r"\x{0x41}", r"\x{110000}", r"\o{9}"])
def test_pcre_bad_brace_escape_is_a_config_error(tmp_path, escape):
    # int() took "", " 41" or "0x41" (or raised ValueError), chr() refused > 0x10FFFF.
    p = tmp_path / "t"
    p.write_text(f"/a{escape}/ x\n")
    with pytest.raises(ConfigError):
        open_table(f"pcre:{p}")
    p.write_text("/a\\x{41}\\o{102}/ x\n")
    assert open_table(f"pcre:{p}").lookup("aAB") == "x"


@pytest.mark.parametrize("offset", [10_000, 2**63 + 5])
def test_damaged_record_offset_is_a_temporary_error(tmp_path, offset):
    # items() let struct.error out, and both items() and lookup() an OverflowError.
    src = tmp_path / "t"
    hash_table.build(str(src), [("key", "value")])
    db = bytearray((tmp_path / "t.db").read_bytes())
    _magic, slots, _n, table, _ = struct.unpack_from("<8sIIQQ", db)
    for i in range(slots):
        h, off = struct.unpack_from("<QQ", db, table + 16 * i)
        if off:
            struct.pack_into("<QQ", db, table + 16 * i, h, offset)
    (tmp_path / "t.db").write_bytes(bytes(db))
    t = open_table(f"hash:{src}")
    with pytest.raises(TableTempError):
        t.items()
    with pytest.raises(TableTempError):
        t.lookup("key")


@pytest.mark.parametrize("text", ["x: ,\n", "x: , ,\n", "x:\n  ,\n"])
def test_alias_with_only_commas_has_no_value(text):
    # Was an alias stored as "" (to nobody), while "x:" alone is refused.
    with pytest.raises(ConfigError, match="has no value"):
        parse_aliases(text, "aliases")


def test_empty_quoted_alias_name_is_refused():
    # '"": x' made an entry with the name "", which an unquoted name cannot have.
    with pytest.raises(ConfigError, match="bad alias name"):
        parse_aliases('"": x\n', "aliases")
    assert parse_aliases('"a b": x\n', "aliases") == [("a b", "x", 1)]



@pytest.mark.parametrize("text", ["\u00b2", "\u0662\u0665", "2\u00b2"])
def test_non_ascii_digits_are_not_numbers(text, tmp_path):
    """'\u00b2' and Arabic-Indic digits pass str.isdigit(); numbers in configuration and
    next hops are ASCII digits only (found by atheris in other parsers)."""
    from estafeta.delivery.smtp import _port
    from estafeta.policy.access import OK, parse_action
    with pytest.raises(ValueError):
        _port(text, f"[mx.example]:{text}")
    try:
        action = parse_action(text)
    except (ConfigError, ValueError):
        action = None
    assert action is None or action.kind != OK, f"{text!r} read as the numeric OK"
    p = tmp_path / "c.cidr"
    p.write_text(f"10.0.0.0/{text} REJECT\n")
    with pytest.raises(ConfigError):
        open_table(f"cidr:{p}").lookup("10.0.0.1")
