"""aliases(5) syntax, the values' tokens, and newaliases."""
import pytest

from estafeta.cli.newaliases import main as newaliases
from estafeta.core.errors import ConfigError
from estafeta.tables import open_table
from estafeta.tables.aliases import ADDRESS, COMMAND, FILE, INCLUDE, Token, parse_aliases, parse_list

SEED = """\
# /etc/aliases of the seed (chapter 9)
postmaster: root
usuarios: xavier,pepe,juan
Lista:  a@example.org,
        b@example.org
  , c
"para mi": xavier
log: "/var/log/mail copy", |/usr/bin/logger
prog: "|/usr/bin/procmail -a x, y"
inc: :include:/etc/mail/list
owner-usuarios: xavier
self: \\self, other
"""


def test_parse_seed_aliases() -> None:
    got = {n: v for n, v, _ in parse_aliases(SEED, "/etc/aliases")}
    want = {"postmaster": "root", "usuarios": "xavier, pepe, juan",
            "lista": "a@example.org, b@example.org, c", "para mi": "xavier",
            "log": '"/var/log/mail copy", |/usr/bin/logger', "prog": '"|/usr/bin/procmail -a x, y"',
            "inc": ":include:/etc/mail/list", "owner-usuarios": "xavier", "self": "\\self, other"}
    assert got == want, f"got {got}, want {want}"


def test_tokens() -> None:
    got = parse_list('xavier, "/var/log/mail copy", |/usr/bin/logger, "|/usr/bin/procmail -a x, y", '
                     ':include:/etc/mail/list, \\self, <b@example.org>, /tmp/box/')
    want = [Token(ADDRESS, "xavier"), Token(FILE, "/var/log/mail copy"), Token(COMMAND, "/usr/bin/logger"),
            Token(COMMAND, "/usr/bin/procmail -a x, y"), Token(INCLUDE, "/etc/mail/list"),
            Token(ADDRESS, "self", no_alias=True), Token(ADDRESS, "b@example.org"), Token(FILE, "/tmp/box/")]
    assert got == want, f"got {got}, want {want}"


def test_forward_file_lines_and_comments() -> None:
    got = parse_list("# my forward\nme@example.org\n\n|\"/bin/cat\"\n")
    assert got == [Token(ADDRESS, "me@example.org"), Token(COMMAND, '"/bin/cat"')], got


@pytest.mark.parametrize("text, line, problem", [
    ("ok: a\nbroken line\n", 2, "missing ':'"),
    ("  starts indented: a\n", 1, "continuation line before any alias"),
    ("a: \"unterminated\n", 1, "unbalanced double quote"),
    ("a:\n", 1, "has no value"),
    ('"x y: a\n', 1, "unbalanced double quote in alias name"),
])
def test_errors_name_file_and_line(text, line, problem) -> None:
    with pytest.raises(ConfigError) as e:
        parse_aliases(text, "/etc/aliases")
    assert (e.value.path, e.value.line) == ("/etc/aliases", line), f"got {e.value}"
    assert problem in e.value.problem, f"got {e.value.problem!r}, want {problem!r}"


def test_newaliases_builds_every_hash_alias_database(tmp_path) -> None:
    (tmp_path / "aliases").write_text(SEED)
    (tmp_path / "more").write_text("extra: root\n")
    (tmp_path / "main.cf").write_text(f"alias_database = hash:{tmp_path}/aliases, hash:{tmp_path}/more\n")
    assert newaliases(["-c", str(tmp_path)]) == 0
    t = open_table(f"hash:{tmp_path}/aliases")
    assert t.lookup("usuarios") == "xavier, pepe, juan"
    assert t.lookup("PARA MI") == "xavier"
    assert open_table(f"hash:{tmp_path}/more").lookup("extra") == "root"


def test_newaliases_reports_the_bad_line(tmp_path, capsys) -> None:
    (tmp_path / "aliases").write_text("a: b\nnonsense\n")
    (tmp_path / "main.cf").write_text(f"alias_database = hash:{tmp_path}/aliases\n")
    assert newaliases(["-c", str(tmp_path)]) == 78
    assert f"{tmp_path}/aliases, line 2: missing ':'" in capsys.readouterr().err
