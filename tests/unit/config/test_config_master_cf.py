"""master.cf parsing: columns, defaults, -o overrides, continuations, errors."""
from __future__ import annotations

import os

import pytest

from estafeta.config.master_cf import ServiceEntry, load_master_cf, parse_master_cf
from estafeta.core.errors import ConfigError

PATH = "/etc/estafeta/master.cf"


def parse(text: str, **kw: int) -> list[ServiceEntry]:
    return parse_master_cf(text, PATH, **kw)


def test_columns_and_defaults() -> None:
    (smtp, qmgr, virtual) = parse(
        "# header\n"
        "smtp      inet  n       -       -       -       -       smtpd\n"
        "qmgr      unix  n       -       n       300?    1       qmgr\n"
        "virtual   unix  -       n       y       -       0       virtual\n")
    assert smtp == ServiceEntry(name="smtp", type="inet", private=False, unpriv=True, chroot=False,
                                wakeup=0, wakeup_conditional=False, maxproc=100, command="smtpd",
                                args=[], overrides={}, line=2)
    assert (qmgr.wakeup, qmgr.wakeup_conditional, qmgr.maxproc, qmgr.private) == (300, True, 1, False)
    assert (virtual.private, virtual.unpriv, virtual.chroot, virtual.maxproc) == (True, False, True, 0)
    assert virtual.line == 4


def test_default_process_limit_comes_from_caller() -> None:
    (e,) = parse("smtp inet n - n - - smtpd\n", default_process_limit=7)
    assert e.maxproc == 7


def test_overrides_args_and_continuations() -> None:
    text = """\
submission inet n       -       n       -       -       smtpd
  -o syslog_name=estafeta/submission
  # a comment inside the entry
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -o smtpd_banner=
  -v
dovecot   unix  -       n       n       -       -       pipe
  flags=DRhu user=vmail argv=/usr/lib/dovecot/deliver -o x=y -f ${sender}
  { -a ${recipient} }
"""
    sub, dove = parse(text)
    assert sub.overrides == {"syslog_name": "estafeta/submission",
                             "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
                             "smtpd_banner": ""}
    assert sub.args == ["-v"]
    assert sub.line == 1
    # Options end at the first non-option: pipe's argv keeps its own -o.
    assert dove.overrides == {}
    assert dove.args == ["flags=DRhu", "user=vmail", "argv=/usr/lib/dovecot/deliver", "-o", "x=y",
                         "-f", "${sender}", "-a ${recipient}"]
    assert dove.line == 7


@pytest.mark.parametrize("name,want", [
    ("2525", (None, "2525")),
    ("smtp", (None, "smtp")),
    ("127.0.0.1:2525", ("127.0.0.1", "2525")),
    ("[::1]:2525", ("::1", "2525")),
    ("localhost:submission", ("localhost", "submission")),
])
def test_inet_service_names(name: str, want: tuple[str | None, str]) -> None:
    (e,) = parse(f"{name} inet n - n - - smtpd\n")
    assert e.endpoint == want, f"got {e.endpoint}, want {want}"


@pytest.mark.parametrize("text,want", [
    ("smtp inet n - n - smtpd\n", "line 1: wrong number of fields: got 7, want at least 8"),
    ("smtp tcp n - n - - smtpd\n",
     "line 1: bad service type: 'tcp' (want inet, unix, unix-dgram, fifo, pass)"),
    ("# c\nsmtp inet n - n x - smtpd\n", "line 2: bad wakeup time: 'x'"),
    ("smtp inet n - n -? - smtpd\n", "line 1: bad wakeup time: '-?'"),
    ("smtp inet n - n - -1 smtpd\n", "line 1: bad process limit: '-1'"),
    ("smtp inet yes - n - - smtpd\n", "line 1: bad private field: 'yes' (want y, n or -)"),
    ("smtp inet n - n - - smtpd -o\n", "line 1: bad -o syntax: missing name=value"),
    ("smtp inet n - n - - smtpd -o novalue\n", "line 1: bad -o syntax: 'novalue' (want name=value)"),
    ("smtp inet n - n - - smtpd -o { =x }\n", "line 1: bad -o syntax: '{ =x }' (want name=value)"),
    ("smtp inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\nsmtp inet n - n - - smtpd\n",
     "line 3: duplicate service: smtp/inet (first at line 1)"),
    ("  -o a=b\n", "line 1: continuation line before any service"),
    ("[::1:25 inet n - n - - smtpd\n",
     "line 1: bad inet service name: '[::1:25' (want port, host:port or [addr]:port)"),
    ("a/b unix n - n - - smtpd\n", "line 1: bad service name: 'a/b'"),
])
def test_errors_name_file_and_line(text: str, want: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text)
    got = str(e.value)
    assert got == f"{PATH}, {want}", f"got {got!r}, want {PATH + ', ' + want!r}"


def test_same_name_different_type_is_fine() -> None:
    assert len(parse("x unix n - n - - a\nx fifo n - n - - a\n")) == 2


def test_load_master_cf(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "master.cf")
    with open(path, "w") as f:
        f.write("smtp inet n - n - - smtpd\n")
    assert [e.name for e in load_master_cf(path)] == ["smtp"]
    with pytest.raises(ConfigError) as e:
        load_master_cf(path + ".missing")
    assert str(e.value) == f"{path}.missing: cannot read: No such file or directory"
