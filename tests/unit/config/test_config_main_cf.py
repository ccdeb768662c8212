"""main.cf parsing, expansion, typed access, check() and edit_main_cf()."""
from __future__ import annotations

import os

import pytest

from estafeta.config.main_cf import MainConfig, check, edit_main_cf
from estafeta.core.errors import ConfigError


def parse(text: str) -> MainConfig:
    return MainConfig.parse(text, "/etc/estafeta/main.cf")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        cfg = parse(text)
        check(cfg)
    return str(e.value)


# --- syntax -------------------------------------------------------------------
def test_basic_settings_and_spaces_around_equals() -> None:
    cfg = parse("a = 1\nb=2\nc   =   three words  \nd =\n")
    got = cfg.changed()
    want = {"a": "1", "b": "2", "c": "three words", "d": ""}
    assert got == want, f"got {got}, want {want}"


def test_comments_and_blank_lines() -> None:
    cfg = parse("# top\n\n   # indented comment\na = 1 # not a comment\n\n")
    assert cfg.raw("a") == "1 # not a comment"
    assert cfg.changed() == {"a": "1 # not a comment"}


def test_continuation_lines_join_with_one_space() -> None:
    cfg = parse("a = foo,\n    bar\n\tbaz\nb = x\n")
    assert cfg.raw("a") == "foo, bar baz"
    assert cfg.raw("b") == "x"


def test_comment_inside_continuation_is_skipped() -> None:
    cfg = parse("a = foo\n  # c\n\n  bar\n")
    assert cfg.raw("a") == "foo bar"


def test_empty_value_then_continuation() -> None:
    assert parse("a =\n  x\n").raw("a") == "x"


def test_line_numbers_are_kept() -> None:
    cfg = parse("# c\na = 1\n\nb = 2\n  more\n")
    a, b = cfg.setting("a"), cfg.setting("b")
    assert a is not None and b is not None
    assert (a.line, b.line) == (2, 4)


def test_last_duplicate_wins_and_check_warns() -> None:
    cfg = parse("myhostname = a.example\nmyhostname = b.example\n")
    assert cfg.get("myhostname") == "b.example"
    assert check(cfg) == ["/etc/estafeta/main.cf, line 2: myhostname overrides the setting at line 1"]


@pytest.mark.parametrize("text,want", [
    ("a = 1\njunk\n", "/etc/estafeta/main.cf, line 2: missing '=' after parameter name: 'junk'"),
    (" = 1\n", "/etc/estafeta/main.cf, line 1: continuation line before any parameter"),
    ("= 1\n", "/etc/estafeta/main.cf, line 1: empty parameter name"),
    ("a-b = 1\n", "/etc/estafeta/main.cf, line 1: bad parameter name: 'a-b'"),
    ("# c\n  x = 1\n", "/etc/estafeta/main.cf, line 2: continuation line before any parameter"),
    ("a b = 1\n", "/etc/estafeta/main.cf, line 1: bad parameter name: 'a b'"),
])
def test_syntax_errors_name_file_and_line(text: str, want: str) -> None:
    got = error_of(text)
    assert got == want, f"got {got!r}, want {want!r}"


def test_load_missing_file(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    with pytest.raises(ConfigError) as e:
        MainConfig.load(path)
    assert str(e.value) == f"{path}: cannot read: No such file or directory"


# --- expansion ------------------------------------------------------------------
EXPANSIONS = """\
a = 1
b = $a$a
c = ${a?yes}
d = ${zz:no}
e = foo
  bar
f = ${a?{x y}:{no}}
g = ${zz?{x y}:{no}}
h = $$a
i = $(a)x
j = $zz-
k = ${a:{z}}
l = $j$k
p = ${zz?{x y}}
q = ${a:{z}}x
r = ${a?{}:{z}}
s = $zz
t = ${s?yes:no}
u = ${a?$b$b}
v = ${a? yes }|
w = ${a?${b}}
empty =
x = ${empty:was empty}
y = ${empty?{set}:{unset}}
z = $a.b
"""


@pytest.mark.parametrize("name,want", [
    ("a", "1"), ("b", "11"), ("c", "yes"), ("d", "no"), ("e", "foo bar"),
    ("f", "x y"), ("g", "no"), ("h", "$a"), ("i", "1x"), ("j", "-"), ("k", ""),
    ("l", "-"), ("p", ""), ("q", "x"), ("r", ""), ("s", ""),
    # The condition tests the value as written: s is "$zz", not empty.
    ("t", "yes:no"), ("u", "1111"), ("v", "yes |"), ("w", "11"),
    ("x", "was empty"), ("y", "unset"), ("z", "1.b"),
])
def test_expansion(name: str, want: str) -> None:
    got = parse(EXPANSIONS).get(name)
    assert got == want, f"{name}: got {got!r}, want {want!r}"


def test_defaults_expand_against_settings() -> None:
    cfg = parse("myhostname = mx.example.org\n")
    assert cfg.get("mydomain") == "example.org"
    assert cfg.get("myorigin") == "mx.example.org"
    assert cfg.get("mydestination") == "mx.example.org, localhost.example.org, localhost"
    assert cfg.get("smtpd_banner") == "mx.example.org ESMTP"
    assert cfg.get("local_transport") == "local:mx.example.org"


def test_mydomain_of_short_hostname_is_localdomain() -> None:
    assert parse("myhostname = example.org\n").get("mydomain") == "localdomain"


def test_computed_default_loop_is_an_error() -> None:
    cfg = parse("myhostname = $mydomain\n")
    with pytest.raises(ConfigError) as e:
        cfg.get("myhostname")
    assert "recursive expansion" in str(e.value)


def test_unknown_name_in_get_is_keyerror() -> None:
    with pytest.raises(KeyError):
        parse("").get("no_such_parameter")


def test_self_recursion_names_file_and_line() -> None:
    cfg = parse("a = 1\nm = x $m\n")
    with pytest.raises(ConfigError) as e:
        cfg.get("m")
    assert str(e.value) == "/etc/estafeta/main.cf, line 2: parameter m: recursive expansion"


def test_mutual_recursion() -> None:
    cfg = parse("a = $b\nb = ${c}\nc = $(a)\n")
    with pytest.raises(ConfigError) as e:
        cfg.get("a")
    assert str(e.value) == "/etc/estafeta/main.cf, line 1: parameter a: recursive expansion"


def test_recursion_inside_conditional() -> None:
    cfg = parse("a = ${a?{$a}}\n")
    with pytest.raises(ConfigError, match="parameter a: recursive expansion"):
        cfg.get("a")


@pytest.mark.parametrize("value,problem", [
    ("x$ y", "parameter a: empty macro name in 'x$ y'"),
    ("${b", "parameter a: missing '}' in '${b'"),
    ("${b!x}", "parameter a: bad macro operator in ${b!x}"),
    ("${b?{x}y}", "parameter a: bad conditional ${b?{x}y}"),
])
def test_bad_macros(value: str, problem: str) -> None:
    cfg = parse(f"# c\na = {value}\nb = 1\n")
    with pytest.raises(ConfigError) as e:
        cfg.get("a")
    want = f"/etc/estafeta/main.cf, line 2: {problem}"
    assert str(e.value) == want, f"got {str(e.value)!r}, want {want!r}"


def test_expansion_result_is_cached_and_consistent() -> None:
    cfg = parse("a = $b\nb = 2\n")
    assert cfg.get("a") == cfg.get("a") == "2"


# --- typed accessors -------------------------------------------------------------
@pytest.mark.parametrize("value,want", [
    ("5d", 432000.0), ("1h", 3600.0), ("300s", 300.0), ("300", 300.0), ("2m", 120.0),
    ("1w", 604800.0), ("100ms", 0.1), ("0", 0.0), ("10S", 10.0),
])
def test_get_duration(value: str, want: float) -> None:
    got = parse(f"smtpd_timeout = {value}\n").get_duration("smtpd_timeout")
    assert got == pytest.approx(want), f"got {got}, want {want}"


def test_bare_duration_uses_the_parameter_unit() -> None:
    cfg = parse("maximal_queue_lifetime = 2\ndelay_warning_time = 4\n")
    assert cfg.get_duration("maximal_queue_lifetime") == 2 * 86400
    assert cfg.get_duration("delay_warning_time") == 4 * 3600


def test_duration_defaults() -> None:
    cfg = parse("")
    assert cfg.get_duration("maximal_queue_lifetime") == 432000
    assert cfg.get_duration("queue_run_delay") == 300
    assert cfg.get_duration("delay_warning_time") == 0


def test_int_size_bool_list() -> None:
    cfg = parse("smtpd_recipient_limit = 5\nmessage_size_limit = 1000\nbiff = NO\n"
                "mynetworks = 10.0.0.0/8,192.0.2.0/24  [::1]/128 ,\n  198.51.100.0/24\n"
                "smtpd_recipient_restrictions = permit_mynetworks,\n"
                "  check_client_access { inline:{ 1.2.3.4=REJECT } }, reject\n")
    assert cfg.get_int("smtpd_recipient_limit") == 5
    assert cfg.get_size("message_size_limit") == 1000
    assert cfg.get_bool("biff") is False
    assert cfg.get_bool("soft_bounce") is False
    assert cfg.get_bool("fsync_queue") is True
    assert cfg.get_list("mynetworks") == ["10.0.0.0/8", "192.0.2.0/24", "[::1]/128", "198.51.100.0/24"]
    assert cfg.get_list("smtpd_recipient_restrictions") == [
        "permit_mynetworks", "check_client_access", "{ inline:{ 1.2.3.4=REJECT } }", "reject"]
    assert cfg.get_list("mydestination")[-1] == "localhost"
    assert cfg.get_list("relay_domains") == []
    assert cfg.get_size("header_size_limit") == 102400


def test_typed_accessor_error_names_setting_line() -> None:
    cfg = parse("# size\nmessage_size_limit = ten\n")
    with pytest.raises(ConfigError) as e:
        cfg.get_size("message_size_limit")
    assert str(e.value) == "/etc/estafeta/main.cf, line 2: parameter message_size_limit: bad size value: 'ten'"


@pytest.mark.parametrize("text,want", [
    ("\nmessage_size_limit = ten\n",
     "/etc/estafeta/main.cf, line 2: parameter message_size_limit: bad size value: 'ten'"),
    ("smtpd_timeout = 5y\n", "/etc/estafeta/main.cf, line 1: parameter smtpd_timeout: bad time value: '5y'"),
    ("biff = maybe\n", "/etc/estafeta/main.cf, line 1: parameter biff: bad boolean value: 'maybe' (want yes or no)"),
    ("x = 1\nmax_use = \n  1.5\n", "/etc/estafeta/main.cf, line 2: parameter max_use: bad integer value: '1.5'"),
    # The error is reported where the bad parameter was set, even via $name.
    ("n = lots\nsmtpd_recipient_limit = $n\n",
     "/etc/estafeta/main.cf, line 2: parameter smtpd_recipient_limit: bad integer value: 'lots'"),
])
def test_check_type_errors(text: str, want: str) -> None:
    got = error_of(text)
    assert got == want, f"got {got!r}, want {want!r}"


# Postfix's local(8) and virtual(8): "fatal: main.cf configuration error: mailbox_size_limit
# is smaller than message_size_limit"; estafeta check and start refuse the same settings.
@pytest.mark.parametrize("text,want", [
    ("myhostname = mx\nmailbox_size_limit = 100000\n",
     "/etc/estafeta/main.cf, line 2: mailbox_size_limit is smaller than message_size_limit (100000 < 10240000)"),
    ("message_size_limit = 60000000\n",          # the defaults' 51200000 mailbox limit is now too small
     "/etc/estafeta/main.cf, line 1: mailbox_size_limit is smaller than message_size_limit (51200000 < 60000000)"),
    ("mailbox_size_limit = 0\nmessage_size_limit = 60000000\n",
     "/etc/estafeta/main.cf, line 2: virtual_mailbox_limit is smaller than message_size_limit (51200000 < 60000000)"),
    ("#\nvirtual_mailbox_limit = 5000\nmessage_size_limit = 4000\nmailbox_size_limit = 4000\n\n"
     "virtual_mailbox_limit = 3999\n",
     "/etc/estafeta/main.cf, line 6: virtual_mailbox_limit is smaller than message_size_limit (3999 < 4000)"),
    ("message_size_limit = 0\n",
     "/etc/estafeta/main.cf, line 1: mailbox_size_limit is smaller than message_size_limit "
     "(51200000, message_size_limit 0 means no limit)"),
])
def test_check_mailbox_limits_below_message_size_limit(text: str, want: str) -> None:
    got = error_of(text)
    assert got == want, f"got {got!r}, want {want!r}"


@pytest.mark.parametrize("text", [
    "mailbox_size_limit = 10240000\nvirtual_mailbox_limit = 10240000\n",     # equal is enough
    "mailbox_size_limit = 0\nvirtual_mailbox_limit = 0\nmessage_size_limit = 0\n",
    "mailbox_size_limit = 0\nvirtual_mailbox_limit = 0\nmessage_size_limit = 99999999\n",
    "message_size_limit = 1000\nmailbox_size_limit = 1000\nvirtual_mailbox_limit = 2000\n",
])
def test_check_mailbox_limits_that_fit(text: str) -> None:
    assert check(parse(text)) == []


def test_check_refuses_a_recipient_limit_below_one() -> None:
    """Postfix 3.7's smtpd and sendmail -bs stop on it: "invalid smtpd_recipient_limit
    parameter value 0 < 1"."""
    got = error_of("myhostname = mx\nsmtpd_recipient_limit = 0\n")
    want = "/etc/estafeta/main.cf, line 2: invalid smtpd_recipient_limit parameter value 0 < 1"
    assert got == want, f"got {got!r}, want {want!r}"
    assert check(parse("smtpd_recipient_limit = 1\n")) == []


def test_check_warns_about_unused_unknown_parameters() -> None:
    cfg = parse("myhostname = $my_name\nmy_name = mx.example\ntypo_parameter = 1\n")
    want = ["/etc/estafeta/main.cf, line 3: unused parameter: typo_parameter=1"]
    assert check(cfg) == want


def test_check_clean_config() -> None:
    assert check(parse("myhostname = mx.example.org\nsmtpd_timeout = 60\n")) == []


# --- overrides ---------------------------------------------------------------------
def test_overrides_return_a_new_config() -> None:
    cfg = parse("smtpd_timeout = 300s\nsmtpd_banner = hello\n")
    over = cfg.overrides({"smtpd_timeout": "10s", "syslog_name": "estafeta/submission"},
                         path="/etc/estafeta/master.cf", line=7)
    assert over.get_duration("smtpd_timeout") == 10
    assert over.get("syslog_name") == "estafeta/submission"
    assert over.get("smtpd_banner") == "hello"
    assert cfg.get_duration("smtpd_timeout") == 300
    assert cfg.raw("syslog_name") is None
    assert over.changed() == {"smtpd_timeout": "10s", "smtpd_banner": "hello",
                              "syslog_name": "estafeta/submission"}


def test_bad_override_is_reported_in_master_cf() -> None:
    over = parse("").overrides({"smtpd_timeout": "soon"}, path="/etc/estafeta/master.cf", line=7)
    with pytest.raises(ConfigError) as e:
        check(over)
    assert str(e.value) == "/etc/estafeta/master.cf, line 7: parameter smtpd_timeout: bad time value: 'soon'"


# --- edit_main_cf --------------------------------------------------------------------
ORIGINAL = """\
# Leading comment
myhostname = old.example

# Networks we trust:
mynetworks = 127.0.0.0/8,
    10.0.0.0/8
  # an interior comment
    192.168.0.0/16
# trailing comment
smtpd_banner = $myhostname ESMTP
"""


def test_edit_replaces_multiline_value_in_place(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    with open(path, "w") as f:
        f.write(ORIGINAL)
    os.chmod(path, 0o640)
    edit_main_cf(path, {"mynetworks": "127.0.0.0/8", "relayhost": "[mx.example]:587",
                        "myhostname": "new.example"})
    with open(path) as f:
        got = f.read()
    want = """\
# Leading comment
myhostname = new.example

# Networks we trust:
mynetworks = 127.0.0.0/8
  # an interior comment
# trailing comment
smtpd_banner = $myhostname ESMTP
relayhost = [mx.example]:587
"""
    assert got == want, f"got:\n{got}\nwant:\n{want}"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(str(tmp_path))) == ["main.cf"], "temp file left behind"
    cfg = MainConfig.load(path)
    assert cfg.get("mynetworks") == "127.0.0.0/8"
    assert cfg.get("relayhost") == "[mx.example]:587"


def test_edit_removes_later_duplicates(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    with open(path, "w") as f:
        f.write("a = 1\nb = 2\na = 3\n  more")  # no final newline
    edit_main_cf(path, {"a": "4", "c": ""})
    with open(path) as f:
        assert f.read() == "a = 4\nb = 2\nc =\n"


def test_edit_creates_missing_file(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    edit_main_cf(path, {"myhostname": "x.example"})
    with open(path) as f:
        assert f.read() == "myhostname = x.example\n"


def test_edit_rejects_bad_input(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    with pytest.raises(ConfigError) as e:
        edit_main_cf(path, {"a": "x\ny"})
    assert str(e.value) == f"{path}: parameter a: value contains a line break"
    with pytest.raises(ConfigError) as e:
        edit_main_cf(path, {"a b": "x"})
    assert str(e.value) == f"{path}: bad parameter name: 'a b'"
    with open(path, "w") as f:
        f.write("ok = 1\nbroken\n")
    with pytest.raises(ConfigError) as e:
        edit_main_cf(path, {"a": "x"})
    assert str(e.value) == f"{path}, line 2: missing '=' after parameter name: 'broken'"
    with open(path) as f:
        assert f.read() == "ok = 1\nbroken\n"


def test_check_knows_per_transport_limits() -> None:
    # <service>_destination_{concurrency,recipient}_limit for any master.cf service is
    # read by qmgr (Postfix's per-transport limits): no "unused parameter" warning ...
    cfg = parse("relay_destination_concurrency_limit = 3\nsmtp_destination_recipient_limit = 5\n")
    assert check(cfg) == []
    # ... and a value that is not a number is an error at its line.
    got = error_of("x = 1\nmypipe_destination_recipient_limit = many\n")
    assert got == ("/etc/estafeta/main.cf, line 2: parameter mypipe_destination_recipient_limit: "
                   "bad integer value: 'many'"), got
