"""estafeta.delivery.smtp: next-hop syntax and the MX walk, with a fake resolver."""
from __future__ import annotations

import asyncio

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base
from estafeta.delivery import smtp as smtp_mod
from estafeta.delivery.smtp import Nexthop, SmtpAgent, _Final, parse_nexthop
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


def agent(res, settings: str = "") -> SmtpAgent:
    # inet_interfaces names one address: with "all" the mail loop check would depend
    # on this machine's own addresses (a host may well have one in 192.0.2.0/24)
    return SmtpAgent(MainConfig.parse("myhostname = c.example\ninet_interfaces = 127.0.0.1\n" + settings),
                     resolver=res)


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


# -- mail loop detection (Postfix's smtp_find_self / smtp_truncate_self) ----------------

def servers(a, nexthop):
    return asyncio.run(a._servers(parse_nexthop(nexthop, a.default_port)))


def loop_result(a, nexthop):
    with pytest.raises(_Final) as e:
        servers(a, nexthop)
    return e.value.status, e.value.dsn, e.value.reason


LOOP_ZONES = FakeResolver(
    {"self.test": [MX(10, "me.test")], "backup.test": [MX(10, "other.test"), MX(20, "me.test")],
     "primary.test": [MX(10, "me.test"), MX(20, "other.test")],
     "noprimary.test": [MX(10, "gone.test"), MX(20, "me.test")],
     "proxied.test": [MX(5, "nat.test")]},
    {"me.test": ["127.0.0.1"], "other.test": ["192.0.2.20"], "gone.test": DnsTempError("servfail", "4.4.3"),
     "nat.test": ["198.51.100.7"], "aself.test": ["127.0.0.1"], "mail.c.example": ["192.0.2.50"]})


def test_best_mx_is_myself_bounces():
    a = agent(LOOP_ZONES)
    assert loop_result(a, "self.test") == ("bounced", "5.4.6", "mail for self.test loops back to myself")
    # a less preferred backup would only send it back to us
    assert loop_result(a, "primary.test") == ("bounced", "5.4.6", "mail for primary.test loops back to myself")


def test_only_more_preferred_mx_hosts_are_tried():
    assert servers(agent(LOOP_ZONES), "backup.test") == [("other.test", "192.0.2.20")]


def test_unresolvable_primary_defers():
    assert loop_result(agent(LOOP_ZONES), "noprimary.test") == \
        ("deferred", "4.4.4", "unable to find primary relay for noprimary.test")


def test_host_and_literal_next_hops_that_are_myself():
    a = agent(LOOP_ZONES)
    assert loop_result(a, "aself.test")[1:] == ("5.4.6", "mail for aself.test loops back to myself")   # implicit MX
    assert loop_result(a, "[127.0.0.1]")[1:] == ("5.4.6", "mail for 127.0.0.1 loops back to myself")
    assert loop_result(a, "[127.0.0.1]:25")[1] == "5.4.6"


def test_other_ports_and_lmtp_are_no_loop():
    a = agent(LOOP_ZONES)
    assert servers(a, "[127.0.0.1]:10025") == [("127.0.0.1", "127.0.0.1")]     # a content filter
    assert servers(a, "self.test:2526") == [("me.test", "127.0.0.1")]
    lm = SmtpAgent(MainConfig.parse("myhostname = c.example\ninet_interfaces = 127.0.0.1\n"), lmtp=True,
                   resolver=LOOP_ZONES)
    assert asyncio.run(lm._servers(parse_nexthop("inet:127.0.0.1:24", 24, True))) == [("127.0.0.1", "127.0.0.1")]
    # smtp_tcp_port is the port MX hosts are reached on: checked like 25
    b = agent(LOOP_ZONES, "smtp_tcp_port = 2526\n")
    assert loop_result(b, "self.test")[1] == "5.4.6"


def test_proxy_interfaces_and_host_names_count_as_myself():
    assert servers(agent(LOOP_ZONES), "proxied.test") == [("nat.test", "198.51.100.7")]
    a = agent(LOOP_ZONES, "proxy_interfaces = 198.51.100.7\n")
    assert loop_result(a, "proxied.test")[1] == "5.4.6"
    b = agent(FakeResolver({"x.test": [MX(1, "mx.x.test")]}, {"mx.x.test": ["192.0.2.50"],
                                                               "mail.c.example": ["192.0.2.50"]}),
              "inet_interfaces = mail.c.example\n")
    assert loop_result(b, "x.test")[1] == "5.4.6"


def test_inet_interfaces_all_means_every_interface_address(monkeypatch):
    monkeypatch.setattr(smtp_mod, "local_addresses", lambda: frozenset({"192.0.2.20", "::1"}))
    a = SmtpAgent(MainConfig.parse("myhostname = c.example\ninet_interfaces = all\n"), resolver=LOOP_ZONES)
    assert loop_result(a, "[192.0.2.20]")[1] == "5.4.6"
    assert loop_result(a, "[::ffff:192.0.2.20]")[1] == "5.4.6"
    assert servers(a, "self.test") == [("me.test", "127.0.0.1")]     # 127.0.0.1 is not listed here


def test_loop_is_reported_for_every_recipient():
    a = agent(LOOP_ZONES)
    req = base.DeliveryRequest("4ABC", "/nonexistent", 0, "s@c.example", 0.0, "smtp", "self.test",
                               [base.RecipientRequest("x@self.test"), base.RecipientRequest("y@self.test")])
    res = asyncio.run(a.deliver_message(req, b"Subject: x\n\nx\n"))
    assert [(r.address, r.status, r.dsn, r.relay) for r in res] == \
        [("x@self.test", "bounced", "5.4.6", "none"), ("y@self.test", "bounced", "5.4.6", "none")]
    assert res[0].reason == "mail for self.test loops back to myself"
