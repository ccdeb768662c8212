"""default_database_type: the type of a table named without one, in estafeta map
(postmap) and newaliases, as Postfix's postmap/postalias/newaliases."""
import os

from estafeta.cli.main import main as estafeta_main
from estafeta.cli.newaliases import main as newaliases_main


def test_map_untyped_file_uses_default_database_type(tmp_path, capsys) -> None:
    src = tmp_path / "access"
    src.write_text("example.com OK\n")
    (tmp_path / "main.cf").write_text("default_database_type = texthash\n")
    # texthash needs no index: the file is queried as it is.
    assert estafeta_main(["-c", str(tmp_path), "map", "-q", "example.com", str(src)]) == 0
    assert capsys.readouterr().out == "OK\n"
    assert not os.path.exists(f"{src}.db")
    (tmp_path / "main.cf").write_text("\n")      # the default: hash, which builds access.db
    assert estafeta_main(["-c", str(tmp_path), "map", str(src)]) == 0
    assert os.path.exists(f"{src}.db")
    assert estafeta_main(["-c", str(tmp_path), "map", "-q", "example.com", f"hash:{src}"]) == 0


def test_map_without_main_cf_uses_hash(tmp_path) -> None:
    src = tmp_path / "access"
    src.write_text("example.com OK\n")
    assert estafeta_main(["-c", str(tmp_path / "none"), "map", str(src)]) == 0
    assert os.path.exists(f"{src}.db")


def test_newaliases_untyped_alias_database(tmp_path) -> None:
    (tmp_path / "aliases").write_text("postmaster: root\n")
    (tmp_path / "main.cf").write_text(f"alias_database = {tmp_path}/aliases\n")
    assert newaliases_main(["-c", str(tmp_path)]) == 0
    assert os.path.exists(tmp_path / "aliases.db"), "got no aliases.db, want one (default_database_type = hash)"
