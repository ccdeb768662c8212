"""sqlite: tables and the query/result templates shared with pgsql:."""
from __future__ import annotations

import sqlite3

import pytest

from estafeta.core.errors import ConfigError
from estafeta.tables import TableTempError, open_table
from estafeta.tables.sql import Suppressed, _pg_hosts, expand_query, format_result


def q(s: str) -> str:
    return s.replace("'", "''")


@pytest.mark.parametrize("template,key,want", [
    ("%s", "o'b@x.org", "o''b@x.org"),
    ("%u|%d", "u@mail.example.com", "u|mail.example.com"),
    ("%1.%2.%3", "u@mail.example.com", "com.example.mail"),
    ("%U %D %S %%", "u@d", "u d u@d %"),
    ("%u", "bare", "bare"),
])
def test_query_expansion(template, key, want) -> None:
    assert expand_query(template, key, q) == want


@pytest.mark.parametrize("template,key", [("%d", "bare"), ("%u", "@domain"), ("%4", "u@a.b.c"), ("%1", "bare")])
def test_query_suppressed(template, key) -> None:
    with pytest.raises(Suppressed):
        expand_query(template, key, q)


def test_result_format() -> None:
    assert format_result("smtp:[%d] %u %s %%", "a@b", "k@x") == "smtp:[b] a a@b %"
    assert format_result("%d", "unqualified", "k") is None
    assert format_result("%1", "v", "k@x.org") == "org"


def test_pg_hosts() -> None:
    assert _pg_hosts("inet:db1:5433 db2 unix:/run/pg postgresql://u@h/db") == [
        {"host": "db1", "port": "5433"}, {"host": "db2"}, {"host": "/run/pg"}, {"conninfo": "postgresql://u@h/db"}]


@pytest.fixture
def sqlite_cf(tmp_path):
    db = tmp_path / "v.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE v (k TEXT, dest TEXT)")
        c.executemany("INSERT INTO v VALUES (?, ?)", [("a@x.org", "one"), ("m@x.org", "1"), ("m@x.org", "2")])
    cf = tmp_path / "v.cf"
    cf.write_text(f"dbpath = {db}\nquery = SELECT dest\n  FROM v WHERE k = '%s'\n")
    return cf, db


def test_sqlite_lookups_and_limits(sqlite_cf) -> None:
    cf, db = sqlite_cf
    t = open_table(f"sqlite:{cf}")
    assert [t.lookup(k) for k in ("A@X.ORG", "m@x.org", "x' OR '1'='1")] == ["one", "1,2", None]
    cf.write_text(f"dbpath = {db}\nquery = SELECT dest FROM v WHERE k = '%s'\nexpansion_limit = 1\n"
                  "domain = y.org\n")
    t2 = open_table(f"sqlite:{cf}")
    assert t2.lookup("a@x.org") is None                      # domain filter: no query
    cf.write_text(f"dbpath = {db}\nquery = SELECT dest FROM v WHERE k = '%s'\nexpansion_limit = 1\n")
    with pytest.raises(TableTempError, match="expansion_limit"):
        open_table(f"sqlite:{cf}").lookup("m@x.org")


def test_sqlite_errors(tmp_path, sqlite_cf) -> None:
    cf, db = sqlite_cf
    cf.write_text(f"dbpath = {db}\nquery = SELECT dest FROM nosuch WHERE k = '%s'\n")
    with pytest.raises(TableTempError, match="nosuch"):
        open_table(f"sqlite:{cf}").lookup("a@x.org")
    cf.write_text(f"dbpath = {db}\nquery = SELECT '%z'\n")
    with pytest.raises(ConfigError, match="invalid expansion %z"):
        open_table(f"sqlite:{cf}")
    cf.write_text("dbpath\n")
    with pytest.raises(ConfigError) as e:
        open_table(f"sqlite:{cf}")
    assert e.value.line == 1
