"""estafeta and a real Postfix (Debian's) exchanging mail on loopback, both ways.

A private Postfix instance (recipe: ../shared/PEERS.md section 7) receives from
estafeta's smtp agent (relayhost), and sends to estafeta through its own smtp
client. Postfix's reply to an unknown user comes back in our RFC 3464 bounce.
"""
import email
import glob
import shutil
import smtplib
import subprocess

import pytest
from postfix_private import REQUIRES, base_main, private_postfix

from estafeta.testing.instance import Instance, free_port, wait_for
from estafeta.testing.postfix import MASTER_CF

pytestmark = REQUIRES


@pytest.fixture
def postfix():
    with private_postfix("pf-peer-", dirs=("vmail",)) as pf:
        shutil.chown(pf.path("vmail"), "nobody", "nogroup")
        yield _peer(pf)


def _peer(pf):
    """The test's handle on the private Postfix: its directory, port, and start()."""
    T = pf.dir
    port = free_port()
    peer = {"dir": T, "port": port, "relay_to": None}

    def write_config(relay_to):
        main = base_main(T) + f"""myhostname = mx.example.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = example.test
virtual_mailbox_base = {T}/vmail
virtual_mailbox_maps = texthash:{T}/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
relayhost = {relay_to or ''}
default_transport = {'smtp' if relay_to else 'error:no outbound delivery in tests'}
smtp_dns_support_level = disabled
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
"""
        pf.write(main, MASTER_CF.format(port=port))
        with open(pf.path("etc", "vmailbox"), "w") as f:
            f.write("alice@example.test example.test/alice/\n")

    def start(relay_to=None):
        write_config(relay_to)
        pf.start([port])

    peer["start"] = start
    return peer


def test_estafeta_relays_to_postfix_and_gets_its_bounce(postfix):
    postfix["start"]()
    with Instance(main={"relayhost": f"[127.0.0.1]:{postfix['port']}"}) as inst:
        inst.init().start()
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.sendmail("demo@localhost", ["alice@example.test", "nobody@example.test"],
                       b"Subject: to postfix\r\n\r\nline\r\n.dot line\r\n")
        got = wait_for(lambda: glob.glob(f"{postfix['dir']}/vmail/example.test/alice/new/*"), 30,
                       what="delivery into Postfix's Maildir")
        m = email.message_from_bytes(open(got[0], "rb").read())
        assert m["Subject"] == "to postfix"
        assert "by localhost (Estafeta) with ESMTP" in " ".join(m.get_all("Received")[-1].split())
        assert m.get_payload() == "line\n.dot line\n", repr(m.get_payload())
        # Postfix refused nobody@ at RCPT: our bounce carries Postfix's own words.
        wait_for(lambda: inst.delivered(), 30, what="bounce to demo@localhost")
        n = email.message_from_bytes(open(inst.delivered()[0], "rb").read())
        assert n.get_content_type() == "multipart/report"
        report = n.get_payload()[1].as_string()
        assert "Final-Recipient: rfc822; nobody@example.test" in report, report
        assert "Status: 5.1.1" in report and "User unknown in virtual mailbox table" in report, report
        log = inst.log()
        assert f"relay=127.0.0.1[127.0.0.1]:{postfix['port']}" in log and "status=sent" in log


def test_postfix_relays_to_estafeta(postfix):
    with Instance() as inst:
        inst.init().start()
        postfix["start"](relay_to=f"[127.0.0.1]:{inst.port}")
        r = subprocess.run(["/usr/sbin/sendmail", "-C", f"{postfix['dir']}/etc", "-f", "bob@example.test",
                            "demo@localhost"], input=b"Subject: from postfix\n\nhello estafeta\n",
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: inst.delivered(), 60, what="Postfix's message in demo's Maildir")
        m = email.message_from_bytes(open(inst.delivered()[0], "rb").read())
        assert m["Subject"] == "from postfix" and m["Return-Path"] == "<bob@example.test>"
        received = [" ".join(h.split()) for h in m.get_all("Received")]
        assert "by localhost (Estafeta) with ESMTP" in received[0] and "by mx.example.test (Postfix" in received[1], received
