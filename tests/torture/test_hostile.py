"""Hostile input against real instances: SMTP smuggling, control characters in
envelope parameters, option injection through sendmail -f, and the open-relay battery.

Each class appears as one pass/fail line in the torture table.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from estafeta.testing.instance import free_port, wait_for

from torture_support import count


def session(port: int, data: bytes, linger: float = 1.0) -> bytes:
    """Send `data` in one write (everything pipelined) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.recv(512)                                     # greeting
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + 10
        s.settimeout(linger)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
    return out


def headers(path: str) -> bytes:
    return open(path, "rb").read().split(b"\n\n", 1)[0]


# ---------------------------------------------------------------------------
# SMTP smuggling: a second message hidden behind a non-standard end of data
# ---------------------------------------------------------------------------

SMUGGLE_ENDS = {"LF.LF": b"\n.\n", "CR.CR": b"\r.\r", "LF.CRLF": b"\n.\r\n", "CRLF.LF": b"\r\n.\n",
                "CR.CRLF": b"\r.\r\n", "CRLF.CR": b"\r\n.\r", "LF.CR": b"\n.\r", "NUL.CRLF": b"\r\n\0.\r\n"}


@pytest.mark.klass("hostile: SMTP smuggling")
def test_smuggling_never_makes_two_messages(instance_factory):
    inst = instance_factory()
    for name, end in SMUGGLE_ENDS.items():
        count("faults injected")
        session(inst.port, b"EHLO attacker\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n"
                b"Subject: carrier-" + name.encode() + b"\r\n\r\ncarrier body" + end +
                b"MAIL FROM:<admin@localhost>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n"
                b"Subject: smuggled-" + name.encode() + b"\r\n\r\nsmuggled body\r\n.\r\nQUIT\r\n")
    wait_for(lambda: inst.queue_count() == 0, 30, what="an empty queue")
    time.sleep(0.5)
    files = inst.delivered()
    smuggled = [p for p in files if b"Subject: smuggled" in headers(p)]
    assert not smuggled, f"smuggled messages delivered: {[headers(p)[-200:] for p in smuggled]}"
    assert len(files) <= len(SMUGGLE_ENDS), f"got {len(files)} messages from {len(SMUGGLE_ENDS)} sessions"


# ---------------------------------------------------------------------------
# CR, LF, NUL inside MAIL/RCPT parameters never reach a queue file
# ---------------------------------------------------------------------------

BAD_COMMANDS = [
    b"MAIL FROM:<a@example.org> ENVID=x\0y\r\n", b"MAIL FROM:<a@example.org> ENVID=x\ry\r\n",
    b"MAIL FROM:<a\rS evil@x@example.org>\r\n", b"MAIL FROM:<a@example.org> RET=HDRS\0\r\n",
    b"MAIL FROM:<a@example.org>\rRCPT TO:<root@localhost>\r\n", b"MAIL FROM:<a\0b@example.org>\r\n",
    b"RCPT TO:<demo@localhost> ORCPT=rfc822;x\ry\r\n", b"RCPT TO:<demo@localhost> ORCPT=rfc822;x\0y\r\n",
    b"RCPT TO:<demo@localhost> NOTIFY=NEVER\rR- evil@x\r\n", b"RCPT TO:<demo\r@localhost>\r\n",
    b"RCPT TO:<demo@localhost>\nR- evil@remote.example\r\n", b"RCPT TO:<de\0mo@localhost>\r\n",
]


@pytest.mark.klass("hostile: CR/LF/NUL in envelope parameters")
def test_control_characters_never_reach_a_queue_file(instance_factory):
    # Local mail is retried, not delivered, so every accepted queue file stays to be read.
    inst = instance_factory(main={"local_transport": "retry"})
    for i, bad in enumerate(BAD_COMMANDS):
        count("faults injected")
        mail, rcpt = b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<demo@localhost>\r\n"
        if bad.startswith(b"MAIL"):
            mail = bad
        else:
            rcpt = bad
        session(inst.port, b"EHLO c\r\n" + mail + rcpt + b"DATA\r\n" +
                f"Subject: ctl-{i}\r\n\r\nx\r\n.\r\nQUIT\r\n".encode(), linger=0.5)
    time.sleep(1)
    seen = 0
    for q in ("incoming", "active", "deferred", "hold", "corrupt"):
        d = os.path.join(inst.queue_dir, q)
        for name in os.listdir(d):
            data = open(os.path.join(d, name), "rb").read()
            envelope = data.split(b"\nM\n", 1)[0]
            seen += 1
            for rec in envelope.split(b"\n")[1:]:
                assert b"\r" not in rec and b"\0" not in rec, f"got control character in record {rec!r} of {name}"
                assert rec[:1] in b"TSARM", f"got unexpected record {rec!r} in {name}"
            assert b"evil" not in envelope, f"injected record in {name}: {envelope!r}"
    print(f"\ncontrol characters: {seen} queue files checked")


# ---------------------------------------------------------------------------
# sendmail -f '-X/tmp/x'
# ---------------------------------------------------------------------------

@pytest.mark.klass("hostile: sendmail option injection")
@pytest.mark.parametrize("sender", ["-X/tmp/estafeta-torture-x", "-oQ/tmp/estafeta-torture-x", "a\nb@example.org"])
def test_sendmail_dash_sender_refused(instance_factory, sender):
    inst = instance_factory(start=False)
    sendmail = os.path.join(os.path.dirname(sys.executable), "sendmail")
    r = subprocess.run([sendmail, "-C", inst.root, "-f", sender, "demo@localhost"],
                       input=b"Subject: x\n\nbody\n", capture_output=True, timeout=30)
    count("faults injected")
    assert r.returncode != 0, f"got exit 0 for -f {sender!r}, want a refusal"
    assert not os.path.exists("/tmp/estafeta-torture-x")
    assert not os.listdir(os.path.join(inst.queue_dir, "maildrop")), "a maildrop file was written"


# ---------------------------------------------------------------------------
# The open-relay battery
# ---------------------------------------------------------------------------

RELAY_TESTS = [
    "user@remote.example", "user@REMOTE.EXAMPLE", "user@remote.example.", "user%remote.example@localhost",
    "remote.example!user@localhost", "remote.example!user", '"user@remote.example"@localhost',
    '"user%remote.example"@localhost', "@localhost:user@remote.example", "@remote.example:demo@localhost",
    "user@remote.example@localhost", "user@[1.2.3.4]", "user@[127.0.0.1]", "user%remote.example@[127.0.0.1]",
    "user@[IPv6:::1]", "demo%remote.example@localhost", "user@remote.example%localhost",
    '"user@remote.example"', "user@localhost.remote.example", "user@remote.example\\@localhost",
    "user@remote.example:localhost", "remote.example!demo@localhost",
]


@pytest.mark.klass("hostile: open-relay battery")
def test_open_relay_battery_never_relays(instance_factory):
    sink_port = free_port()        # nothing listens: anything relayed would be logged by smtp
    inst = instance_factory(main={"mynetworks": "192.0.2.0/24", "relayhost": f"[127.0.0.1]:{sink_port}"})
    verdicts = {}
    for addr in RELAY_TESTS:
        count("faults injected")
        out = session(inst.port, f"EHLO relay-tester\r\nMAIL FROM:<>\r\nRCPT TO:<{addr}>\r\nDATA\r\n"
                      f"Subject: relay {addr}\r\n\r\ntest\r\n.\r\nQUIT\r\n".encode(), linger=0.5)
        codes = re.findall(rb"^(\d{3}) ", out, re.M)
        verdicts[addr] = codes[2].decode() if len(codes) > 2 else "?"
    wait_for(lambda: inst.queue_count() == 0, 30, what="an empty queue")
    log = inst.log()
    relayed = [ln for ln in log.splitlines() if re.search(r"estafeta/(smtp|relay)\[", ln)]
    print("\nopen-relay battery (RCPT reply per address):")
    for a, v in verdicts.items():
        print(f"  {v}  {a}")
    assert not relayed, f"relayed: {relayed[:5]}"
    for addr, v in verdicts.items():
        assert v[:1] in ("4", "5") or v == "250", f"got {v!r} for {addr}, want a rejection or local delivery"
    local = b"".join(headers(p) for p in inst.delivered())
    for addr, v in verdicts.items():
        if v == "250":
            assert f"Subject: relay {addr}".encode() in local, f"accepted {addr} was not delivered locally"
