"""LMTP to a real Dovecot (Debian's dovecot-lmtpd), private on loopback (dovecot.py).

1. The lmtp delivery agent (delivery/smtp.py in LMTP mode) over Dovecot's unix socket
   and over TCP: the message lands in the Dovecot Maildir; a user Dovecot does not
   know comes back bounced 5.1.1 with Dovecot's reply.
2. A real estafeta instance with mailbox_transport = lmtp:unix:<Dovecot's socket>: a
   local user's mail (directly, through an alias, with an extension) goes to Dovecot,
   and the lmtp agent logs the delivery (local's deliver_pass, delivery/passalong.py).
3. fallback_transport for a recipient with no passwd entry; without it, 5.1.1.
As root (Dovecot needs it for mail_uid; the instance needs system users).
"""
from __future__ import annotations

import asyncio
import email
import os
import re
import secrets
import shutil
import smtplib
import subprocess
import tempfile
import time

import pytest

import dovecot
from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base
from estafeta.delivery.smtp import SmtpAgent
from estafeta.testing.instance import Instance, wait_for

Dovecot = dovecot.Dovecot
dovecot_server = dovecot.dovecot_server        # the fixture (tests/interop/dovecot.py)

pytestmark = pytest.mark.timeout(180)       # the fixtures skip without root or Dovecot

MSG = b"From: a@example.org\nTo: alice@example.test\nSubject: via lmtp\nMessage-Id: <x1@example.org>\n\nhello\n.dot\n"


def subject_of(raw: bytes) -> str:
    return email.message_from_bytes(raw)["Subject"]


# -- 1. the lmtp agent itself -------------------------------------------------------------

@pytest.fixture
def qdir():
    d = tempfile.mkdtemp(prefix="estafeta-lmtp-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def lmtp_deliver(qdir: str, nexthop: str, rcpts: list[str], message: bytes = MSG) -> list[base.RecipientResult]:
    qf = os.path.join(qdir, "qfile")
    with open(qf, "wb") as f:
        f.write(b"ENVELOPE\n" + message)
    cfg = MainConfig.parse("myhostname = mta.example.test\ninet_interfaces = 127.0.0.1\n"
                           "dns_nameservers = 127.0.0.1:9\ndns_timeout = 1s\n")
    agent = SmtpAgent(cfg, lmtp=True)
    req = base.DeliveryRequest("QLMTP1", qf, 9, "a@example.org", time.time(), "lmtp", nexthop,
                               [base.RecipientRequest(r) for r in rcpts])

    async def run():
        try:
            return await asyncio.wait_for(agent.deliver(req), 60)
        finally:
            await agent.close()
    return asyncio.run(run())


def test_lmtp_agent_unix_socket_to_dovecot(dovecot_server, qdir):
    dove = dovecot_server(["alice@example.test", "bob@example.test"])
    res = lmtp_deliver(qdir, f"unix:{dove.lmtp_socket}", ["alice@example.test", "bob@example.test"])
    assert [(r.status, r.dsn) for r in res] == [("sent", "2.0.0")] * 2, (res, dove.log)
    assert "Saved" in res[0].reason, res[0].reason
    for u in ("alice@example.test", "bob@example.test"):
        msgs = dove.messages(u)
        assert len(msgs) == 1, f"{u}: got {len(msgs)} messages, want 1"
        assert subject_of(msgs[0]) == "via lmtp"
        assert b"\nhello\n.dot\n" in msgs[0].replace(b"\r\n", b"\n"), msgs[0]   # dot-stuffing undone
        assert msgs[0].startswith(b"Return-Path: <a@example.org>\n"), msgs[0][:200]   # Dovecot's own
        assert b" with LMTP" in msgs[0], msgs[0][:300]


def test_lmtp_agent_tcp_to_dovecot_and_unknown_user(dovecot_server, qdir):
    dove = dovecot_server(["carol@example.test"])
    res = lmtp_deliver(qdir, f"inet:127.0.0.1:{dove.lmtp_port}", ["carol@example.test", "nobody@example.test"])
    got = {r.address: (r.status, r.dsn) for r in res}
    assert got == {"carol@example.test": ("sent", "2.0.0"), "nobody@example.test": ("bounced", "5.1.1")}, res
    bounced = [r for r in res if r.status == "bounced"][0]
    assert "550" in bounced.reason and "5.1.1" in bounced.reason, bounced.reason    # Dovecot's reply
    assert len(dove.messages("carol@example.test")) == 1
    assert dove.messages("nobody@example.test") == []


# -- 2 and 3. through a real instance --------------------------------------------------------

@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates system users with useradd")
    tag = secrets.token_hex(3)
    names = {role: f"et{tag}{role}" for role in ("dove", "kept")}
    made = []
    try:
        for n in names.values():
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", n], check=True, capture_output=True, timeout=30)
            made.append(n)
        names["ghost"] = f"et{tag}ghost"          # no passwd entry, known to Dovecot
        names["nobody"] = f"et{tag}nobody"        # known to nobody
        yield names
    finally:
        for n in made:
            subprocess.run(["userdel", "-r", n], capture_output=True, timeout=30)
            for p in (f"/var/mail/{n}",):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


def make_instance(main: dict[str, str], aliases: str) -> Instance:
    i = Instance(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                       "mail_spool_directory": "/var/mail", **main})
    i.init()
    with open(i.path("aliases"), "w") as f:
        f.write(aliases)
    i.cli("config", "-e", f"alias_maps=hash:{i.path('aliases')}", f"alias_database=hash:{i.path('aliases')}")
    r = i.cli("newaliases", check=False)
    assert r.returncode == 0, r.stderr
    i.start()
    return i


def send(inst: Instance, rcpts: list[str], subject: str) -> None:
    body = f"From: alice@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        assert s.sendmail("alice@example.org", rcpts, body) == {}


def subjects(dove: Dovecot, user: str) -> list[str]:
    return [subject_of(m) for m in dove.messages(user)]


def log_lines(inst: Instance, pattern: str) -> list[str]:
    return [ln for ln in inst.log().splitlines() if re.search(pattern, ln)]


@pytest.fixture(scope="module")
def setup_mt(dovecot_server, users):
    dove = dovecot_server([f"{users['dove']}@localhost", f"{users['ghost']}@localhost"])
    inst = make_instance({"mailbox_transport": f"lmtp:unix:{dove.lmtp_socket}"},
                         f"team: {users['dove']}\n")
    yield dove, inst
    inst.cleanup()


def test_mailbox_transport_to_dovecot(setup_mt, users):
    dove, inst = setup_mt
    u = users["dove"]
    send(inst, [f"{u}@localhost"], "direct")
    wait_for(lambda: "direct" in subjects(dove, f"{u}@localhost"), 30, what=f"direct mail in Dovecot\n{inst.log()}")
    wait_for(lambda: inst.queue_count() == 0, 30, what="empty queue")
    assert not os.path.exists(f"/var/mail/{u}"), "the local mailbox was written too"
    msg = dove.messages(f"{u}@localhost")[0]
    assert msg.startswith(b"Return-Path: <alice@example.org>\n") and b" with LMTP" in msg, msg[:300]
    # the lmtp agent logs the delivery (relay= Dovecot's socket), local adds no line of its own
    lines = log_lines(inst, rf"to=<{u}@localhost>.*status=sent")
    assert len(lines) == 1, lines
    assert "/lmtp[" in lines[0] and f"[{dove.lmtp_socket}], delay=" in lines[0], lines[0]
    assert not log_lines(inst, rf"/local\[.*to=<{u}@localhost>"), inst.log()


def test_mailbox_transport_after_alias_and_with_extension(setup_mt, users):
    dove, inst = setup_mt
    u = users["dove"]
    send(inst, ["team@localhost", f"{u}+tag@localhost"], "via alias")
    wait_for(lambda: subjects(dove, f"{u}@localhost").count("via alias") == 2, 30,
             what=f"two copies in Dovecot\n{inst.log()}")
    wait_for(lambda: inst.queue_count() == 0, 30, what="empty queue")
    # the expanded address is handed on, the original recipient logged as orig_to
    assert log_lines(inst, rf"to=<{u}@localhost>, orig_to=<team@localhost>, relay=.*status=sent"), inst.log()
    assert log_lines(inst, rf"to=<{u}\+tag@localhost>.*status=sent"), inst.log()


def test_mailbox_transport_also_for_users_not_in_passwd(setup_mt, users):
    """postconf(5): mailbox_transport applies to local recipients "whether or not they
    are found in the UNIX passwd database"; Dovecot decides, 5.1.1 from its reply."""
    dove, inst = setup_mt
    g, n = users["ghost"], users["nobody"]
    send(inst, [f"{g}@localhost", f"{n}@localhost"], "no passwd")
    wait_for(lambda: "no passwd" in subjects(dove, f"{g}@localhost"), 30, what=f"ghost's mail\n{inst.log()}")
    wait_for(lambda: log_lines(inst, rf"to=<{n}@localhost>.*dsn=5\.1\.1, status=bounced"), 30,
             what=f"bounce from Dovecot\n{inst.log()}")
    [line] = log_lines(inst, rf"to=<{n}@localhost>.*status=bounced")
    assert "/lmtp[" in line, line


def test_fallback_transport_for_unknown_user(dovecot_server, users):
    dove = dovecot_server([f"{users['ghost']}@localhost", f"{users['kept']}@localhost"])
    inst = make_instance({"fallback_transport": f"lmtp:inet:127.0.0.1:{dove.lmtp_port}"}, "")
    try:
        g, k = users["ghost"], users["kept"]
        send(inst, [f"{g}@localhost", f"{k}@localhost"], "fallback")
        wait_for(lambda: "fallback" in subjects(dove, f"{g}@localhost"), 30, what=f"ghost's mail\n{inst.log()}")
        # a user in the passwd database keeps the local mailbox: fallback is for the others
        wait_for(lambda: os.path.exists(f"/var/mail/{k}") and open(f"/var/mail/{k}", "rb").read().endswith(b"\n\n"),
                 30, what="local mbox delivery")
        assert dove.messages(f"{k}@localhost") == []
        wait_for(lambda: inst.queue_count() == 0, 30, what="empty queue")
        [line] = log_lines(inst, rf"to=<{g}@localhost>.*status=sent")
        assert "/lmtp[" in line and f"relay=127.0.0.1[127.0.0.1]:{dove.lmtp_port}" in line, line
    finally:
        inst.cleanup()
