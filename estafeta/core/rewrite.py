"""Address rewriting: cleanup's canonical, masquerading and virtual alias steps (SPEC S4).

Owns what happens to an address between the client and the queue file, as
Postfix's cleanup(8) and trivial-rewrite(8) "rewrite" context document it:

  qualify       a bare name gets @$myorigin (append_at_myorigin), a domain without a
                dot gets .$mydomain (append_dot_mydomain, default no); a trailing dot
                is dropped.
  canonical     sender_canonical_maps / recipient_canonical_maps, then canonical_maps,
                each for the classes its *_classes parameter names (envelope_sender,
                envelope_recipient, header_sender, header_recipient). One-to-one; a
                result is looked up again (at most 10 times) until it maps to itself
                or to nothing (canonical(5)).
  masquerade    masquerade_domains: "foo.example.com example.com" strips
                a.b.foo.example.com to foo.example.com and a.b.example.com to
                example.com; "!name" keeps name and its subdomains as they are; users
                in masquerade_exceptions are never masqueraded; masquerade_classes.
  virtual       virtual_alias_maps: envelope recipients only, one-to-many, looked up
                again for every result (recursion), a result equal to its own key
                kept as is (virtual(5) "user@domain user@domain, other@x"), loops cut,
                duplicates dropped; deeper than virtual_alias_recursion_limit or more
                than virtual_alias_expansion_limit results defers the message.

Lookup keys come from tables/lookup.py (user+ext@domain, user@domain, user+ext, user
for local domains, @domain); an unmatched extension is carried over to the result
when propagate_unmatched_extensions names the table kind. A result "@otherdomain"
keeps the user part. Table failures raise TableTempError: the caller defers.

Trust boundary: addresses come from clients; only table results replace them.
Next: daemons/cleanup.py (where these run), core/resolve.py (address classes).
"""
from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Sequence

from ..tables import Table, TableList, TableTempError, open_table, split_table_list
from ..tables.lookup import first_match, rewrite_keys, split_address, split_extension
from .errors import TempFail

ENV_SENDER, ENV_RECIPIENT = "envelope_sender", "envelope_recipient"
HDR_SENDER, HDR_RECIPIENT = "header_sender", "header_recipient"
CANONICAL_RECURSION = 10

# One plain, fully qualified address, optionally after an unquoted display name:
# `a@b.example`, `<a@b.example>`, `Joe Bloggs <a@b.example>`. With no canonical or
# masquerading tables, such a header has nothing to rewrite (qualify() leaves a
# dotted domain alone), so header() skips the full RFC 5322 parse for it.
_PLAIN_QUALIFIED = re.compile(
    r"[ \t]*(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+[ \t]+)*"
    r"(?:<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+>"
    r"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)[ \t]*\n?")

# Which headers hold sender and which recipient addresses (the classes above).
SENDER_HEADERS = frozenset({"from", "sender", "resent-from", "resent-sender", "errors-to",
                            "return-receipt-to", "disposition-notification-to"})
RECIPIENT_HEADERS = frozenset({"to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc",
                               "resent-bcc", "reply-to", "resent-reply-to"})


class AliasLimitError(TempFail):
    """virtual_alias_recursion_limit or virtual_alias_expansion_limit exceeded."""


def split_result(value: str) -> list[str]:
    """A table result 'a@x, b@y c@z' -> its addresses (virtual(5): separated by
    whitespace or commas)."""
    return [v for v in value.replace(",", " ").split() if v]


class Rewriter:
    """The rewriting rules of one main.cf; `is_local` says whether a domain is local
    (trivial-rewrite's idea: $myorigin, $mydestination, $myhostname)."""

    def __init__(self, cfg, is_local: Callable[[str], bool] | None = None) -> None:
        self.myorigin = cfg.get("myorigin")
        self.mydomain = cfg.get("mydomain")
        self.append_at_myorigin = cfg.get_bool("append_at_myorigin")
        self.append_dot_mydomain = cfg.get_bool("append_dot_mydomain")
        self.delimiter = cfg.get("recipient_delimiter")
        self.propagate = {x.lower() for x in cfg.get_list("propagate_unmatched_extensions")}
        self.canonical_maps = TableList(cfg.get("canonical_maps")).tables
        self.sender_maps = TableList(cfg.get("sender_canonical_maps")).tables
        self.recipient_maps = TableList(cfg.get("recipient_canonical_maps")).tables
        self.canonical_classes = {x.lower() for x in cfg.get_list("canonical_classes")}
        self.sender_classes = {x.lower() for x in cfg.get_list("sender_canonical_classes")}
        self.recipient_classes = {x.lower() for x in cfg.get_list("recipient_canonical_classes")}
        self.masq_domains = [d.lower().rstrip(".") for d in cfg.get_list("masquerade_domains")]
        self.masq_classes = {x.lower() for x in cfg.get_list("masquerade_classes")}
        self.masq_names: set[str] = set()
        self.masq_tables: list[Table] = []
        for item in split_table_list(cfg.get("masquerade_exceptions")):
            if ":" in item:
                self.masq_tables.append(open_table(item))
            else:
                self.masq_names.add(item.lower())
        self.virtual_maps = TableList(cfg.get("virtual_alias_maps")).tables
        self.recursion_limit = cfg.get_int("virtual_alias_recursion_limit")
        self.expansion_limit = cfg.get_int("virtual_alias_expansion_limit")
        origin = self.myorigin.lower()
        self.is_local = is_local or (lambda d: d.lower() == origin)
        self.myorigin_lower = origin

    # -- the single steps ----------------------------------------------------------------

    def qualify(self, address: str, domain: str | None = None) -> str:
        """Complete an address: @$myorigin (or `domain`) for a bare name, .$mydomain for
        a dotless domain when append_dot_mydomain is on, no trailing dot."""
        if not address:
            return address
        local, dom = split_address(address)
        if dom is None:
            if domain is None and not self.append_at_myorigin:
                return address
            return f"{address}@{domain or self.myorigin}"
        if dom.endswith(".") and not dom.startswith("["):
            dom = dom.rstrip(".")
            address = f"{local}@{dom}"
        if self.append_dot_mydomain and dom and "." not in dom and not dom.startswith("[") and self.mydomain:
            address = f"{local}@{dom}.{self.mydomain}"
        return address

    def local_domain(self, domain: str | None) -> bool:
        return domain is None or domain.lower() == self.myorigin_lower or self.is_local(domain)

    def map_lookup(self, tables: Sequence[Table], address: str, kind: str) -> list[str] | None:
        """The results of the first key any table knows, with result rewriting
        (@otherdomain, extension propagation, qualification); None: no match."""
        if not tables or not address:
            return None
        local, domain = split_address(address)
        keys = rewrite_keys(address, self.delimiter, self.local_domain(domain))
        hit = first_match(tables, keys, full=address)
        if hit is None:
            return None
        key, value = hit
        base, ext = split_extension(local, self.delimiter)
        delim = local[len(base)] if ext is not None else ""
        with_ext = {local.lower(), f"{local}@{domain}".lower()} if ext is not None else set()
        propagate = ext is not None and kind in self.propagate and key.lower() not in with_ext \
            and key != address
        out = []
        for r in split_result(value):
            if r.startswith("@"):
                r = f"{local}{r}"                      # "@otherdomain": the same user there
            elif propagate:
                rl, rd = split_address(r)
                r = f"{rl}{delim}{ext}" + (f"@{rd}" if rd is not None else "")
            out.append(self.qualify(r))
        return out

    def map11(self, tables: Sequence[Table], address: str, kind: str) -> str:
        """One-to-one mapping (canonical): follow results until one maps to itself or
        to nothing; at most CANONICAL_RECURSION steps."""
        for _ in range(CANONICAL_RECURSION):
            res = self.map_lookup(tables, address, kind)
            if not res or res[0].lower() == address.lower():
                break
            address = res[0]
        return address

    def canonical(self, address: str, cls: str) -> str:
        if not address:
            return address                    # the null sender stays null
        own = self.sender_maps if cls in (ENV_SENDER, HDR_SENDER) else self.recipient_maps
        own_classes = self.sender_classes if cls in (ENV_SENDER, HDR_SENDER) else self.recipient_classes
        if own and cls in own_classes:
            address = self.map11(own, address, "canonical")
        if self.canonical_maps and cls in self.canonical_classes:
            address = self.map11(self.canonical_maps, address, "canonical")
        return address

    def masquerade(self, address: str, cls: str) -> str:
        if not self.masq_domains or cls not in self.masq_classes or not address:
            return address
        local, domain = split_address(address)
        if domain is None or domain.startswith("["):
            return address
        if local.lower() in self.masq_names or any(t.lookup(local.lower()) is not None for t in self.masq_tables):
            return address
        d = domain.lower()
        for masq in self.masq_domains:
            excluded = masq.startswith("!")
            name = masq[1:] if excluded else masq
            if not name:
                continue
            if d == name:
                return address               # already the masquerade domain
            if d.endswith("." + name):
                return address if excluded else f"{local}@{name}"
        return address

    def virtual(self, address: str) -> list[str]:
        """Expand one envelope recipient through virtual_alias_maps."""
        if not self.virtual_maps:
            return [address]
        out: dict[str, str] = {}
        seen = {address.lower()}

        def expand(addr: str, depth: int) -> None:
            if depth > self.recursion_limit:
                raise AliasLimitError(f"unreasonable virtual_alias_maps map nesting for {address}", "4.3.0")
            res = self.map_lookup(self.virtual_maps, addr, "virtual")
            if res is None:
                out.setdefault(addr.lower(), addr)
            else:
                for r in res:
                    if r.lower() == addr.lower() or r.lower() in seen:
                        out.setdefault(r.lower(), r)    # self-reference or loop: keep it
                        continue
                    seen.add(r.lower())
                    expand(r, depth + 1)
            if len(out) > self.expansion_limit:
                raise AliasLimitError(f"unreasonable virtual_alias_maps map expansion size for {address}", "4.3.0")

        expand(address, 1)
        return list(out.values())

    def recipient_listed(self, address: str) -> bool:
        """Does a recipient table (recipient_canonical_maps, canonical_maps,
        virtual_alias_maps) know this address? smtpd then accepts it whatever its
        class's own recipient table says (Postfix's reject_unlisted_recipient)."""
        for tables in (self.recipient_maps, self.canonical_maps, self.virtual_maps):
            if tables and self.map_lookup(tables, address, "") is not None:
                return True
        return False

    # -- what cleanup calls --------------------------------------------------------------------

    def envelope_sender(self, address: str) -> str:
        if not address:
            return address
        return self.masquerade(self.canonical(self.qualify(address), ENV_SENDER), ENV_SENDER)

    def envelope_recipient(self, address: str) -> list[str]:
        a = self.masquerade(self.canonical(self.qualify(address), ENV_RECIPIENT), ENV_RECIPIENT)
        return self.virtual(a)

    @property
    def rewrites_headers(self) -> bool:
        return bool(self.canonical_maps or self.sender_maps or self.recipient_maps or self.masq_domains)

    def header_address(self, address: str, cls: str, domain: str | None) -> str:
        return self.masquerade(self.canonical(self.qualify(address, domain), cls), cls)

    def header(self, name: str, value: str, domain: str | None) -> str | None:
        """The new value of an address header, or None when nothing changes. `domain`
        is what a bare name gets ($myorigin for local clients, else
        $remote_header_rewrite_domain). Display names, comments and folding stay; only
        the changed addr-specs are replaced in the text."""
        key = name.strip().lower()
        cls = HDR_SENDER if key in SENDER_HEADERS else HDR_RECIPIENT if key in RECIPIENT_HEADERS else None
        if cls is None:
            return None
        if not self.rewrites_headers and _PLAIN_QUALIFIED.fullmatch(value):
            return None
        pairs = email.utils.getaddresses([value])
        changes = []
        for display, addr in pairs:
            if not addr:
                continue
            new = self.header_address(addr, cls, domain)
            if new != addr:
                changes.append((display, addr, new))
        if not changes:
            return None
        out, pos = value, 0
        for display, old, new in changes:
            i = _find_addr(out, old, pos)
            if i < 0:                         # not found verbatim (folded inside it): rebuild
                fresh = []
                for d, a in pairs:
                    if a:
                        fresh.append(email.utils.formataddr((d, self.header_address(a, cls, domain))))
                return " " + ", ".join(fresh)
            out = out[:i] + new + out[i + len(old):]
            pos = i + len(new)
        return out


def _find_addr(text: str, addr: str, start: int) -> int:
    """Position of `addr` as a whole token in `text` (not inside a longer address)."""
    i = text.find(addr, start)
    while i >= 0:
        before = text[i - 1] if i > 0 else " "
        after = text[i + len(addr)] if i + len(addr) < len(text) else " "
        if before in " \t\n<,:;(\"" and after in " \t\n>,;)\"":
            return i
        i = text.find(addr, i + 1)
    return -1


__all__ = ["Rewriter", "AliasLimitError", "TableTempError", "split_result",
           "ENV_SENDER", "ENV_RECIPIENT", "HDR_SENDER", "HDR_RECIPIENT"]
