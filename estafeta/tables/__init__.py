"""Lookup tables behind one interface, named "type:name" as in Postfix's dict layer.

`Table.lookup(key) -> str | None`: None means "not found"; a backend that cannot
answer raises TableTempError so the caller defers (4xx) and never takes the key
for absent. This module holds the registry and the simple in-memory kinds
(static, inline, texthash); the indexed, regexp and database kinds arrive with the
tables issue and register here the same way.

`proxy:TYPE:NAME` (Postfix's proxymap(8) clients) is TYPE:NAME opened in the process
that asks: estafeta has no proxymap daemon, every process opens its own tables. What
proxy: still brings is Postfix's approval rule, checked on main.cf by `estafeta
check` (config/table_check.py): a proxy: table must be listed in proxy_read_maps.
Read only: no estafeta table is written, so proxy_write_maps has nothing to approve.
Next: HACKING.md "add a table type".
"""
from __future__ import annotations

import grp
import os
import pwd
from typing import Callable, Protocol

from ..core.errors import ConfigError, TempFail


class TableTempError(TempFail):
    pass


class Table(Protocol):
    name: str

    def lookup(self, key: str) -> str | None: ...


class StaticTable:
    def __init__(self, name: str) -> None:
        self.name = f"static:{name}"
        self.value = name.strip("{} ")

    def lookup(self, key: str) -> str | None:
        return self.value


def _parse_pairs(lines: list[tuple[int, str]], source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in lines:
        parts = line.split(None, 1)
        if len(parts) == 1:
            out[parts[0].lower()] = ""
        else:
            out[parts[0].lower()] = parts[1].strip()
    return out


class InlineTable:
    """inline:{ key=value, { key = text with spaces } }"""

    def __init__(self, name: str) -> None:
        self.name = f"inline:{name}"
        body = name.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise ConfigError(self.name, 0, "inline table must be enclosed in {}")
        self.data: dict[str, str] = {}
        for item in _split_inline(body[1:-1]):
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(self.name, 0, f"inline table entry {item!r} needs key=value")
            self.data[k.strip().lower()] = v.strip()

    def lookup(self, key: str) -> str | None:
        return self.data.get(key.lower())


def _split_inline(body: str) -> list[str]:
    """Items split on commas/whitespace; a { ... } group is one item (Postfix rule)."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                items.append("".join(cur)); cur = []
                continue
        if depth == 0 and (ch == "," or ch.isspace()):
            if cur:
                items.append("".join(cur)); cur = []
            continue
        cur.append(ch)
    if cur:
        items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


class TextHashTable:
    """texthash:/path: a postmap-style source file read into memory, reread on change."""

    def __init__(self, path: str) -> None:
        self.name = f"texthash:{path}"
        self.path = path
        self.mtime = -1.0
        self.data: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(self.path, 0, "table file not found") from None
        except OSError as e:
            raise TableTempError(f"{self.name}: {e}") from e
        logical: list[tuple[int, str]] = []
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if raw[0].isspace() and logical:
                ln, prev = logical[-1]
                logical[-1] = (ln, prev + raw.rstrip())   # as postmap: indentation kept
            elif raw[0].isspace():
                raise ConfigError(self.path, n, "continuation line before any entry")
            else:
                logical.append((n, raw.strip()))
        self.data = _parse_pairs(logical, self.path)
        self.mtime = st.st_mtime

    def lookup(self, key: str) -> str | None:
        try:
            if os.stat(self.path).st_mtime != self.mtime:
                self._load()
        except OSError as e:
            raise TableTempError(f"{self.name}: {e}") from e
        except ConfigError as e:
            # Edited into a bad state (or removed after the stat) while running: this
            # lookup cannot answer, so the caller defers. ConfigError is for load time.
            raise TableTempError(f"{self.name}: {e}") from e
        return self.data.get(key.lower())


class UnixTable:
    """unix:passwd.byname (and unix:group.byname): the system's users, as Postfix."""

    def __init__(self, name: str) -> None:
        if name not in ("passwd.byname", "group.byname"):
            raise ConfigError(f"unix:{name}", 0, "unix tables are passwd.byname and group.byname")
        self.name = f"unix:{name}"
        self.kind = name

    def lookup(self, key: str) -> str | None:
        try:
            if self.kind == "passwd.byname":
                p = pwd.getpwnam(key)
                return f"{p.pw_name}:x:{p.pw_uid}:{p.pw_gid}:{p.pw_gecos}:{p.pw_dir}:{p.pw_shell}"
            g = grp.getgrnam(key)
            return f"{g.gr_name}:x:{g.gr_gid}:{','.join(g.gr_mem)}"
        except KeyError:
            return None


REGISTRY: dict[str, Callable[[str], Table]] = {
    "unix": UnixTable,
    "static": StaticTable,
    "inline": InlineTable,
    "texthash": TextHashTable,
}


def open_table(spec: str) -> Table:
    kind, sep, name = spec.partition(":")
    if not sep:
        raise ConfigError(spec, 0, "table must be written type:name")
    factory = REGISTRY.get(kind)
    if factory is None:
        raise ConfigError(spec, 0, f"unsupported table type {kind!r} (supported: {', '.join(sorted(REGISTRY))})")
    return factory(name)


PROXY = "proxy:"


def open_proxied(name: str) -> Table:
    """proxy:TYPE:NAME -> the table TYPE:NAME itself, opened here (no proxymap daemon).

    The table keeps its own name ("hash:/etc/x"): lookup order (pattern tables are
    asked once, lookup.PATTERN_TYPES) and every other decision by type see the real
    type, as Postfix's proxy client takes the flags of the table behind it.
    proxy:proxy:... is refused: Postfix's proxymap strips repeated prefixes, but
    nesting means nothing and is most likely a typo (a doubled $name expansion)."""
    spec = PROXY + name
    if name.startswith(PROXY):
        raise ConfigError(spec, 0, "nested proxy: table: write proxy:type:name, with one proxy: prefix")
    if ":" not in name:
        raise ConfigError(spec, 0, "proxy: table must be written proxy:type:name")
    return open_table(name)


def proxied_name(spec: str) -> str | None:
    """'proxy:hash:/x' -> 'hash:/x' (every leading proxy: stripped, as proxymap does);
    None for a spec that is not a proxy: table."""
    if not spec.startswith(PROXY):
        return None
    while spec.startswith(PROXY):
        spec = spec[len(PROXY):]
    return spec


def proxy_read_approved(proxy_read_maps: str) -> frozenset[str]:
    """The tables an expanded proxy_read_maps approves, as Postfix's proxymap reads
    it: only its proxy:TYPE:NAME items count (the rest of "$smtpd_client_restrictions"
    and friends is ignored), named without the proxy: prefix."""
    out = set()
    for item in split_table_list(proxy_read_maps):
        inner = proxied_name(item)
        if inner is not None and ":" in inner:
            out.add(inner)
    return frozenset(out)


def unapproved_proxy_reads(value: str, approved: frozenset[str]) -> list[str]:
    """Postfix's refusal, one line per proxy: item of `value` (a table list or a
    restriction list) not approved by proxy_read_maps. proxymap(8) logs the two
    warnings joined here; its client then dies with "proxymap service is not
    configured for table"."""
    out = []
    for item in split_table_list(value):
        inner = proxied_name(item)
        if inner is None or ":" not in inner or inner in approved:
            continue
        out.append(f'request for unapproved table: "{inner}"; to approve this table for read-only access, '
                   f"list {PROXY}{inner} in main.cf:proxy_read_maps")
    return list(dict.fromkeys(out))


def split_table_list(value: str) -> list[str]:
    """'texthash:/a, inline:{ a=b, c=d }' -> specs; commas inside braces stay."""
    out, cur, depth = [], [], 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if cur:
                out.append("".join(cur)); cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


class TableList:
    """Several tables searched in order (as Postfix does for `x_maps = a, b`)."""

    def __init__(self, value: str) -> None:
        self.tables = [open_table(s) for s in split_table_list(value)]

    def __bool__(self) -> bool:
        return bool(self.tables)

    def lookup(self, key: str) -> str | None:
        for t in self.tables:
            v = t.lookup(key)
            if v is not None:
                return v
        return None


from .hash import HashTable  # noqa: E402  (imports TableTempError from above)
from .cidr import CidrTable  # noqa: E402
from .patterns import PcreTable, RegexpTable  # noqa: E402
from .sql import PgsqlTable, SqliteTable  # noqa: E402

REGISTRY["hash"] = HashTable
REGISTRY["regexp"] = RegexpTable
REGISTRY["pcre"] = PcreTable
REGISTRY["cidr"] = CidrTable
REGISTRY["sqlite"] = SqliteTable
REGISTRY["pgsql"] = PgsqlTable
REGISTRY["proxy"] = open_proxied
