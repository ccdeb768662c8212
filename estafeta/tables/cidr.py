"""cidr:/path — network/prefix patterns, first match wins (cidr_table(5)).

    192.168.1.1        OK          an address matches exactly
    192.168.0.0/16     REJECT      a network (host bits must be zero)
    !10.0.0.0/8        DUNNO       negated: applies when the key is NOT inside
    [2001:db8::]/32    REJECT      IPv6; "[]" around the address is allowed
    if 10.0.0.0/8      ... endif   the rules inside apply only to keys inside (nests)

Keys and patterns are compared as binary addresses of the same family: an IPv4
key never matches an IPv6 pattern (nor ::ffff:a.b.c.d an IPv4 one), IPv6 text is
normalised (2001:DB8:0::0001 = 2001:db8::1). A key that is not an address (a
hostname, "[1.2.3.4]", an IPv4 octet with a leading zero) matches no rule, not
even a negated one, as with postmap; nor does a rule (or an if block) of the
other address family, negated or not. Results are the text after the pattern.

Like patterns.py, a rule Postfix would skip with a warning (bad address, host
bits set, unbalanced if/endif) is a ConfigError with file and line here.
Next: source.py (logical lines, reopen-on-change), lookup.py (access-style IP keys).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..core.errors import ConfigError
from .source import RuleFileTable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CidrRule:
    line: int
    kind: str                  # "match", "if", "endif"
    negate: bool
    net: Network | None
    result: str = ""
    source: str = ""
    skip_to: int = 0


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A lookup key as an address, or None (Postfix's text forms only: no scope ids)."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_network(pattern: str) -> Network:
    addr, slash, plen = pattern.partition("/")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    ip = parse_address(addr)
    if ip is None or (slash and not (plen.isascii() and plen.isdigit())):
        raise ValueError(f'bad address pattern: "{pattern}"')
    bits = int(plen) if slash else ip.max_prefixlen
    if bits > ip.max_prefixlen:
        raise ValueError(f'bad mask length in "{pattern}"')
    try:
        return ipaddress.ip_network(f"{ip}/{bits}", strict=True)
    except ValueError:
        net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
        raise ValueError(f'non-null host address bits in "{pattern}", perhaps you should use'
                         f' "{net}" instead') from None


class CidrTable(RuleFileTable):
    kind = "cidr"

    def __init__(self, name: str) -> None:
        self.name = f"cidr:{name}"
        self.rules: list[CidrRule] = []
        self._open_source(name)

    def _build(self, lines: list[tuple[int, str]], path: str) -> None:
        rules: list[CidrRule] = []
        open_ifs: list[int] = []
        for n, line in lines:
            fields = line.split(None, 1)
            word = fields[0].lower()
            if word == "endif":
                if len(fields) > 1:
                    raise ConfigError(path, n, f"text after endif: {fields[1]!r}")
                if not open_ifs:
                    raise ConfigError(path, n, "endif without matching if")
                start = open_ifs.pop()
                r = rules[start]
                rules[start] = CidrRule(r.line, r.kind, r.negate, r.net, r.result, r.source, len(rules))
                rules.append(CidrRule(n, "endif", False, None, source=line))
                continue
            kind = "match"
            if word == "if":
                kind = "if"
                if len(fields) < 2:
                    raise ConfigError(path, n, "if needs an address pattern")
                fields = fields[1].split(None, 1)
            pattern = fields[0]
            negate = pattern.startswith("!")
            if negate:
                pattern = pattern[1:]
            try:
                net = parse_network(pattern)
            except ValueError as e:
                raise ConfigError(path, n, str(e)) from None
            result = fields[1].strip() if len(fields) > 1 else ""
            if kind == "if":
                if result:
                    raise ConfigError(path, n, f"text after the if pattern: {result!r}")
                open_ifs.append(len(rules))
            elif not result:
                raise ConfigError(path, n, f"no lookup result after {pattern!r}")
            rules.append(CidrRule(n, kind, negate, net, result, line))
        if open_ifs:
            raise ConfigError(path, rules[open_ifs[-1]].line, "if has no matching endif")
        self.rules = rules

    def lookup(self, key: str) -> str | None:
        self._fresh()
        ip = parse_address(key)
        if ip is None:
            return None
        rules, i = self.rules, 0
        while i < len(rules):
            r = rules[i]
            if r.kind == "endif" or r.net is None:
                i += 1
                continue
            if ip.version != r.net.version:
                # Another family is neither inside nor outside: the rule (and an if's
                # whole block) does not apply, negated or not, as with postmap.
                i = i + 1 if r.kind == "match" else r.skip_to + 1
                continue
            inside = ip in r.net
            if r.kind == "if":
                i = i + 1 if inside != r.negate else r.skip_to + 1
                continue
            if inside != r.negate:
                return r.result
            i += 1
        return None

    def items(self) -> list[tuple[str, str]]:
        self._fresh()
        return [(r.source.split(None, 1)[0] if r.kind != "if" else r.source, r.result)
                for r in self.rules if r.kind == "match"]
