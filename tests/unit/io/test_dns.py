"""estafeta.io.dns: answers faked at the dnspython Message level, no network."""
from __future__ import annotations

import asyncio
import random

import dns.message
import dns.rcode
import dns.rrset
import pytest

from estafeta.io import dns as D


def response(query: dns.message.Message, *answers: str, rcode: int = dns.rcode.NOERROR,
             authority: tuple[str, ...] = ()) -> dns.message.Message:
    r = dns.message.make_response(query)
    r.set_rcode(rcode)
    for text in answers:
        name, ttl, cls, typ, *data = text.split(None, 4)
        r.answer.append(dns.rrset.from_text(name, int(ttl), cls, typ, *data))
    for text in authority:
        name, ttl, cls, typ, data = text.split(None, 4)
        r.authority.append(dns.rrset.from_text(name, int(ttl), cls, typ, data))
    return r


class FakeDNS:
    """A zone as a function of (name, type); counts questions."""

    def __init__(self, table: dict[tuple[str, str], object]) -> None:
        self.table = table
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, q: dns.message.Message) -> dns.message.Message:
        qname = q.question[0].name.to_text(omit_final_dot=True)
        qtype = dns.rdatatype.to_text(q.question[0].rdtype)
        self.asked.append((qname, qtype))
        v = self.table.get((qname, qtype), ())
        if isinstance(v, Exception):
            raise v
        if isinstance(v, int):
            return response(q, rcode=v)
        return response(q, *v)


def resolver(table, now=None, **kw) -> tuple[D.Resolver, FakeDNS]:
    fake = FakeDNS(table)
    clock = now or (lambda: 1000.0)
    return D.Resolver([("192.0.2.53", 53)], exchange=fake, clock=clock, rng=random.Random(1), **kw), fake


def run(coro):
    return asyncio.run(coro)


def test_mx_sorted_by_preference():
    r, _ = resolver({("tesis.com", "MX"): ("tesis.com. 300 IN MX 20 mx2.tesis.com.",
                                            "tesis.com. 300 IN MX 10 mx1.tesis.com.")})
    assert run(r.mx("tesis.com")) == [D.MX(10, "mx1.tesis.com"), D.MX(20, "mx2.tesis.com")]


def test_equal_preferences_are_shuffled():
    recs = [D.MX(10, f"mx{i}")for i in range(6)]

    class R:
        def __init__(self, m):
            self.preference, self.exchange = m.preference, dns.name.from_text(m.host)
    orders = {tuple(m.host for m in D.mx_records([R(m) for m in recs], "d", random.Random(seed)))
              for seed in range(20)}
    assert len(orders) > 1, "equal-preference MX hosts were never shuffled"


def test_null_mx_is_permanent():
    r, _ = resolver({("nullmx.test", "MX"): ("nullmx.test. 300 IN MX 0 .",)})
    with pytest.raises(D.NullMX) as e:
        run(r.mx("nullmx.test"))
    assert e.value.dsn == "5.1.10" and not e.value.temporary


def test_nodata_is_empty_nxdomain_permanent_servfail_temporary():
    r, _ = resolver({("aonly.test", "MX"): (), ("gone.test", "MX"): dns.rcode.NXDOMAIN,
                     ("broken.test", "MX"): dns.rcode.SERVFAIL})
    assert run(r.mx("aonly.test")) == []
    with pytest.raises(D.DnsPermError) as e:
        run(r.mx("gone.test"))
    assert e.value.dsn == "5.4.4"
    with pytest.raises(D.DnsTempError) as e:
        run(r.mx("broken.test"))
    assert e.value.dsn == "4.4.3"


def test_timeout_is_temporary():
    r, _ = resolver({("slow.test", "A"): dns.exception.Timeout()})
    with pytest.raises(D.DnsTempError):
        run(r.query("slow.test", "A"))


def test_cname_chain_is_followed():
    r, _ = resolver({("www.test", "A"): ("www.test. 300 IN CNAME host.test.", "host.test. 300 IN A 192.0.2.7")})
    assert [x.to_text() for x in run(r.query("www.test", "A"))] == ["192.0.2.7"]


def test_cache_honours_ttl():
    t = [1000.0]
    r, fake = resolver({("h.test", "A"): ("h.test. 60 IN A 192.0.2.1",)}, now=lambda: t[0])
    run(r.addresses("h.test", ("A",)))
    run(r.addresses("h.test", ("A",)))
    assert fake.asked == [("h.test", "A")]
    t[0] += 61
    run(r.addresses("h.test", ("A",)))
    assert len(fake.asked) == 2


def test_temporary_failures_are_not_cached():
    r, fake = resolver({("b.test", "A"): dns.rcode.SERVFAIL})
    for _ in range(2):
        with pytest.raises(D.DnsTempError):
            run(r.query("b.test", "A"))
    assert len(fake.asked) == 2


def test_addresses_v4_then_v6_and_one_family_failing():
    r, _ = resolver({("h.test", "A"): ("h.test. 60 IN A 192.0.2.1",), ("h.test", "AAAA"): dns.rcode.SERVFAIL})
    assert run(r.addresses("h.test")) == ["192.0.2.1"]


def test_txt_and_ptr():
    r, _ = resolver({("t.test", "TXT"): ('t.test. 60 IN TXT "v=spf1" " -all"',),
                     ("7.2.0.192.in-addr.arpa", "PTR"): ("7.2.0.192.in-addr.arpa. 60 IN PTR mx.test.",)})
    assert run(r.txt("t.test")) == ["v=spf1 -all"]
    assert run(r.ptr("192.0.2.7")) == ["mx.test"]


@pytest.mark.parametrize("value, want", [
    ("", []), ("127.0.0.1", [("127.0.0.1", 53)]), ("127.0.0.1:5353, 10.0.0.1", [("127.0.0.1", 5353), ("10.0.0.1", 53)]),
    ("[::1]:5300 ::1", [("::1", 5300), ("::1", 53)]),
])
def test_parse_nameservers(value, want):
    assert D.parse_nameservers(value) == want


def test_resolv_conf(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text("# x\nsearch example\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
    assert D.resolv_conf_nameservers(str(p)) == [("192.0.2.1", 53), ("fe80::1", 53)]
