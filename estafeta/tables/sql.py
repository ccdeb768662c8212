"""sqlite: and pgsql: tables — a query per lookup, configured by a main.cf-style file.

Owns what sqlite_table(5) and pgsql_table(5) share (query template expansion,
the domain= filter, result_format, expansion_limit, the legacy select_field/
table/where_field/additional_conditions form) and the two backends:

  sqlite:/etc/estafeta/virtual.cf      dbpath = /var/lib/mail.sqlite
                                       query = SELECT dest FROM virtual WHERE addr = '%s'
  pgsql:/etc/estafeta/virtual.cf       hosts = inet:127.0.0.1:5432  (or unix:/dir, host[:port],
                                       a postgresql:// URI); user, password, dbname, query...

Query expansion: %% a '%'; %s the key; %u its local part (the whole key when it
has no '@'); %d its domain; %1..%9 domain labels from the right (%1 = tld);
upper-case %S %U %D are the same in a query. A key that lacks what the template
needs (%d or %1-%9 of an unqualified key, %u of "@domain") is not looked up:
"not found", no query. Values are SQL-quoted for a '...' string ('' doubled;
PostgreSQL's own escaping for pgsql). Keys are lowercased first, as Postfix does.
Each non-NULL, non-empty column of each row (sqlite: the first column only, as
Postfix) is one result element, formatted by
result_format (%s value, %u/%d its parts, %S/%U/%D/%1-9 the key's) and joined by
",". More elements than a non-zero expansion_limit, a database that cannot be
reached and a failed query all raise TableTempError: the caller defers, never
treats the key as absent. The configuration file is reread when it changes.
Trust boundary: the key comes from the network (quoted, never trusted); the
configuration file and database belong to the administrator.
Next: patterns.py, cidr.py; tables/__init__.py for the registry.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Callable

from ..core.errors import ConfigError
from . import TableTempError
from .source import FileWatch, read_parameters

_PCT = re.compile(r"%(.)", re.DOTALL)


class Suppressed(Exception):
    """The key lacks a part the template needs: no query, no result."""


def key_parts(key: str) -> tuple[str, str | None]:
    local, at, domain = key.rpartition("@")
    return (local, domain) if at else (key, None)


def _key_part(code: str, key: str, quote: Callable[[str], str]) -> str:
    local, domain = key_parts(key)
    c = code.lower()
    if c == "s":
        return quote(key)
    if c == "u":
        if domain is not None and not local:
            raise Suppressed
        return quote(local)
    if c == "d":
        if not domain:
            raise Suppressed
        return quote(domain)
    if code in "123456789":
        labels = domain.split(".") if domain else []
        n = int(code)
        if n > len(labels):
            raise Suppressed
        return quote(labels[-n])
    raise ValueError(code)


def expand_query(template: str, key: str, quote: Callable[[str], str]) -> str:
    """The query for `key`; raises Suppressed when the key cannot fill it."""
    def one(m: re.Match[str]) -> str:
        return "%" if m.group(1) == "%" else _key_part(m.group(1), key, quote)
    return _PCT.sub(one, template)


def format_result(template: str, value: str, key: str) -> str | None:
    """result_format for one value; None when the value lacks a needed part (skipped)."""
    vlocal, vdomain = key_parts(value)
    out: list[str] = []
    pos = 0
    for m in _PCT.finditer(template):
        out.append(template[pos:m.start()])
        pos = m.end()
        c = m.group(1)
        if c == "%":
            out.append("%")
        elif c == "s":
            out.append(value)
        elif c == "u":
            if vdomain is not None and not vlocal:
                return None
            out.append(vlocal)
        elif c == "d":
            if not vdomain:
                return None
            out.append(vdomain)
        else:
            out.append(_key_part(c, key, lambda s: s))
    out.append(template[pos:])
    return "".join(out)


def _check_template(path: str, param: str, template: str, allowed: str) -> None:
    for m in _PCT.finditer(template):
        if m.group(1) not in allowed:
            raise ConfigError(path, 0, f"{param}: invalid expansion %{m.group(1)} in {template!r}")


class SqlTable:
    """Shared parameters and the lookup procedure; backends supply `_run(query)`."""

    kind = ""
    ALL_COLUMNS = True          # pgsql: every column is a result; sqlite: the first only

    def __init__(self, path: str) -> None:
        self.name = f"{self.kind}:{path}"
        self.path = path
        self.watch = FileWatch(path)
        self._configure()

    def _configure(self) -> None:
        try:
            self.watch.read()
        except FileNotFoundError:
            raise ConfigError(self.path, 0, "table configuration file not found") from None
        p = read_parameters(self.path)
        self.params = p
        query = p.get("query", "")
        if not query:
            query = self._legacy_query(p)
        if not query:
            raise ConfigError(self.path, 0, "no query (set query = SELECT ... '%s')")
        _check_template(self.path, "query", query, "%sudSUD123456789")
        self.query = query
        self.result_format = p.get("result_format", p.get("result_filter", "%s")) or "%s"
        _check_template(self.path, "result_format", self.result_format, "%sudSUD123456789")
        try:
            self.limit = int(p.get("expansion_limit", "0") or "0")
        except ValueError:
            raise ConfigError(self.path, 0, f"expansion_limit: not a number: {p['expansion_limit']!r}") from None
        self.domains = [d for d in re.split(r"[\s,]+", p.get("domain", "")) if d]
        self._domain_tables: list[Any] = []
        self._domain_names: set[str] = set()
        from . import open_table
        for d in self.domains:
            if ":" in d:
                self._domain_tables.append(open_table(d))
            elif d.startswith("/"):
                with open(d, encoding="utf-8") as f:
                    self._domain_names.update(w.lower() for w in f.read().split() if not w.startswith("#"))
            else:
                self._domain_names.add(d.lower())

    def _legacy_query(self, p: dict[str, str]) -> str:
        if self.kind == "pgsql" and p.get("select_function"):
            return f"SELECT {p['select_function']}('%s')"
        if p.get("select_field") and p.get("table") and p.get("where_field"):
            extra = p.get("additional_conditions", "")
            return f"SELECT {p['select_field']} FROM {p['table']} WHERE {p['where_field']} = '%s' {extra}".strip()
        return ""

    def _domain_ok(self, key: str) -> bool:
        if not self.domains:
            return True
        local, domain = key_parts(key)
        if domain is None or not local:
            return False
        if domain in self._domain_names:
            return True
        return any(t.lookup(domain) is not None for t in self._domain_tables)

    def _quote(self, s: str) -> str:
        return s.replace("'", "''")

    def _run(self, query: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def lookup(self, key: str) -> str | None:
        try:
            if self.watch.changed():
                self._reconfigure()
        except (OSError, ConfigError) as e:
            raise TableTempError(f"{self.name}: {e}") from e
        key = key.lower()
        if not self._domain_ok(key):
            return None
        try:
            query = expand_query(self.query, key, self._quote)
            # A result_format that needs key parts the key lacks suppresses the query too.
            format_result(self.result_format, "x@x", key)
        except Suppressed:
            return None
        values: list[str] = []
        for row in self._run(query):
            for col in (row if self.ALL_COLUMNS else row[:1]):
                if col is None:
                    continue
                v = col.decode("utf-8", "surrogateescape") if isinstance(col, bytes) else str(col)
                if not v:
                    continue
                formatted = format_result(self.result_format, v, key)
                if formatted is None:
                    continue
                values.append(formatted)
                if self.limit and len(values) > self.limit:
                    raise TableTempError(f"{self.name}: key {key!r}: more than expansion_limit="
                                         f"{self.limit} results")
        return ",".join(values) if values else None

    def _reconfigure(self) -> None:
        self._configure()


class SqliteTable(SqlTable):
    """sqlite:/path/to/table.cf (sqlite_table(5))."""

    kind = "sqlite"
    ALL_COLUMNS = False

    def _configure(self) -> None:
        super()._configure()
        self.dbpath = self.params.get("dbpath", "")
        if not self.dbpath:
            raise ConfigError(self.path, 0, "dbpath is not set")
        self._db: sqlite3.Connection | None = None

    def _run(self, query: str) -> list[tuple[Any, ...]]:
        try:
            if self._db is None:
                self._db = sqlite3.connect(f"file:{self.dbpath}?mode=ro", uri=True, check_same_thread=False)
                self._db.text_factory = bytes
            return self._db.execute(query).fetchall()
        except sqlite3.Error as e:
            if self._db is not None:
                self._db.close()
                self._db = None
            raise TableTempError(f"{self.name}: {self.dbpath}: {e}") from e


def _pg_hosts(spec: str) -> list[dict[str, str]]:
    """pgsql_table(5) hosts: postgresql:// URIs, unix:/dir, inet:host[:port], host[:port]."""
    out: list[dict[str, str]] = []
    for h in spec.split():
        h = h.strip(",")
        if not h:
            continue
        if h.startswith(("postgresql://", "postgres://")):
            out.append({"conninfo": h})
        elif h.startswith("unix:"):
            out.append({"host": h[5:]})
        else:
            if h.startswith("inet:"):
                h = h[5:]
            host, colon, port = h.rpartition(":") if h.count(":") == 1 else (h, "", "")
            out.append({"host": host, "port": port} if colon else {"host": h})
    return out


class PgsqlTable(SqlTable):
    """pgsql:/path/to/table.cf (pgsql_table(5)), through psycopg 3.

    Hosts are tried in the order written (Postfix picks at random), the first that
    answers is kept until it fails. A failure with a kept connection is retried once
    on a fresh one (the server may have restarted); then TableTempError.
    """

    kind = "pgsql"
    CONNECT_TIMEOUT = 10

    def _configure(self) -> None:
        super()._configure()
        self.hosts = _pg_hosts(self.params.get("hosts", "localhost"))
        if not self.hosts:
            raise ConfigError(self.path, 0, "hosts is empty")
        self._conn: Any = None

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise TableTempError(f"{self.name}: the psycopg package is not installed"
                                 " (pip install estafeta[pgsql])") from None
        errors = []
        for h in self.hosts:
            kw: dict[str, Any] = {"connect_timeout": self.CONNECT_TIMEOUT, "autocommit": True}
            conninfo = h.get("conninfo", "")
            if not conninfo:
                kw.update({k: v for k, v in h.items() if v})
                for param in ("user", "password", "dbname"):
                    if self.params.get(param):
                        kw[param] = self.params[param]
            try:
                return psycopg.connect(conninfo, **kw)
            except psycopg.Error as e:
                errors.append(f"{h.get('conninfo') or h.get('host')}: {str(e).strip()}")
        raise TableTempError(f"{self.name}: cannot connect: {'; '.join(errors)}")

    def _quote(self, s: str) -> str:
        from psycopg import pq
        assert self._conn is not None
        raw = pq.Escaping(self._conn.pgconn).escape_string(s.encode("utf-8", "surrogateescape"))
        return bytes(raw).decode("utf-8", "surrogateescape")

    def lookup(self, key: str) -> str | None:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()        # quoting needs the connection's settings
        return super().lookup(key)

    def _run(self, query: str) -> list[tuple[Any, ...]]:
        import psycopg
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                with self._conn.cursor() as cur:
                    cur.execute(query.encode("utf-8", "surrogateescape"))
                    res = cur.pgresult
                    if res is None or not cur.description:
                        return []
                    # libpq's text form of each value, as Postfix sees it ("t", not True)
                    return [tuple(res.get_value(r, c) for c in range(res.nfields)) for r in range(res.ntuples)]
            except psycopg.OperationalError as e:
                self._drop()
                if attempt == 2:
                    raise TableTempError(f"{self.name}: {str(e).strip()}") from e
            except psycopg.Error as e:
                raise TableTempError(f"{self.name}: query failed: {str(e).strip()}") from e
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def _reconfigure(self) -> None:
        self._drop()
        self._configure()
        self._conn = self._connect()
