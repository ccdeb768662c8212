"""Postfix's postmap is the oracle: the same table files, the same keys, the same answers.

For each table type the test writes one source file, asks `postmap -q - TYPE:FILE`
(one process, keys on stdin; keys with blanks one `postmap -q` each) and estafeta's
open_table(...).lookup for a corpus of hundreds of keys (address extensions,
subdomains, case, IPv4/IPv6, captures, if/endif, negation) and requires identical
answers; "not found" is postmap's exit 1 / a missing output line. hash: is compared
on lookups only (postmap builds its own Berkeley DB). pgsql runs against a private
PostgreSQL cluster started here (root and the postgresql binaries needed).
Debian packages: postfix, postfix-pcre, postfix-sqlite, postfix-pgsql, postgresql.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from estafeta.tables import TableTempError, open_table
from estafeta.tables import hash as hash_table

POSTMAP = shutil.which("postmap") or ("/usr/sbin/postmap" if os.path.exists("/usr/sbin/postmap") else None)
pytestmark = pytest.mark.skipif(POSTMAP is None, reason="postmap not installed (Debian package postfix)")


def postfix_types(conf: str) -> set[str]:
    out = subprocess.run(["postconf", "-c", conf, "-m"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("postfix-etc")
    (d / "main.cf").write_text("compatibility_level = 3.6\n")
    return str(d)


def needs_type(conf: str, kind: str) -> None:
    if kind not in postfix_types(conf):
        pytest.skip(f"postmap has no {kind}: tables (Debian package postfix-{kind})")


def postmap_answers(conf: str, spec: str, keys: list[str]) -> dict[str, str | None]:
    """Postfix's answer for each key (None = not found)."""
    got: dict[str, str | None] = {}
    batch = [k for k in keys if k and not any(c.isspace() for c in k)]
    out = subprocess.run([POSTMAP, "-c", conf, "-q", "-", spec], input="\n".join(batch) + "\n",
                         capture_output=True, text=True, errors="surrogateescape")
    assert "fatal" not in out.stderr, out.stderr
    found = {}
    for line in out.stdout.splitlines():
        k, _, v = line.partition("\t")
        found[k] = v
    for k in batch:
        got[k] = found.get(k)
    for k in keys:
        if k in got:
            continue
        r = subprocess.run([POSTMAP, "-c", conf, "-q", k, spec], capture_output=True, text=True,
                           errors="surrogateescape")
        assert "fatal" not in r.stderr, r.stderr
        got[k] = r.stdout.rstrip("\n") if r.returncode == 0 else None
    return got


def compare(conf: str, spec: str, keys: list[str], est_spec: str | None = None) -> None:
    keys = list(dict.fromkeys(keys))
    want = postmap_answers(conf, spec, keys)
    table = open_table(est_spec or spec)
    got = {k: table.lookup(k) for k in keys}
    diff = {k: (got[k], want[k]) for k in keys if got[k] != want[k]}
    assert not diff, f"{len(diff)} of {len(keys)} keys differ; key: (got, want):\n" + \
        "\n".join(f"  {k!r}: {v}" for k, v in list(diff.items())[:40])
    assert sum(v is not None for v in want.values()) > len(keys) // 5, "corpus finds too little to mean much"


# -- key corpora --------------------------------------------------------------------------
USERS = ["alice", "Bob", "postmaster", "owner-list", "list-outgoing", "o'brien", "x", "info", "abuse", ""]
EXTS = ["", "+ext", "+foo+bar", "-dash"]
DOMAINS = ["example.com", "EXAMPLE.COM", "mail.example.com", "a.b.example.com", "example.net",
           "sub.example.org", "localhost", "xn--bcher-kva.example", "example.com."]


def address_keys() -> list[str]:
    keys = [f"{u}{e}@{d}" for u in USERS for e in EXTS for d in DOMAINS]
    keys += [f"{u}{e}" for u in USERS for e in EXTS if u]
    keys += [f"@{d}" for d in DOMAINS] + DOMAINS + [f".{d}" for d in DOMAINS]
    keys += ["user@host@example.com", "a%b@example.com", "a!b@example.com", "<>", "MAILER-DAEMON",
             "Subject: make money fast", "subject: MAKE MONEY FAST now", "To: friend@public.com"]
    return keys


def ip_keys() -> list[str]:
    keys = []
    for a in (1, 10, 127, 168, 172, 192, 203):
        for b in (0, 16, 31, 32, 168, 255):
            keys += [f"{a}.{b}.119.5", f"{a}.{b}.0.1", f"{a}.{b}.255.254"]
    keys += ["192.168.119.1", "192.168.1.1", "192.168.1.2", "0.0.0.0", "255.255.255.255", "127.0.0.1",
             "::1", "::", "2001:db8::1", "2001:DB8:0:0::0001", "2001:db8:1::1", "2001:db9::1", "fe80::1",
             "::ffff:192.168.1.1", "::ffff:10.1.2.3", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
             "[192.168.1.1]", "192.168.01.1", "1.2.3", "host.example.com", "", "1.2.3.4.5", "10.0.0.256"]
    return keys


REGEXP_TABLE = r"""# regexp_table(5) examples and more
/[%!@].*[%!@]/       550 Sender-specified routing rejected
/^postmaster@/       OK
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif
/^Subject: make money fast/     REJECT
/^To: friend@public\.com/       REJECT
/^(alice)(\+([^@]*))?@(.*\.)?example\.com$/   alice=$1 ext=[$3] sub=[$4]
/^bob@/i                        lowercase-only
/^Bob@/                         never-reached
/^([^+@]+)\+([^@]+)@/           ext $2 of $1
if /@example\.net$/
if !/^info@/
/^(.)(.)/                       net $(2)$(1) $$literal
endif
/^info@/                        info-net
endif
/^[[:alpha:]]+$/                bare word
/^[[:digit:].]+$/               digits and dots
/^[^@]*$/m                      no at sign (m flag)
/\<example\>/                   word boundary
/^x{1,3}@/                      interval
|^o'brien|                      quote in key
/^(a|ab)(c|bcd)?@/              alternation [$1][$2]
/^.+@[^.]+\.(com|org)\.?$/      tld $1
!/^[a-z]/                       starts with non-letter
"""

PCRE_TABLE = r"""# pcre_table(5) examples and PCRE-only syntax
/^(?!owner-)(.*)-outgoing@(.*)/ 550 Use ${1}@${2} instead
/^(friend@(?!my\.domain$).*)$/  550 Stick this in your pipe $1
/^postmaster@/                  OK
if /@example\.net$/
/^(?<user>[^@+]+)\+(\w+)@/      named $1 ext $2
/^info@/                        info-net
endif
/^(alice)(?:\+(.*?))?@(?:(.+)\.)?example\.com$/   alice=$1 ext=[$2] sub=[$3]
/^bob@/                         caseless bob
/^BOB\+/i                       never (i toggled off, Bob is not BOB)
/^Subject:\s+make\s+money/      REJECT spam subject
/^[[:alpha:]]+$/                bare word
/^\d+(\.\d+){3}$/               ipv4ish
/ \d /x                         digit
/^x{1,3}@/                      interval
/^o\x27brien/                   quote via \x27
/^\Qa.b\E/                      quoted
/^(a|ab)(c|bcd)?@/              alternation [$1][$2]
/^(\w+)-dash@(?i)EXAMPLE/       dash $1
/^.+@[^.]+\.(com|org)\.?$/      tld $1
/^mail/A                        anchored
/@localhost$/E                  dollar endonly
!/^[a-z]/                       starts with non-letter
"""

CIDR_TABLE = """# cidr_table(5) example and more
192.168.1.1             OK
192.168.0.0/16          REJECT
2001:db8::1             OK
2001:db8::/32           REJECT v6
127.0.0.0/8             RELAY loopback
!10.0.0.0/8             DUNNO not ten
if 10.0.0.0/8
10.16.0.0/12            inside ten sixteen
if !10.32.0.0/11
10.0.0.0/9              ten low half
endif
endif
[172.16.0.0]/12         private 172
0.0.0.0/0               any v4
::/0                    any v6
"""


def test_regexp_matches_postmap(conf, tmp_path) -> None:
    f = tmp_path / "regexp"
    f.write_text(REGEXP_TABLE)
    compare(conf, f"regexp:{f}", address_keys() + ["a word b", "example", "xxx@y", "abc@x", "ac@x"])


def test_pcre_matches_postmap(conf, tmp_path) -> None:
    needs_type(conf, "pcre")
    f = tmp_path / "pcre"
    f.write_text(PCRE_TABLE)
    compare(conf, f"pcre:{f}", address_keys() + ["a 1 b", "a.b", "a.bc", "friend@my.domain", "friend@x.y",
                                                   "Subject:   make  money", "abc@x", "ac@x"])


def test_cidr_matches_postmap(conf, tmp_path) -> None:
    needs_type(conf, "cidr")
    f = tmp_path / "cidr"
    f.write_text(CIDR_TABLE)
    compare(conf, f"cidr:{f}", ip_keys())


def test_hash_matches_postmap(conf, tmp_path) -> None:
    """The seed's /etc/mail/access, access(5) keys and virtual(5) keys; lookups only."""
    src = ("localhost RELAY\n127.0.0.1 RELAY\n192.168.119 RELAY\n168.0 REJECT\n"
           "alice@example.com alice-mbox\nBob+ext@Example.COM bob-ext\n@example.net catch-all\n"
           "example.org OK\n.example.org subdomains\npostmaster@ postmaster-any\n"
           "key  value with   spaces  \nmulti first\n  second line\n2001:db8::1 v6\n")
    pf, est = tmp_path / "pf", tmp_path / "est"
    pf.mkdir()
    est.mkdir()
    (pf / "access").write_text(src)
    (est / "access").write_text(src)
    r = subprocess.run([POSTMAP, "-c", conf, f"hash:{pf / 'access'}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    hash_table.build(str(est / "access"), hash_table.source_pairs(str(est / "access")))
    keys = address_keys() + ip_keys() + ["localhost", "LocalHost", "192.168.119", "168.0", "168.0.1",
                                         "key", "multi", "bob+ext@example.com", "postmaster@"]
    compare_loose(conf, f"hash:{pf / 'access'}", keys, est_spec=f"hash:{est / 'access'}")


SQL_ROWS = [("alice@example.com", "alice-box"), ("bob@example.com", "bob-box"),
            ("o'brien@example.com", "quoted"), ("@example.net", "catch@all.example"),
            ("list@example.com", "a@x.example"), ("list@example.com", "b@y.example"),
            ("list@example.com", ""), ("list@example.com", None), ("example.org", "OK"),
            ("x@mail.example.com", "deep")]

SQL_CONFIGS = {
    "plain": "query = SELECT dest FROM v WHERE k = '%s'\n",
    "parts": "query = SELECT dest FROM v WHERE k = '%u@%d'\n",
    "labels": "query = SELECT '%3|%2|%1' FROM v WHERE k = '%s'\n",
    "format": "query = SELECT dest FROM v WHERE k = '%s'\nresult_format = smtp:[%d] %u %s %U %D %%\n",
    "domain": "query = SELECT dest FROM v WHERE k = '%s'\ndomain = example.com, example.net\n",
    "limit": "query = SELECT dest FROM v WHERE k = '%s'\nexpansion_limit = 5\n",
    "percent": "query = SELECT dest FROM v WHERE k = '%s' AND '%%' = '%%'\n",
    "multi": "query = SELECT k, dest\n  FROM v WHERE k = '%s'\n",
}


def sql_keys() -> list[str]:
    return [k for k, _ in SQL_ROWS] + [k.upper() for k, _ in SQL_ROWS] + address_keys() + \
        ["'; DROP TABLE v; --", "a'b@example.com", "x@y", "@example.com", "user@", "a\\b@example.com"]


def test_sqlite_matches_postmap(conf, tmp_path) -> None:
    needs_type(conf, "sqlite")
    db = tmp_path / "v.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE v (k TEXT, dest TEXT)")
        c.executemany("INSERT INTO v VALUES (?, ?)", SQL_ROWS)
    for name, body in SQL_CONFIGS.items():
        cf = tmp_path / f"{name}.cf"
        cf.write_text(f"dbpath = {db}\n{body}")
        compare_loose(conf, f"sqlite:{cf}", sql_keys())


def compare_loose(conf: str, spec: str, keys: list[str], est_spec: str | None = None) -> None:
    """As compare(), without the 'finds enough' floor (exact-key tables, selective configurations)."""
    keys = list(dict.fromkeys(keys))
    want = postmap_answers(conf, spec, keys)
    table = open_table(est_spec or spec)
    got = {k: table.lookup(k) for k in keys}
    diff = {k: (got[k], want[k]) for k in keys if got[k] != want[k]}
    assert not diff, f"{spec}: {len(diff)} keys differ; key: (got, want):\n" + \
        "\n".join(f"  {k!r}: {v}" for k, v in list(diff.items())[:40])
    assert any(v is not None for v in want.values())


# -- pgsql against a private PostgreSQL ----------------------------------------------------
PG_BIN = "/usr/lib/postgresql/15/bin"


def _pg_bin() -> str | None:
    for v in ("17", "16", "15", "14", "13"):
        if os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb"):
            return f"/usr/lib/postgresql/{v}/bin"
    return None


@pytest.fixture(scope="module")
def postgres():
    """A private cluster on a free port, as PEERS.md section 8; yields (dir, port)."""
    from estafeta.testing.instance import free_port
    b = _pg_bin()
    if os.geteuid() != 0:
        pytest.skip("needs root (initdb runs as the postgres user via su)")
    if b is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install estafeta[pgsql])")
    d = tempfile.mkdtemp(prefix="estafeta-pg.")
    shutil.chown(d, "postgres", "postgres")
    port = free_port()

    def su(cmd: str) -> None:
        subprocess.run(["su", "postgres", "-c", cmd], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
    su(f"{b}/initdb -D {d}/data -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync")
    su(f"{b}/pg_ctl -D {d}/data -l {d}/pg.log -w -t 30 -o '-p {port} -k {d} "
       f"-c listen_addresses=127.0.0.1 -c fsync=off' start")
    try:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            c.execute("CREATE DATABASE mta")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="mta", autocommit=True) as c:
            c.execute("CREATE TABLE v (k text, dest text)")
            with c.cursor() as cur:
                cur.executemany("INSERT INTO v VALUES (%s, %s)", SQL_ROWS)
            c.execute("CREATE TABLE flags (k text, n integer, b boolean)")
            c.execute("INSERT INTO flags VALUES ('one', 1, true)")
        yield d, port
    finally:
        subprocess.run(["su", "postgres", "-c", f"{b}/pg_ctl -D {d}/data -m fast -w stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_pgsql_matches_postmap(conf, postgres, tmp_path) -> None:
    needs_type(conf, "pgsql")
    d, port = postgres
    for name, body in list(SQL_CONFIGS.items()) + [
            ("types", "query = SELECT n, b FROM flags WHERE k = '%s'\n"),
            ("unix", "query = SELECT dest FROM v WHERE k = '%s'\n")]:
        hosts = f"unix:{d}" if name == "unix" else f"inet:127.0.0.1:{port}"
        cf = tmp_path / f"{name}.cf"
        cf.write_text(f"hosts = {hosts}\nuser = postgres\ndbname = mta\n{body}")
        if name == "unix":
            # As Postfix, unix:/dir ignores the port: the socket is /dir/.s.PGSQL.5432.
            with pytest.raises(TableTempError, match=r"\.s\.PGSQL\.5432"):
                open_table(f"pgsql:{cf}").lookup("alice@example.com")
            continue
        keys = sql_keys() + ["one"]
        compare_loose(conf, f"pgsql:{cf}", keys)


def test_pgsql_down_is_a_temporary_error(tmp_path) -> None:
    pytest.importorskip("psycopg")
    from estafeta.testing.instance import free_port
    cf = tmp_path / "down.cf"
    cf.write_text(f"hosts = inet:127.0.0.1:{free_port()}\nuser = postgres\ndbname = mta\n"
                  "query = SELECT dest FROM v WHERE k = '%s'\n")
    t = open_table(f"pgsql:{cf}")
    with pytest.raises(TableTempError, match="cannot connect"):
        t.lookup("alice@example.com")


def test_pgsql_bad_query_is_a_temporary_error(postgres, tmp_path) -> None:
    d, port = postgres
    cf = tmp_path / "bad.cf"
    cf.write_text(f"hosts = 127.0.0.1:{port}\nuser = postgres\ndbname = mta\n"
                  "query = SELECT dest FROM no_such_table WHERE k = '%s'\n")
    with pytest.raises(TableTempError, match="no_such_table"):
        open_table(f"pgsql:{cf}").lookup("alice@example.com")
    cf.write_text(f"hosts = 127.0.0.1:{port}\nuser = postgres\ndbname = mta\nexpansion_limit = 1\n"
                  "query = SELECT dest FROM v WHERE k = '%s'\n")
    t = open_table(f"pgsql:{cf}")
    assert t.lookup("alice@example.com") == "alice-box"
    with pytest.raises(TableTempError, match="expansion_limit"):
        t.lookup("list@example.com")


def test_estafeta_map_cli_agrees_with_postmap(conf, tmp_path) -> None:
    """`estafeta map -q` (one key, and - for stdin) answers as `postmap -q` for each type."""
    import sys
    f = tmp_path / "regexp"
    f.write_text(REGEXP_TABLE)
    c = tmp_path / "cidr"
    c.write_text(CIDR_TABLE)
    est = [sys.executable, "-m", "estafeta.cli.main", "map"]
    for spec, keys in ((f"regexp:{f}", ["alice+x@mail.example.com", "nobody", "Bob@x"]),
                       (f"cidr:{c}", ["10.16.1.1", "2001:db8::1", "nope"])):
        for k in keys:
            a = subprocess.run(est + ["-q", k, spec], capture_output=True, text=True)
            b = subprocess.run([POSTMAP, "-c", conf, "-q", k, spec], capture_output=True, text=True)
            assert (a.returncode, a.stdout) == (b.returncode, b.stdout), f"{spec} {k}: got {a}, want {b}"
        a = subprocess.run(est + ["-q", "-", spec], input="\n".join(keys), capture_output=True, text=True)
        b = subprocess.run([POSTMAP, "-c", conf, "-q", "-", spec], input="\n".join(keys),
                           capture_output=True, text=True)
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
