"""`estafeta check` beyond main.cf's own syntax: the tables and transports the daemons use.

Owns what `estafeta check` (and so `start` and `reload`) learns by opening, once each,
every lookup table a daemon opens later, and by comparing the transports main.cf
names with master.cf's services. Problems carry the main.cf (or master.cf -o) line
that names the table, then the table's own error, which names its file and line:

    /etc/estafeta/main.cf, line 12: header_checks: /etc/estafeta/hc, line 3: endif without matching if

Fatal (an error: check exits 78, EX_CONFIG; start and reload refuse) when the daemon would not
start: a proxy:type:name that main.cf's proxy_read_maps does not list (Postfix's
"unapproved table"), the routing tables (core/resolve.py, checked by the caller as before), the
tables cleanup opens at start in smtpd, pickup and qmgr (canonical, virtual alias,
masquerade_exceptions tables, header/body checks, bcc maps) and virtual_mailbox_maps
(smtpd, virtual). A warning where the daemon degrades as Postfix's does: the local
agent's tables (alias_maps and the *_maps it opens on first use: that mail defers;
checked only when a transport in use reaches a `local` service), smtpd's access
tables and EHLO keyword maps (Postfix's "surrogate" tables: 451 where they are
consulted), authorized_submit_users, a pgsql: server that does not answer (probed
concurrently, PROBE_SECONDS in all: a dead server never holds up a start), and a
transport with no private unix service in master.cf ("mail transport unavailable").
master.cf `-o` overrides of these parameters are checked for the services that use them.
Trust boundary: the files belong to the administrator; nothing is executed, only
parsed (and pgsql servers connected to).
Next: cli/main.py cmd_check (the caller), tables/ (the parsers and their errors).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.resolve import DomainList, Resolver
from ..policy import restrictions as P
from ..tables import InlineTable, StaticTable, Table, TableList, TableTempError, TextHashTable, open_table, \
    proxy_read_approved, split_table_list, unapproved_proxy_reads
from ..tables.cidr import CidrTable
from ..tables.hash import HashTable
from ..tables.patterns import PatternTable
from ..tables.source import logical_lines
from ..tables.sql import PgsqlTable
from .main_cf import MainConfig
from .master_cf import ServiceEntry

PROBE_SECONDS = 3.0             # all pgsql probes together (libpq's connect_timeout floor is 2)

# Opened by core/resolve.py's Resolver (smtpd, qmgr, cleanup, local, sendmail): the
# caller runs Resolver(cfg) first, as before, and its errors stay fatal.
ROUTING = ("mydestination", "virtual_mailbox_domains", "virtual_alias_domains", "relocated_maps",
           "relay_domains", "local_recipient_maps", "transport_maps")
# Table-list parameters no daemon opens: alias_database is newaliases' (it reads the
# source files and writes the tables); mynetworks and local_header_rewrite_clients
# take no type:table here (their table items are ignored by smtpd and cleanup).
# proxy_read_maps and proxy_write_maps name tables to approve, not to open.
NOT_OPENED = ("alias_database", "mynetworks", "local_header_rewrite_clients", "proxy_read_maps", "proxy_write_maps")
TRANSPORT_PARAMS = ("default_transport", "relay_transport", "local_transport", "virtual_transport",
                    "mailbox_transport", "fallback_transport")
CLEANUP_USERS = frozenset({"smtpd", "pickup", "qmgr"})


@dataclass(frozen=True, slots=True)
class Group:
    """Parameters opened alike. kind: "tables" (a table list), "items" (a list whose
    type:table items are tables), "restrictions" (smtpd restriction lists), "submit"
    (authorized_submit_users: names, !name, /file/name, type:table)."""

    params: tuple[str, ...]
    kind: str
    fatal: bool
    commands: frozenset[str]        # master.cf commands whose processes open them


GROUPS = (
    Group(("canonical_maps", "sender_canonical_maps", "recipient_canonical_maps", "virtual_alias_maps",
           "header_checks", "body_checks", "sender_bcc_maps", "recipient_bcc_maps"), "tables", True, CLEANUP_USERS),
    Group(("masquerade_exceptions",), "items", True, CLEANUP_USERS),
    Group(("virtual_mailbox_maps",), "tables", True, frozenset({"smtpd", "virtual"})),
    Group(("alias_maps", "mailbox_transport_maps", "fallback_transport_maps", "mailbox_command_maps"),
          "tables", False, frozenset({"local"})),
    Group(("smtpd_discard_ehlo_keyword_address_maps",), "tables", False, frozenset({"smtpd"})),
    Group(tuple(f"smtpd_{s}_restrictions" for s in P.STAGES), "restrictions", False, frozenset({"smtpd"})),
    Group(("authorized_submit_users",), "submit", False, frozenset({"pickup"})),
)
LOCAL_GROUP = GROUPS[3]


@dataclass
class Report:
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Opener:
    """open_table once per spec; remembers the table or the error, and who named it first."""

    def __init__(self) -> None:
        self.done: dict[str, Table | Exception] = {}

    def add(self, table: Table) -> None:
        self.done.setdefault(table.name, table)

    def seen(self, spec: str) -> bool:
        return spec in self.done

    def __call__(self, spec: str) -> Table:
        got = self.done.get(spec)
        if got is None:
            try:
                got = open_table(spec)
            except (ConfigError, TableTempError, OSError) as e:
                got = e
            except Exception as e:          # a parser's unexpected failure: still a finding
                got = ConfigError(spec, 0, f"cannot open: {type(e).__name__}: {e}")
            self.done[spec] = got
        if isinstance(got, Exception):
            raise got
        return got

    def tables(self) -> list[Table]:
        return [t for t in self.done.values() if not isinstance(t, Exception)]


class _NoSite:
    """Policy wants a Site for evaluating; compiling asks it nothing."""

    def address_class(self, domain: str) -> str:
        return P.DEFAULT

    def unlisted(self, address: str, sender: bool) -> tuple[int, str, str] | None:
        return None


def where(cfg: MainConfig, name: str) -> tuple[str, int]:
    s = cfg.setting(name)
    return (s.path, s.line) if s else (cfg.path, 0)


def _prefix(path: str, line: int) -> str:
    return f"{path}, line {line}" if line else path


def check_tables_and_transports(cfg: MainConfig, entries: list[ServiceEntry], master_path: str,
                                resolver: Resolver | None = None) -> Report:
    """Open every table the daemons open (once each) and compare transports with
    master.cf. `resolver`: the one the caller built (its tables are not reopened)."""
    rep = Report()
    check_proxy_reads(cfg, entries, master_path, rep)
    opener = _Opener()
    if resolver is not None:
        for t in _resolver_tables(resolver):
            opener.add(t)
    used, unknown = transports_in_use(cfg, opener)
    local_used = unknown or any(e.command == "local" and e.name in used for e in entries)
    for group in GROUPS:
        if group is LOCAL_GROUP and not local_used:
            continue            # no transport reaches the local agent: it opens nothing
        for name in group.params:
            _check_param(cfg, name, group, opener, rep, where(cfg, name))
    for e in entries:
        if not e.overrides:
            continue
        scfg = cfg.overrides(e.overrides, path=master_path, line=e.line)
        for group in GROUPS:
            if e.command not in group.commands or (group is LOCAL_GROUP and e.name not in used and not unknown):
                continue
            for name in group.params:
                try:
                    if scfg.get(name) == cfg.get(name):
                        continue
                    s = scfg.setting(name)
                    at = (s.path, s.line) if s and s.path == master_path else (master_path, e.line)
                    _check_param(scfg, name, group, opener, rep, at, f"service {e.name}: ")
                except ConfigError as err:     # an -o value that does not expand
                    rep.warnings.append(f"{err}")
    _check_transports(cfg, entries, master_path, opener, rep)
    for t in opener.tables():
        for w in getattr(t, "warnings", ()):
            rep.warnings.append(w)
    rep.warnings += probe_pgsql([t for t in opener.tables() if isinstance(t, PgsqlTable)])
    return rep


def _resolver_tables(r: Resolver) -> Iterable[Table]:
    for v in vars(r).values():
        if isinstance(v, (DomainList, TableList)):
            yield from v.tables


def _check_param(cfg: MainConfig, name: str, group: Group, opener: _Opener, rep: Report,
                 at: tuple[str, int], who: str = "") -> None:
    value = cfg.get(name)
    if not value.strip():
        return

    def problem(text: str, fatal: bool) -> None:
        msg = f"{who}{name}: {text}"
        if fatal:
            rep.errors.append(ConfigError(at[0], at[1], msg))
        else:
            rep.warnings.append(f"{_prefix(*at)}: {msg}")

    if group.kind == "restrictions":
        reported = set(opener.done)
        policy = P.Policy({name[len("smtpd_"):-len("_restrictions")]: value}, _NoSite(), opener)
        for p in policy.problems:
            spec = p.partition(" is unavailable: ")[0]
            if spec in reported and spec != p:
                continue                     # its error was reported where first named
            problem(p + ("; its lookups answer 451 4.3.0" if spec != p
                         else "; smtpd answers 451 4.3.5 when it gets there"), False)
        return
    for item in split_table_list(value):
        if group.kind in ("items", "submit"):
            item = item[1:] if group.kind == "submit" and item.startswith("!") else item
            if group.kind == "submit" and item.startswith("/"):
                if not os.access(item, os.R_OK):
                    problem(f"cannot read {item}", group.fatal)
                continue
            if ":" not in item:
                continue
        if opener.seen(item):
            continue                         # checked (and reported) where first named
        try:
            opener(item)
        except Exception as e:
            problem(str(e), group.fatal)


# -- proxy: tables ---------------------------------------------------------------------------

# Not table lists: the approval lists themselves.
PROXY_LISTS = ("proxy_read_maps", "proxy_write_maps")


def check_proxy_reads(cfg: MainConfig, entries: list[ServiceEntry], master_path: str, rep: Report) -> None:
    """Postfix's proxymap(8) answers only for tables its main.cf approves: every
    proxy:type:name in any parameter (table lists, restriction lists, restriction
    classes; master.cf -o values too) must be listed in main.cf's proxy_read_maps.
    Fatal, as in Postfix, where the client process dies on the refusal. The approval
    set is main.cf's, not the service's: proxymap never sees a client's -o."""
    approved = proxy_read_approved(_value(cfg, "proxy_read_maps") or "")

    def scan(c: MainConfig, names: Iterable[str], at: Callable[[str], tuple[str, int]], who: str = "") -> None:
        for name in sorted(names):
            if name in PROXY_LISTS:
                continue
            value = _value(c, name)
            if value is None or "proxy:" not in value:
                continue
            for text in unapproved_proxy_reads(value, approved):
                path, line = at(name)
                rep.errors.append(ConfigError(path, line, f"{who}{name}: {text}"))

    scan(cfg, cfg.names(), lambda name: where(cfg, name))
    for e in entries:
        if e.overrides:
            try:
                scfg = cfg.overrides(e.overrides, path=master_path, line=e.line)
            except ConfigError:
                continue                     # reported by the master.cf check
            scan(scfg, [n for n in e.overrides if _value(scfg, n) != _value(cfg, n)],
                 lambda name: (master_path, e.line), f"service {e.name}: ")


def _value(cfg: MainConfig, name: str) -> str | None:
    """The expanded value, None when it does not expand (main.cf's check says why)."""
    try:
        return cfg.get(name)
    except (ConfigError, KeyError):
        return None


# -- transports ----------------------------------------------------------------------------

def transport_name(value: str) -> str:
    return value.strip().partition(":")[0].strip()


def table_entries(t: Table) -> list[tuple[str, str, int]] | None:
    """(value, file, line) of each entry of a table we can list; line 0 when unknown.
    None for a table that cannot be listed (SQL, unix:)."""
    if isinstance(t, (HashTable, TextHashTable)):
        try:
            with open(t.path, encoding="utf-8", errors="surrogateescape") as f:
                lines = logical_lines(f.read(), t.path)
            return [(parts[1] if len(parts) > 1 else "", t.path, n)
                    for n, text in lines for parts in [text.split(None, 1)]]
        except (OSError, ConfigError):
            pass            # no source next to the .db, or a bad one: the entries, no lines
        items = t.items() if isinstance(t, HashTable) else list(t.data.items())
        return [(v, t.path, 0) for _k, v in items]
    if isinstance(t, InlineTable):
        return [(v, t.name, 0) for v in t.data.values()]
    if isinstance(t, StaticTable):
        return [(t.value, t.name, 0)]
    if isinstance(t, (PatternTable, CidrTable)):
        watch = getattr(t, "watch", None)
        path = watch.path if watch is not None else t.name
        out = []
        for r in t.rules:
            if r.kind != "match":
                continue
            if isinstance(t, CidrTable):
                out.append((str(r.result), path, r.line))
            elif all(isinstance(p, bytes) for p in r.result):      # no $n substitution
                out.append((b"".join(r.result).decode("utf-8", "surrogateescape"), path, r.line))  # type: ignore[arg-type]
        return out
    return None


def transports_in_use(cfg: MainConfig, opener: _Opener) -> tuple[set[str], bool]:
    """Transport names main.cf and listable transport_maps name; True when a
    transport_maps table cannot be listed (any transport may be in use)."""
    used = {transport_name(cfg.get(p)) for p in TRANSPORT_PARAMS} - {""}
    unknown = False
    for spec in split_table_list(cfg.get("transport_maps")):
        try:
            entries = table_entries(opener(spec))
        except Exception:
            continue
        if entries is None:
            unknown = True
            continue
        used |= {transport_name(v) for v, _p, _n in entries} - {""}
    return used, unknown


def _check_transports(cfg: MainConfig, entries: list[ServiceEntry], master_path: str,
                      opener: _Opener, rep: Report) -> None:
    private = {e.name for e in entries if e.type == "unix" and e.private}
    public = {e.name for e in entries if e.type == "unix" and not e.private}

    def missing(t: str) -> str | None:
        if t in private:
            return None
        if t in public:
            return f"the {master_path} service {t} is not private (private = n): qmgr finds agents in private/"
        return f"no unix service named {t!r} in {master_path}"

    tail = "; mail routed there is deferred (mail transport unavailable)"
    for name in TRANSPORT_PARAMS:
        value = cfg.get(name)
        t = transport_name(value)
        why = missing(t) if t else None
        if why:
            path, line = where(cfg, name)
            setting = f"{name} = {value}" + ("" if cfg.setting(name) else " (the default)")
            rep.warnings.append(f"{_prefix(path, line)}: {setting}: {why}{tail}")
    tm_path, tm_line = where(cfg, "transport_maps")
    for spec in split_table_list(cfg.get("transport_maps")):
        try:
            listed = table_entries(opener(spec)) or []
        except Exception:
            continue
        for value, path, line in listed:
            t = transport_name(value)
            why = missing(t) if t and "$" not in value else None
            if why:
                rep.warnings.append(f"{_prefix(path, line)}: transport_maps ({_prefix(tm_path, tm_line)}) "
                                    f"entry {value.strip()!r}: {why}{tail}")


# -- pgsql -----------------------------------------------------------------------------------

def probe_pgsql(tables: list[PgsqlTable], budget: float = PROBE_SECONDS,
                connect: Callable[[PgsqlTable], None] | None = None) -> list[str]:
    """Connect to each pgsql table's server, all at once, for at most `budget` seconds
    in all; a warning for each that fails or has not answered by then. Daemon threads:
    one still waiting never delays the exit or the start that follows."""
    if not tables:
        return []
    results: dict[int, str | None] = {}

    def run(i: int, t: PgsqlTable) -> None:
        try:
            (connect or _connect)(t)
            results[i] = None
        except Exception as e:
            results[i] = " ".join(str(e).split())    # libpq's text spans lines

    threads = [threading.Thread(target=run, args=(i, t), daemon=True, name=f"check-{t.name}")
               for i, t in enumerate(tables)]
    deadline = time.monotonic() + budget
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    out = []
    for i, t in enumerate(tables):
        if i not in results:
            out.append(f"{t.path}: {t.name}: no answer from the server within {budget:g} s; "
                       "lookups will defer until it answers")
        elif results[i] is not None:
            out.append(f"{t.path}: {results[i]}; lookups will defer until it answers")
    return out


def _connect(t: PgsqlTable) -> None:
    t.CONNECT_TIMEOUT = 2                   # type: ignore[misc]  # libpq's floor; the budget bounds all
    conn = t._connect()
    conn.close()
