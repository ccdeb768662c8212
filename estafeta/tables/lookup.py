"""Which keys a lookup tries, in which order: Postfix's table semantics, as pure functions.

Owns the query-pattern sequences documented per table in Postfix's manual pages;
callers (cleanup, smtpd restrictions, trivial-rewrite) build the keys here and ask
their tables with `first_match`. No IO beyond the table lookups themselves.

  canonical(5), virtual(5)   user+ext@domain, user@domain, user+ext, user, @domain
                             (the bare user forms only for local domains: $myorigin,
                             $mydestination, $inet_interfaces, $proxy_interfaces)
  access(5) addresses        user+ext@domain, user@domain, domain (and its parents),
                             user+ext@, user@
  access(5) hosts            domain.tld then parents: "b.tld", "tld" when the table is
                             in parent_domain_matches_subdomains, else ".b.tld", ".tld"
  access(5) IPv4             1.2.3.4, 1.2.3, 1.2, 1 (Sendmail-style prefixes: "192.168.119")
  access(5) IPv6             the compressed form, then dropping the last ":pair" each time
  transport(5)               user+ext@domain, user@domain, domain (and parents), *

Pattern tables (regexp, pcre, cidr) see only the whole string, never the partial
keys: Postfix applies each pattern "to the entire input string" (regexp_table(5)).
Keys are lowercased (Postfix folds keys for indexed and SQL tables). The address
extension is split at the first recipient_delimiter character; as in Postfix,
with '-' as a delimiter "owner-x" and "x-request" are never split.
Each key is sent to every table before the next key is tried (canonical(5) TABLE
SEARCH ORDER). A TableTempError from any table propagates: the caller defers.
Next: tables/__init__.py (Table, TableList), policy/ (the access verdicts).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from . import Table

PATTERN_TYPES = ("regexp", "pcre", "cidr")


def split_address(address: str) -> tuple[str, str | None]:
    """'user@domain' -> ('user', 'domain'); 'user' -> ('user', None). The last '@' splits."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, None)


def split_extension(local: str, delimiters: str) -> tuple[str, str | None]:
    """('user+ext', '+') -> ('user', 'ext'); no delimiter -> (local, None)."""
    if not delimiters or not local:
        return local, None
    lower = local.lower()
    if "-" in delimiters and (lower.startswith("owner-") or lower.endswith("-request")):
        return local, None
    cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
    if cut < 0:
        return local, None
    return local[:cut], local[cut + 1:]


def parent_domains(domain: str, parent_matches_subdomains: bool) -> list[str]:
    """domain.tld and what matches it as a parent: 'a.b.c' -> a.b.c, b.c, c (or .b.c, .c)."""
    domain = domain.lower().rstrip(".")
    labels = domain.split(".")
    keys = [domain]
    for i in range(1, len(labels)):
        parent = ".".join(labels[i:])
        keys.append(parent if parent_matches_subdomains else "." + parent)
    return keys


def rewrite_keys(address: str, delimiters: str = "", local_domain: bool = False) -> list[str]:
    """canonical(5) / virtual(5) query patterns for one address."""
    address = address.lower()
    local, domain = split_address(address)
    base, ext = split_extension(local, delimiters)
    keys: list[str] = []
    if domain is not None:
        if ext is not None:
            keys.append(f"{local}@{domain}")
        keys.append(f"{base}@{domain}")
    if domain is None or local_domain:
        if ext is not None:
            keys.append(local)
        keys.append(base)
    if domain is not None:
        keys.append(f"@{domain}")
    return _unique(keys)


def access_address_keys(address: str, delimiters: str = "", parent_matches_subdomains: bool = True,
                        null_key: str = "<>") -> list[str]:
    """access(5) EMAIL ADDRESS PATTERNS (and EMAIL ADDRESS EXTENSION) for one address."""
    if not address:
        return [null_key]
    address = address.lower()
    local, domain = split_address(address)
    base, ext = split_extension(local, delimiters)
    keys: list[str] = []
    if domain is None:
        return _unique(([f"{local}@"] if ext is not None else []) + [f"{base}@"])
    if ext is not None:
        keys.append(f"{local}@{domain}")
    keys.append(f"{base}@{domain}")
    if domain:
        keys += parent_domains(domain, parent_matches_subdomains)
    if ext is not None:
        keys.append(f"{local}@")
    keys.append(f"{base}@")
    return _unique(keys)


def ip_keys(address: str) -> list[str]:
    """access(5) network patterns for a client address: '1.2.3.4' -> 1.2.3.4, 1.2.3, 1.2, 1."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return []
    if ip.version == 4:
        octets = str(ip).split(".")
        return [".".join(octets[:n]) for n in range(4, 0, -1)]
    text = ip.compressed
    parts = text.split(":")
    keys = [text]
    for n in range(len(parts) - 1, 0, -1):
        prefix = ":".join(parts[:n])
        if prefix and not prefix.endswith(":"):
            keys.append(prefix)
    return _unique(keys)


def client_keys(hostname: str | None, address: str, parent_matches_subdomains: bool = True) -> list[str]:
    """check_client_access: the client's name (and parents), then its address and networks."""
    keys = parent_domains(hostname, parent_matches_subdomains) if hostname and hostname != "unknown" else []
    return _unique(keys + ip_keys(address))


def transport_keys(address: str, delimiters: str = "", parent_matches_subdomains: bool = True) -> list[str]:
    """transport(5) TABLE SEARCH ORDER; the null address is looked up by the caller as
    $empty_address_recipient@$myhostname first."""
    address = address.lower()
    local, domain = split_address(address)
    base, ext = split_extension(local, delimiters)
    keys: list[str] = []
    if domain is not None:
        if ext is not None:
            keys.append(f"{local}@{domain}")
        keys.append(f"{base}@{domain}")
        keys += parent_domains(domain, parent_matches_subdomains)
    keys.append("*")
    return _unique(keys)


def _unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def table_kind(table: Table) -> str:
    return table.name.partition(":")[0]


def first_match(tables: Sequence[Table], keys: Sequence[str], full: str | None = None) -> tuple[str, str] | None:
    """(key, value) of the first key any table knows, trying each key in every table first.

    Pattern tables are asked once, with `full` (the whole input string; default the
    first key), at the position of the first key.
    """
    if not keys:
        return None
    whole = full if full is not None else keys[0]
    for i, key in enumerate(keys):
        for t in tables:
            if table_kind(t) in PATTERN_TYPES:
                if i != 0:
                    continue
                value = t.lookup(whole)
                if value is not None:
                    return whole, value
                continue
            value = t.lookup(key)
            if value is not None:
                return key, value
    return None
