"""The same restrictions and access tables in estafeta and in a private Postfix: the
same replies (code, status and text) for a set of client/sender/recipient cases.

Postfix (Debian's, ../shared/PEERS.md section 7) is the oracle for the Postfix
actions; Sendmail's verbs (RELAY, ERROR:) are estafeta's own and tested in
tests/e2e/test_access.py. Clients come from loopback addresses (smtplib's
source_address), which neither server can resolve to a name.
"""
import smtplib

import pytest
from postfix_private import REQUIRES, base_main, private_postfix

from estafeta.testing.instance import Instance, free_port
from estafeta.testing.postfix import MASTER_CF

pytestmark = REQUIRES

TABLES = {
    "client_access": """\
127.0.4 REJECT no service
127.0.5 DISCARD
127.0.6 550 5.7.0 custom refusal
127.0.7 DEFER_IF_PERMIT slow down
127.0.8 DUNNO
127.0.9 permit
127.0.10 defer
127.0.11 HOLD
127.0.12 451 4.1.1 later please
127.0.13 DEFER_IF_REJECT maybe later
127.0.14 reject
127.0.15 permit_mynetworks reject
127.0.16 DEFER
""",
    "sender_access": """\
spammer.example REJECT
bulk@ 450 4.1.1 try later
<> REJECT no bounces here
friend.example OK
odd.example 550 5.1.2 odd domain
""",
    "rcpt_access": """\
blocked@localhost 550 5.1.7 mailbox disabled
demo@localhost PREPEND X-Checked: yes
remote.example OK
held@localhost HOLD
""",
}
RESTRICTIONS = {
    "smtpd_client_restrictions": "check_client_access hash:{d}/client_access",
    "smtpd_recipient_restrictions": "check_sender_access hash:{d}/sender_access, "
                                    "check_recipient_access hash:{d}/rcpt_access",
}
# (client source address, sender, recipient)
CASES = [(client, sender, rcpt)
         for client in ("127.0.0.1", "127.0.3.1", "127.0.4.1", "127.0.5.1", "127.0.6.1", "127.0.7.1",
                        "127.0.8.1", "127.0.9.1", "127.0.10.1", "127.0.11.1", "127.0.12.1", "127.0.13.1",
                        "127.0.14.1", "127.0.15.1", "127.0.16.1")
         for sender, rcpt in (("a@example.org", "demo@localhost"), ("a@example.org", "x@remote.example"),
                              ("a@example.org", "x@other.example"))] + [
    ("127.0.3.1", sender, rcpt)
    for sender in ("x@mx.spammer.example", "bulk@anywhere.example", "", "a@friend.example", "a@odd.example")
    for rcpt in ("demo@localhost", "blocked@localhost", "x@other.example", "held@localhost")
] + [("127.0.0.1", "bulk@anywhere.example", "x@other.example"), ("127.0.0.1", "", "blocked@localhost")]


@pytest.fixture
def postfix():
    with private_postfix("pf-access-") as pf:
        port = free_port()
        main = base_main(pf.dir) + """myhostname = mx.example.test
mydestination = localhost
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
alias_maps =
default_transport = discard:no outbound delivery in tests
smtpd_peername_lookup = no
"""
        main += "".join(f"{k} = {v.format(d=pf.etc)}\n" for k, v in RESTRICTIONS.items())
        pf.write(main, MASTER_CF.format(port=port))
        for name, text in TABLES.items():
            with open(pf.path("etc", name), "w") as f:
                f.write(text)
            pf.postmap(name)
        pf.start([port])
        yield {"dir": pf.dir, "port": port}


def rcpt_reply(port, client, sender, rcpt):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(client, 0)) as s:
            s.ehlo("client.example")
            code, msg = s.mail(sender)
            if code != 250:
                return f"MAIL {code} {msg.decode()}"
            code, msg = s.rcpt(rcpt)
            return f"{code} {msg.decode()}"
    except smtplib.SMTPServerDisconnected:
        return "disconnected"


def test_same_replies_as_postfix(postfix):
    with Instance() as inst:
        inst.init()
        for name, text in TABLES.items():
            open(inst.path(name), "w").write(text)
            inst.cli("map", f"hash:{inst.path(name)}")
        inst.cli("config", "-e", "mynetworks=127.0.0.1/32", "local_recipient_maps=",
                 *(f"{k}={v.format(d=inst.root)}" for k, v in RESTRICTIONS.items()))
        inst.start()
        diffs = []
        for client, sender, rcpt in CASES:
            want = rcpt_reply(postfix["port"], client, sender, rcpt)
            got = rcpt_reply(inst.port, client, sender, rcpt)
            if got != want:
                diffs.append(f"{client} <{sender}> -> <{rcpt}>: got {got!r}, want (Postfix) {want!r}")
        assert not diffs, "\n".join(diffs)
