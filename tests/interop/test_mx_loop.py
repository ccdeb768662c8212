"""Mail loop detection through a real DNS server (dnsmasq, zones in
test_smtp_delivery.ZONES): an MX that points back to this machine (an address of
inet_interfaces or proxy_interfaces) is never connected to. As Postfix says it:
"mail for selfmx.test loops back to myself" (5.4.6, bounced) when no more preferred
MX exists, "unable to find primary relay for X" (4.4.4, deferred) when the more
preferred ones have no address, and otherwise only the more preferred ones are tried.
Debian packages: dnsmasq-base, postfix (smtp-sink).
"""
from __future__ import annotations

import email
import email.policy
import smtplib
import time

from estafeta.delivery.smtp import SmtpAgent
from estafeta.testing.instance import free_port, wait_for

from test_smtp_delivery import (cfg, deliver, dumped, instances, needs_dns, needs_sink, peers,  # noqa: F401
                                port_open, request, workdir)


@needs_sink
@needs_dns
def test_best_mx_is_myself_bounces_without_connecting(peers):
    dns_port = peers.dns()
    port = free_port()
    d = peers.sink("127.0.0.1", port)          # "us": it must never be connected to
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", smtp_tcp_port=port, inet_interfaces="127.0.0.1"))
    (r,) = deliver(agent, request("selfmx.test", "b@selfmx.test"))
    assert (r.status, r.dsn, r.relay) == ("bounced", "5.4.6", "none"), f"got {r}"
    assert r.reason == "mail for selfmx.test loops back to myself"
    time.sleep(0.5)
    assert dumped(d) == []


@needs_sink
@needs_dns
def test_more_preferred_mx_only(peers):
    dns_port = peers.dns()
    port = free_port()
    primary = peers.sink("127.0.0.5", port, name="primary")
    me = peers.sink("127.0.0.1", port, name="me")
    settings = dict(dns_nameservers=f"127.0.0.1:{dns_port}", smtp_tcp_port=port, inet_interfaces="127.0.0.1")
    (r,) = deliver(SmtpAgent(cfg(**settings)), request("backupmx.test", "b@backupmx.test"))
    assert r.status == "sent" and r.relay == f"mx1.backupmx.test[127.0.0.5]:{port}", f"got {r}"
    wait_for(lambda: dumped(primary), 5, what="dump at the primary")
    # the primary down: we are its backup, so the mail waits (it is not sent to us)
    peers.stop(-2)
    wait_for(lambda: not port_open("127.0.0.5", port), 10, what="primary gone")
    (r,) = deliver(SmtpAgent(cfg(**settings)), request("backupmx.test", "b@backupmx.test"))
    assert r.status == "deferred" and "127.0.0.5" in r.reason, f"got {r}"
    # without loop detection the backup (us, 127.0.0.1) would have been tried next
    assert dumped(me) == []


@needs_dns
def test_primary_without_address_defers(peers):
    dns_port = peers.dns()
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", inet_interfaces="127.0.0.1"))
    (r,) = deliver(agent, request("noprimary.test", "b@noprimary.test"))
    assert (r.status, r.dsn) == ("deferred", "4.4.4"), f"got {r}"
    assert r.reason == "unable to find primary relay for noprimary.test"


@needs_dns
def test_proxy_interfaces_are_myself(peers):
    dns_port = peers.dns()
    # mx1.backupmx.test (127.0.0.5) is "us" behind a NAT: nothing is more preferred
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", inet_interfaces="127.0.0.1",
                          proxy_interfaces="127.0.0.5"))
    (r,) = deliver(agent, request("backupmx.test", "b@backupmx.test"))
    assert (r.status, r.dsn) == ("bounced", "5.4.6"), f"got {r}"


@needs_dns
def test_e2e_mx_pointing_at_our_own_smtpd(peers, instances):
    """The MX of selfmx.test is this instance's own smtpd (127.0.0.1, its port): the
    mail bounces to its sender instead of going round in circles."""
    dns_port = peers.dns()
    port = free_port()
    inst = instances({"dns_nameservers": f"127.0.0.1:{dns_port}", "smtp_tcp_port": str(port)})
    inst.set_master_port(port)        # smtpd listens where the MX points
    inst.cli("reload")
    inst.port = port
    wait_for(inst.accepting, 20, what=f"smtpd on {port}")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("demo@localhost", ["bob@selfmx.test"], b"Subject: loop test\r\n\r\nhello\r\n")
    wait_for(lambda: "status=bounced (mail for selfmx.test loops back to myself)" in inst.log(), 30,
             what="the bounced line")
    line = next(x for x in inst.log().splitlines() if "to=<bob@selfmx.test>, relay=none" in x)
    assert "dsn=5.4.6" in line, line
    notice = wait_for(lambda: inst.delivered("demo"), 30, what="the non-delivery notice")
    m = email.message_from_binary_file(open(notice[0], "rb"), policy=email.policy.default)
    assert m["Subject"] == "Undelivered Mail Returned to Sender"
    status = list(m.iter_parts())[1].get_payload()[1]
    assert status["Status"] == "5.4.6" and "loops back to myself" in status["Diagnostic-Code"]
    assert inst.log().count("client=localhost[127.0.0.1]") == 1, "the message came back to us"
