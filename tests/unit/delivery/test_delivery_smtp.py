"""estafeta.delivery.smtp: next-hop syntax and the MX walk, with a fake resolver."""
from __future__ import annotations

import asyncio

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.delivery.smtp import Nexthop, SmtpAgent, parse_nexthop
from estafeta.io.dns import MX, DnsTempError


@pytest.mark.parametrize("text, lmtp, want", [
    ("[mail.example.org]:2525", False, Nexthop("inet", "mail.example.org", 2525, False)),
    ("[192.0.2.1]", False, Nexthop("inet", "192.0.2.1", 25, False)),
    ("Example.ORG.", False, Nexthop("inet", "example.org", 25, True)),
    ("example.org:587", False, Nexthop("inet", "example.org", 587, True)),
    ("192.0.2.1", False, Nexthop("inet", "192.0.2.1", 25, False)),
    ("unix:/run/dovecot/lmtp", True, Nexthop("unix", "/run/dovecot/lmtp", 0, False)),
    ("inet:localhost:24", True, Nexthop("inet", "localhost", 24, False)),
    ("localhost", True, Nexthop("inet", "localhost", 25, False)),
])
def test_parse_nexthop(text, lmtp, want):
    assert parse_nexthop(text, 25, lmtp) == want


@pytest.mark.parametrize("text", ["[x", "[x]y", "x:0", "x:99999", "x:abc", "", "unix:/x", "[]:25"])
def test_parse_nexthop_rejects(text):
    with pytest.raises(ValueError):
        parse_nexthop(text, 25, False)


class FakeResolver:
    def __init__(self, mx, hosts):
        self._mx, self.hosts = mx, hosts

    async def mx(self, domain):
        v = self._mx.get(domain, [])
        if isinstance(v, Exception):
            raise v
        return v

    async def addresses(self, host, families=("A", "AAAA")):
        v = self.hosts.get(host, [])
        if isinstance(v, Exception):
            raise v
        return v


def agent(res) -> SmtpAgent:
    return SmtpAgent(MainConfig.parse("myhostname = c.example\n"), resolver=res)


def test_servers_in_mx_order_then_implicit_mx():
    a = agent(FakeResolver({"d.test": [MX(10, "mx1.d.test"), MX(20, "mx2.d.test")]},
                           {"mx1.d.test": ["192.0.2.1", "192.0.2.2"], "mx2.d.test": ["192.0.2.3"],
                            "a.test": ["192.0.2.9"]}))
    got = asyncio.run(a._servers(parse_nexthop("d.test", 25)))
    assert got == [("mx1.d.test", "192.0.2.1"), ("mx1.d.test", "192.0.2.2"), ("mx2.d.test", "192.0.2.3")]
    assert asyncio.run(a._servers(parse_nexthop("a.test", 25))) == [("a.test", "192.0.2.9")]
    assert asyncio.run(a._servers(parse_nexthop("[a.test]", 25))) == [("a.test", "192.0.2.9")]


def test_mx_host_that_does_not_resolve_is_skipped_or_deferred():
    err = DnsTempError("servfail", "4.4.3")
    a = agent(FakeResolver({"d.test": [MX(10, "bad.d.test"), MX(20, "ok.d.test")], "e.test": [MX(10, "bad.d.test")]},
                           {"bad.d.test": err, "ok.d.test": ["192.0.2.3"]}))
    assert asyncio.run(a._servers(parse_nexthop("d.test", 25))) == [("ok.d.test", "192.0.2.3")]
    with pytest.raises(DnsTempError):
        asyncio.run(a._servers(parse_nexthop("e.test", 25)))
