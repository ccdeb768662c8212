"""Address classes and routing (Postfix's trivial-rewrite "resolve" step, SPEC S4).

Given a recipient address, say which class its domain belongs to and which
transport:nexthop takes it, in Postfix's order: local (mydestination, and the
machine's own address literals), virtual alias (virtual_alias_domains: every
address there must have been rewritten by virtual_alias_maps in cleanup; one that
reaches routing is unknown, 5.1.1), virtual mailbox, relay, default.
relocated_maps (relocated(5)) comes first: a listed recipient is routed to the
error agent with "5.1.6 User has moved to NEW" (smtpd refuses it at RCPT already).

transport_maps (transport(5)) overrides the class rules. Keys, in order: the
address (user+ext@domain, then user@domain when recipient_delimiter is set), the
domain, its parents as ".parent" (or "parent" when parent_domain_matches_subdomains
names transport_maps), then "*". Values: "transport:nexthop"; ":nexthop" keeps the
class's transport; "transport:" (or "transport") takes the recipient domain as
nexthop; "" or ":" changes nothing. The nexthop keeps its case: for error: and
discard: it is text. A table that cannot answer routes the recipient to the
`retry` transport (the error agent deferring), so it waits for the table rather
than going wherever the class rules would send it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError
from ..tables import TableList, TableTempError, open_table, split_table_list
from ..tables.lookup import first_match, rewrite_keys

LOCAL, VIRTUAL, RELAY, DEFAULT = "local", "virtual", "relay", "default"
ALIAS = "alias"         # virtual_alias_domains


class DomainList:
    """A Postfix domain list: names, /file/name, and type:table entries."""

    def __init__(self, value: str, subdomains: bool = False) -> None:
        self.names: set[str] = set()
        self.tables = []
        self.subdomains = subdomains
        for item in split_table_list(value):
            if item.startswith("/"):
                # Sendmail's local-host-names works as such a file (seed 5.3.2). As in
                # Postfix, a file that cannot be read is an error, never a domain name.
                if not os.path.isfile(item):
                    raise ConfigError(item, 0, "cannot read domain list file")
                with open(item, encoding="utf-8") as f:
                    for line in f:
                        line = line.split("#", 1)[0].strip()
                        if line:
                            self.names.update(x.lower() for x in line.replace(",", " ").split())
            elif ":" in item and not item.startswith("["):
                self.tables.append(open_table(item))
            else:
                self.names.add(item.lower().rstrip("."))

    def __contains__(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        if d in self.names or any(t.lookup(d) is not None for t in self.tables):
            return True
        if self.subdomains:
            parts = d.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[i:])
                if parent in self.names or "." + parent in self.names:
                    return True
        return False


@dataclass(frozen=True, slots=True)
class Route:
    address_class: str
    transport: str
    nexthop: str


def apply_transport(route: Route, value: str, domain: str) -> Route:
    """A transport_maps result over the class's route (transport(5) RESULT FORMAT)."""
    value = value.strip()
    t, colon, nh = value.partition(":")
    t, nh = t.strip(), nh.strip()
    if not t and not nh:
        return route                                        # "" or ":": no change
    if not t:
        return Route(route.address_class, route.transport, nh)   # ":nexthop"
    return Route(route.address_class, t, nh or domain.lower())  # "t:nexthop", "t:", "t"


def _split_transport(value: str, default_nexthop: str) -> tuple[str, str]:
    t, _, nh = value.partition(":")
    return t, nh or default_nexthop


class Resolver:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.myhostname = cfg.get("myhostname").lower()
        self.mydestination = DomainList(cfg.get("mydestination"))
        self.virtual_mailbox_domains = DomainList(cfg.get("virtual_mailbox_domains"))
        self.virtual_alias_domains = DomainList(cfg.get("virtual_alias_domains"))
        self.relocated_maps = TableList(cfg.get("relocated_maps"))
        self.myorigin = cfg.get("myorigin").lower()
        self.relay_domains = DomainList(cfg.get("relay_domains"), subdomains=True)
        self.local_transport = cfg.get("local_transport")
        self.virtual_transport = cfg.get("virtual_transport")
        self.relay_transport = cfg.get("relay_transport")
        self.default_transport = cfg.get("default_transport")
        self.relayhost = cfg.get("relayhost")
        self.local_recipient_maps = TableList(cfg.get("local_recipient_maps"))
        self.transport_maps = TableList(cfg.get("transport_maps"))
        self.delimiter = cfg.get("recipient_delimiter")
        self.empty_address = f"{cfg.get('empty_address_recipient')}@{self.myhostname}"
        pdms = cfg.get_list("parent_domain_matches_subdomains")
        self.transport_parent_bare = "transport_maps" in pdms

    def address_class(self, domain: str) -> str:
        if not domain or domain in self.mydestination or domain.lower() == self.myhostname:
            return LOCAL
        if domain in self.virtual_alias_domains:
            return ALIAS
        if domain in self.virtual_mailbox_domains:
            return VIRTUAL
        if domain in self.relay_domains:
            return RELAY
        return DEFAULT

    def resolve(self, address: str) -> Route:
        domain = address.rpartition("@")[2] if "@" in address else ""
        cls = self.address_class(domain)
        if self.relocated_maps:
            try:
                moved = self.relocated(address)
            except TableTempError as e:
                return Route(cls, "retry", f"4.3.0 relocated_maps lookup failure: {e}")
            if moved is not None:
                return Route(cls, "error", f"5.1.6 User has moved to {moved}")
        if cls == ALIAS:
            return Route(cls, "error", "5.1.1 User unknown in virtual alias table")
        if cls == LOCAL:
            t, nh = _split_transport(self.local_transport, domain or self.myhostname)
        elif cls == VIRTUAL:
            t, nh = _split_transport(self.virtual_transport, domain)
        elif cls == RELAY:
            t, nh = _split_transport(self.relay_transport, self.relayhost or domain)
        else:
            t, nh = _split_transport(self.default_transport, self.relayhost or domain)
        route = Route(cls, t, nh.lower())
        if not self.transport_maps:
            return route
        try:
            value = self.transport_lookup(address)
        except TableTempError as e:
            return Route(cls, "retry", f"4.3.0 transport_maps lookup failure: {e}")
        return apply_transport(route, value, domain) if value is not None else route

    def transport_keys(self, address: str) -> list[str]:
        """transport(5) TABLE SEARCH ORDER for one recipient."""
        if not address:
            address = self.empty_address
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, self.myhostname
        domain = domain.lower().rstrip(".")
        keys = [f"{local}@{domain}"]
        if self.delimiter:
            for i, ch in enumerate(local):
                if ch in self.delimiter and i > 0:
                    keys.append(f"{local[:i]}@{domain}")
                    break
        keys.append(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            keys.append(parent if self.transport_parent_bare else "." + parent)
        keys.append("*")
        return keys

    def transport_lookup(self, address: str) -> str | None:
        for key in self.transport_keys(address):
            v = self.transport_maps.lookup(key)
            if v is not None:
                return v
        return None

    def relocated(self, address: str) -> str | None:
        """relocated(5): the new location of a moved user, or None. Keys user+ext@domain,
        user@domain, user+ext, user (local domains only), @domain."""
        if not self.relocated_maps or not address:
            return None
        domain = address.rpartition("@")[2] if "@" in address else None
        local = domain is None or domain.lower() == self.myorigin or self.address_class(domain) == LOCAL
        hit = first_match(self.relocated_maps.tables, rewrite_keys(address, self.delimiter, local), full=address)
        return hit[1].strip() if hit is not None else None

    def is_known_local(self, address: str) -> bool | None:
        """For smtpd's reject_unlisted_recipient: None when there is no table to ask."""
        if not self.local_recipient_maps:
            return None
        local, at, domain = address.rpartition("@")
        keys = (address, local, "@" + domain) if at else (address,)
        return any(self.local_recipient_maps.lookup(k) is not None for k in keys if k)
