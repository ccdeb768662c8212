"""Asynchronous DNS for routing and policy (SPEC S11): MX, A/AAAA, TXT, PTR, TLSA.

Owns the questions we ask, the three outcomes of every lookup (records, none,
failure) and a small TTL cache. Answers come from the network and are untrusted:
names are only used as lookup keys and in log text.

Outcomes, as the delivery agents need them:
  * records                       -> a list
  * NOERROR with no records        -> [] (NODATA: "no MX" means "use A", RFC 5321 5.1)
  * NXDOMAIN                       -> DnsPermError (the domain does not exist)
  * SERVFAIL, REFUSED, timeout     -> DnsTempError (try again later)
  * MX "." alone (RFC 7505 null MX) -> NullMX (a DnsPermError): mail is not accepted

The wire work is one function, `Resolver.exchange` (dns.asyncquery UDP with TCP
fallback, nameservers tried in turn); tests replace it to feed dnspython Message
objects directly. The pure `answer_records` classifies a response.
Nameservers: the `dns_nameservers` parameter ("host[:port], ..."), else
/etc/resolv.conf, else 127.0.0.1.
Next: delivery/smtp.py (MX routing).
"""
from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from ..core.errors import PermFail, TempFail

CACHE_MAX = 10000
NEGATIVE_TTL = 60          # NXDOMAIN/NODATA without an SOA to say how long
MAX_TTL = 3600
MAX_CNAME_HOPS = 8


class DnsTempError(TempFail):
    pass


class DnsPermError(PermFail):
    pass


class NullMX(DnsPermError):
    pass


@dataclass(frozen=True, slots=True)
class MX:
    preference: int
    host: str           # no trailing dot; "" for the null MX


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """"127.0.0.1:5353, [::1]:53, 10.0.0.1" -> [(host, port)]."""
    out: list[tuple[str, int]] = []
    for item in value.replace(",", " ").split():
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, p = item.split(":")
            port = int(p)
        out.append((host, port))
    return out


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return []
    return [(ln.split()[1].split("%")[0], 53) for ln in lines
            if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]


def answer_records(response: dns.message.Message, qname: str, rdtype: str) -> tuple[list[object], int]:
    """Classify one response: (rdata list, ttl) or raise DnsPermError / DnsTempError.

    Follows a CNAME chain inside the answer section, as a recursive server sends it.
    """
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise DnsPermError(f"Host or domain name not found. Name service error for name={qname} "
                           f"type={rdtype}: Host not found", "5.4.4")
    if rcode != dns.rcode.NOERROR:
        raise DnsTempError(f"Host or domain name not found. Name service error for name={qname} "
                           f"type={rdtype}: Host not found, try again ({dns.rcode.to_text(rcode)})", "4.4.3")
    name = dns.name.from_text(qname)
    want = dns.rdatatype.from_text(rdtype)
    for _ in range(MAX_CNAME_HOPS):
        rrset = _find(response, name, want)
        if rrset is not None:
            return list(rrset), min(int(rrset.ttl), MAX_TTL)
        cname = _find(response, name, dns.rdatatype.CNAME)
        if cname is None:
            break
        name = cname[0].target
    ttl = NEGATIVE_TTL
    for rr in response.authority:
        if rr.rdtype == dns.rdatatype.SOA:
            ttl = min(int(rr.ttl), int(rr[0].minimum), NEGATIVE_TTL * 5)
    return [], ttl


def _find(response: dns.message.Message, name: dns.name.Name, rdtype: int):
    """The answer rrset for (name, type), or None; a scan, so several rrsets merge."""
    found = None
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN:
            if found is None:
                found = rrset
            else:
                found = found.copy()
                found.update(rrset)
    return found


def mx_records(rdatas: list[object], domain: str, rng: random.Random | None = None) -> list[MX]:
    """Sort MX records by preference, shuffling equal ones (RFC 5321 5.1).

    RFC 7505: a single MX with the root as exchange means "no mail here".
    """
    mxs = [MX(int(r.preference), r.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
           for r in rdatas]
    if len(mxs) == 1 and mxs[0].host in ("", "."):
        raise NullMX(f"Domain {domain} does not accept mail (nullMX)", "5.1.10")
    mxs = [m for m in mxs if m.host not in ("", ".")]   # a null MX among others is ignored
    rng = rng or random
    keyed = [(m.preference, rng.random(), m) for m in mxs]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [m for _, _, m in keyed]


Exchange = Callable[[dns.message.Message], Awaitable[dns.message.Message]]


class Resolver:
    def __init__(self, nameservers: list[tuple[str, int]] | None = None, *, timeout: float = 5.0,
                 exchange: Exchange | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.nameservers = nameservers or resolv_conf_nameservers() or [("127.0.0.1", 53)]
        self.timeout = timeout
        self.exchange = exchange or self._network_exchange
        self.clock = clock
        self.rng = rng or random.Random()
        self._cache: dict[tuple[str, str], tuple[float, list[object] | DnsPermError]] = {}

    @classmethod
    def from_config(cls, cfg) -> "Resolver":
        ns = parse_nameservers(cfg.get("dns_nameservers"))
        return cls(ns or None, timeout=cfg.get_duration("dns_timeout"))

    async def _network_exchange(self, query: dns.message.Message) -> dns.message.Message:
        last: Exception | None = None
        for host, port in self.nameservers:
            try:
                response, _tcp = await dns.asyncquery.udp_with_fallback(query, host, timeout=self.timeout,
                                                                        port=port)
                if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED) and len(self.nameservers) > 1:
                    last = DnsTempError(dns.rcode.to_text(response.rcode()))
                    continue
                return response
            except (dns.exception.DNSException, OSError) as e:
                last = e
        raise DnsTempError(f"no answer from nameservers {self.nameservers}: {type(last).__name__}: {last}",
                           "4.4.3")

    async def query(self, name: str, rdtype: str) -> list[object]:
        """Records of one type for one name; [] for NODATA. Cached for the records' TTL."""
        name = name.rstrip(".").lower() or "."
        key = (name, rdtype)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], DnsPermError):
                raise hit[1]
            return hit[1]
        q = dns.message.make_query(name, rdtype)
        q.flags |= dns.flags.RD
        try:
            response = await self.exchange(q)
        except DnsTempError:
            raise
        except (dns.exception.DNSException, OSError) as e:
            raise DnsTempError(f"Name service error for name={name} type={rdtype}: {e}", "4.4.3") from e
        try:
            records, ttl = answer_records(response, name, rdtype)
        except DnsPermError as e:
            self._store(key, now + NEGATIVE_TTL, e)
            raise
        self._store(key, now + ttl, records)
        return records

    def _store(self, key: tuple[str, str], expires: float, value: list[object] | DnsPermError) -> None:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()     # crude but bounded; a busy agent refills what it needs
        self._cache[key] = (expires, value)

    async def mx(self, domain: str) -> list[MX]:
        """MX hosts in try order; [] when the domain has none (use its A/AAAA)."""
        return mx_records(await self.query(domain, "MX"), domain, self.rng)

    async def addresses(self, host: str, families: tuple[str, ...] = ("A", "AAAA")) -> list[str]:
        """IPv4 then IPv6 addresses of a host. A failure of one family is ignored when
        the other gives addresses; otherwise the first failure is raised."""
        out: list[str] = []
        errors: list[Exception] = []
        for t in families:
            try:
                out.extend(r.to_text() for r in await self.query(host, t))  # type: ignore[attr-defined]
            except (DnsTempError, DnsPermError) as e:
                errors.append(e)
        if not out and errors:
            raise errors[0]
        return out

    async def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in await self.query(name, "TXT")]  # type: ignore[attr-defined]

    async def ptr(self, address: str) -> list[str]:
        rev = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        return [r.target.to_text(omit_final_dot=True) for r in await self.query(rev, "PTR")]  # type: ignore[attr-defined]

    async def tlsa(self, host: str, port: int = 25) -> list[object]:
        return await self.query(f"_{port}._tcp.{host}", "TLSA")
