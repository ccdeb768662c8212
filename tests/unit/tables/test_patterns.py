"""regexp:, pcre: and cidr: tables: parsing, errors with file and line, reopen on change."""
from __future__ import annotations

import os
import re

import pytest

from estafeta.core.errors import ConfigError
from estafeta.tables import TableTempError, open_table
from estafeta.tables.pcre_re import translate_pcre
from estafeta.tables.posix_re import RegexSyntaxError, translate_posix


def table(tmp_path, kind: str, text: str):
    p = tmp_path / kind
    p.write_text(text)
    return open_table(f"{kind}:{p}"), str(p)


def check(t, cases: dict[str, str | None]) -> None:
    got = {k: t.lookup(k) for k in cases}
    assert got == cases, f"got {got}, want {cases}"


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_rules_if_negation_and_substitution(tmp_path, kind) -> None:
    t, _ = table(tmp_path, kind, "# c\n/^postmaster@/ OK\nif !/^owner-/\n/^(.*)-outgoing@(.*)$/ 550 Use ${1}@$2"
                 " instead $$5\nendif\n!/@/ local $(x)\n".replace("$(x)", "only"))
    check(t, {"postmaster@x": "OK", "Big-Outgoing@X.Org": "550 Use Big@X.Org instead $5",
              "owner-a-outgoing@x": None, "bare": "local only"})


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_flags_delimiters_and_continuation(tmp_path, kind) -> None:
    t, _ = table(tmp_path, kind, "/^cs$/i sensitive\n|^a\\|b$| pipe\n/^multi$/ first\n  second\n/^(x)(y)?$/ [$2]\n")
    check(t, {"cs": "sensitive", "CS": None, "a|b": "pipe", "a": None, "multi": "first  second", "x": "[]"})


@pytest.mark.parametrize("kind,text,line,message", [
    ("regexp", "/a/ x\n/b(/ y\n", 2, "bad regular expression"),
    ("regexp", "/a/q x\n", 1, "unknown regexp option 'q'"),
    ("regexp", "/(a)/ $2\n", 1, "out of range replacement index '2'"),
    ("regexp", "/(a)/ $1y\n", 1, "non-numeric replacement index '1y'"),
    ("regexp", "!/(a)/ $1\n", 1, "$number found in negative match"),
    ("regexp", "/a/ x$\n", 1, "bad replacement syntax"),
    ("regexp", "\nif /a/\n/b/ x\n", 2, "if has no matching endif"),
    ("regexp", "/a/ x\nendif\n", 2, "endif without matching if"),
    ("regexp", "foo bar\n", 1, "unrecognized line"),
    ("regexp", " /a/ x\n", 1, "must not start with whitespace"),
    ("regexp", "/a x\n", 1, "missing closing delimiter"),
    ("pcre", "# x\n/(?R)/ x\n", 2, "unsupported group syntax"),
    ("pcre", "/a{99999999999}/ x\n", 1, "repetition number is too large"),     # atheris
    ("regexp", "/a/ x\n/a{99999999999}/ x\n", 2, "repetition number is too large"),
    ("pcre", "/a\\K/ x\n", 1, "escape \\K is not supported"),
    ("pcre", "if /a/ text\nendif\n", 1, "text after the if pattern"),
    ("cidr", "1.2.3.4/8 x\n", 1, "non-null host address bits"),
    ("cidr", "\n1.2.3.4/33 x\n", 2, "bad mask length"),
    ("cidr", "010.1.2.3 x\n", 1, "bad address pattern"),
    ("cidr", "1.2.3.4\n", 1, "no lookup result"),
    ("cidr", "if 10.0.0.0/8\n", 1, "if has no matching endif"),
])
def test_errors_name_file_and_line(tmp_path, kind, text, line, message) -> None:
    p = tmp_path / kind
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        open_table(f"{kind}:{p}")
    assert (e.value.path, e.value.line) == (str(p), line), f"got {e.value}"
    assert message in e.value.problem, f"got {e.value.problem!r}, want {message!r}"


def test_empty_result_is_a_warning(tmp_path) -> None:
    t, p = table(tmp_path, "regexp", "/^a$/\n")
    assert t.lookup("a") == ""
    assert t.warnings == [f"{p}, line 1: no replacement text: using empty string"]


@pytest.mark.parametrize("kind", ["regexp", "pcre", "cidr"])
def test_reopened_when_changed_and_bad_edit_defers(tmp_path, kind) -> None:
    first, second = ("1.2.3.4 one\n", "1.2.3.4 two\n") if kind == "cidr" else ("/a/ one\n", "/a/ two\n")
    t, p = table(tmp_path, kind, first)
    key = "1.2.3.4" if kind == "cidr" else "a"
    assert t.lookup(key) == "one"
    with open(p, "w") as f:
        f.write(second)
    os.utime(p, ns=(1, 1))
    assert t.lookup(key) == "two"
    with open(p, "w") as f:
        f.write("if junk\n")
    with pytest.raises(TableTempError):
        t.lookup(key)


def test_inline_pattern_tables() -> None:
    t = open_table("regexp:{ {/^a/ one}, {/^b(.)/ two $1} }")
    check(t, {"ax": "one", "bq": "two q", "c": None})
    c = open_table("cidr:{ {10.0.0.0/8 ten}, {::/0 six} }")
    check(c, {"10.1.1.1": "ten", "::1": "six", "1.1.1.1": None})


def test_cidr_families_brackets_and_if(tmp_path) -> None:
    t, _ = table(tmp_path, "cidr", "if !10.0.0.0/8\n0.0.0.0/0 notten\n::/0 never\nendif\n"
                 "[2001:db8::]/32 v6\n!192.168.0.0/16 not192\n")
    check(t, {"1.2.3.4": "notten", "2001:DB8::1": "v6", "10.1.1.1": "not192", "::1": None,
              "[1.2.3.4]": None, "host.example": None, "::ffff:10.1.1.1": None})


@pytest.mark.parametrize("posix,python", [
    ("[[:digit:]]{3}", "[0-9]{3}"),
    ("a+?", "(?:a+)?"),
    ("\\<w\\>", r"\b(?=\w)w\b(?<=\w)"),
    ("[]a-]", r"[\]a\-]"),
    ("x$", r"x\Z"),
    ("a{,2}", "a{0,2}"),
    ("x{", r"x\{"),
])
def test_posix_translation(posix, python) -> None:
    assert translate_posix(posix) == python


def test_posix_basic_syntax_and_newline_mode() -> None:
    assert translate_posix(r"\(a\)\{2\}+", extended=False) == r"(a){2}\+"
    assert translate_posix("[^a].$", newline=True) == r"[^a\n][^\n]$"
    with pytest.raises(RegexSyntaxError):
        translate_posix("[[:nope:]]")


@pytest.mark.parametrize("pcre,python", [
    (r"(?<n>x)\k<n>", r"(?P<n>x)(?P=n)"),
    (r"a(?i)b|c", r"a(?i:b)|(?i:c)"),
    (r"a{,2}", r"a\{,2\}"),
    (r"\Qa.b\E", r"a\.b"),
    (r"(a)(b)\g{-1}", r"(a)(b)(?:\2)"),
    (r"(?x) a b # c", "ab"),
    (r"\x{41}\z", r"A\Z"),
    (r"[[:alpha:]-]", r"[A-Za-z\-]"),
])
def test_pcre_translation(pcre, python) -> None:
    out = translate_pcre(pcre)
    assert out == python
    re.compile(out.encode())


def test_pcre_flags_ungreedy_and_dollar() -> None:
    assert translate_pcre("a+b*?", ungreedy=True) == "a+?b*"
    assert translate_pcre("a$", dollar_endonly=True) == r"a\Z"
    assert translate_pcre("a$", dollar_endonly=True, multiline=True) == "a$"
