"""hash: tables: estafeta's indexed format, its builder and `estafeta map`."""
import os

import pytest

from estafeta.cli.main import main as estafeta_main
from estafeta.core.errors import ConfigError
from estafeta.tables import TableTempError, open_table
from estafeta.tables import hash as hash_table


def built(tmp_path, text: str):
    src = tmp_path / "t"
    src.write_text(text)
    hash_table.build(str(src), hash_table.source_pairs(str(src)))
    return open_table(f"hash:{src}"), src


def test_lookup_lowercases_keys_and_keeps_values(tmp_path) -> None:
    t, _ = built(tmp_path, "# comment\nAlice@Example.ORG  Value With Case\nbob x\n  continued\nempty\n")
    got = {k: t.lookup(k) for k in ("alice@example.org", "ALICE@EXAMPLE.ORG", "bob", "empty", "carol")}
    want = {"alice@example.org": "Value With Case", "ALICE@EXAMPLE.ORG": "Value With Case",
            "bob": "x  continued", "empty": "", "carol": None}   # postmap keeps the indentation
    assert got == want, f"got {got}, want {want}"


def test_many_keys_and_utf8(tmp_path) -> None:
    pairs = [(f"key{i}", f"value {i}") for i in range(5000)] + [("ñandú", "ave")]
    src = tmp_path / "big"
    hash_table.build(str(src), pairs)
    t = hash_table.HashTable(str(src))
    for k, v in pairs[::97] + [("Ñandú", "ave")]:
        assert t.lookup(k) == v, f"got {t.lookup(k)!r} for {k}, want {v!r}"
    assert t.lookup("key5000") is None
    assert len(t.items()) == 5001


def test_empty_table(tmp_path) -> None:
    t, _ = built(tmp_path, "")
    assert t.lookup("anything") is None


def test_rebuild_is_seen_by_an_open_reader(tmp_path) -> None:
    t, src = built(tmp_path, "a 1\n")
    src.write_text("a 2\nb 3\n")
    hash_table.build(str(src), hash_table.source_pairs(str(src)))
    assert (t.lookup("a"), t.lookup("b")) == ("2", "3")


def test_atomic_replace_leaves_no_temporary_files(tmp_path) -> None:
    built(tmp_path, "a 1\n")
    assert sorted(os.listdir(tmp_path)) == ["t", "t.db"]


def test_missing_db_is_a_config_error_naming_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError) as e:
        open_table(f"hash:{tmp_path}/nothere")
    assert f"{tmp_path}/nothere.db" in str(e.value)


def test_bad_magic_and_vanished_file_are_temporary(tmp_path) -> None:
    (tmp_path / "x.db").write_bytes(b"not a hash table at all, just some bytes....")
    with pytest.raises(TableTempError):
        open_table(f"hash:{tmp_path}/x")
    t, src = built(tmp_path, "a 1\n")
    os.unlink(str(src) + ".db")
    with pytest.raises(TableTempError):
        t.lookup("a")


def test_estafeta_map_builds_and_queries(tmp_path, capsys) -> None:
    src = tmp_path / "access"
    src.write_text("192.0.2.1 REJECT\nexample.com OK\n")
    assert estafeta_main(["map", f"hash:{src}"]) == 0
    assert estafeta_main(["map", "-q", "EXAMPLE.com", f"hash:{src}"]) == 0
    assert capsys.readouterr().out == "OK\n"
    assert estafeta_main(["map", "-q", "nothere", f"hash:{src}"]) == 1
