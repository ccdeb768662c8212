"""smtp/lmtp delivery against real peers: Postfix's smtp-sink and dnsmasq on loopback.

The agent is driven directly (SmtpAgent.deliver_message) for the routing cases, and
through a real estafeta instance (smtpd -> queue -> qmgr -> smtp) end to end.
MX hosts live on 127.0.0.2-127.0.0.9 (all of 127/8 is local on Linux), all on one
free port that smtp_tcp_port points at; dnsmasq serves the zones on another.
Peers run under `timeout`, log to files and are stopped by their own pid.
Debian packages: postfix (smtp-sink), dnsmasq-base.
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base
from estafeta.delivery.smtp import SmtpAgent
from estafeta.io.dns import Resolver
from estafeta.testing.instance import Instance, free_port, wait_for

ROOT = os.geteuid() == 0
SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)

needs_sink = pytest.mark.skipif(SINK is None, reason="smtp-sink not installed (Debian package postfix)")
needs_dns = pytest.mark.skipif(DNSMASQ is None or not ROOT,
                               reason="needs root and dnsmasq (Debian package dnsmasq-base)")

ZONES = """\
mx-host=tesis.com,mx1.tesis.com,10
mx-host=tesis.com,mx2.tesis.com,20
host-record=mx1.tesis.com,127.0.0.2
host-record=mx2.tesis.com,127.0.0.3
mx-host=monografia.com,mail.monografia.com,10
host-record=mail.monografia.com,127.0.0.3
host-record=aonly.test,127.0.0.4
mx-host=nullmx.test,.,0
mx-host=badmx.test,nowhere.test,10
mx-host=selfmx.test,mx.selfmx.test,10
host-record=mx.selfmx.test,127.0.0.1
mx-host=backupmx.test,mx1.backupmx.test,10
mx-host=backupmx.test,mx.selfmx.test,20
host-record=mx1.backupmx.test,127.0.0.5
mx-host=noprimary.test,nowhere.test,10
mx-host=noprimary.test,mx.selfmx.test,20
"""


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Peer:
    def __init__(self, argv: list[str], out: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(argv, stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # timeout(1) passes it on
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="smtp-interop-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def peers(workdir):
    started: list[Peer] = []

    class P:
        dir = workdir

        def sink(self, addr: str, port: int, *opts: str, name: str = "sink") -> str:
            dump = os.path.join(workdir, name)
            os.makedirs(dump, exist_ok=True)
            os.chmod(dump, 0o777)
            argv = ["timeout", "120", SINK, *(["-u", "nobody"] if ROOT else []), *opts,
                    "-d", f"{dump}/%M.", f"{addr}:{port}" if not addr.startswith("unix:") else addr, "100"]
            started.append(Peer(argv, os.path.join(workdir, f"{name}.out")))
            if addr.startswith("unix:"):
                wait_for(lambda: os.path.exists(addr[5:]), 10, what=f"smtp-sink on {addr}")
            else:
                wait_for(lambda: port_open(addr, port), 10, what=f"smtp-sink on {addr}:{port}")
            return dump

        def stop(self, which: int = -1) -> None:
            started[which].stop()

        def dns(self) -> int:
            port = free_port()
            conf = os.path.join(workdir, "dnsmasq.conf")
            with open(conf, "w") as f:
                f.write(f"no-resolv\nno-hosts\nlisten-address=127.0.0.1\nbind-interfaces\nport={port}\n"
                        "local=/test/\nlocal=/tesis.com/\nlocal=/monografia.com/\n" + ZONES)
            argv = ["timeout", "300", DNSMASQ, "--keep-in-foreground", f"--conf-file={conf}",
                    f"--pid-file={workdir}/dnsmasq.pid", f"--log-facility={workdir}/dnsmasq.log", "--user=root"]
            started.append(Peer(argv, os.path.join(workdir, "dnsmasq.out")))
            wait_for(lambda: _dns_up(port), 10, what="dnsmasq")
            return port

    yield P()
    for p in reversed(started):
        p.stop()


def _dns_up(port: int) -> bool:
    try:
        r = Resolver([("127.0.0.1", port)], timeout=0.5)
        return bool(asyncio.run(r.mx("tesis.com")))
    except Exception:
        return False


def cfg(**kw: object) -> MainConfig:
    base_settings = {"myhostname": "client.example.org", "smtp_connect_timeout": "5s",
                     "smtp_helo_timeout": "10s", "inet_protocols": "ipv4"}
    base_settings.update({k: str(v) for k, v in kw.items()})
    return MainConfig.parse("".join(f"{k} = {v}\n" for k, v in base_settings.items()))


MESSAGE = (b"From: a@example.org\nTo: b@tesis.com\nSubject: interop\n\n"
           b"line one\n.starts with a dot\n..two dots\n.\n8-bit: \xc3\xb1and\xc3\xba\n")


def request(nexthop: str, *rcpts: str, transport: str = "smtp", qid: str = "4ABCDEF") -> base.DeliveryRequest:
    return base.DeliveryRequest(qid, "/nonexistent", 0, "a@example.org", time.time(), transport, nexthop,
                                [base.RecipientRequest(r) for r in rcpts])


def deliver(agent: SmtpAgent, req: base.DeliveryRequest, message: bytes = MESSAGE) -> list[base.RecipientResult]:
    async def go():
        try:
            return await agent.deliver_message(req, message)
        finally:
            await agent.close()
    return asyncio.run(go())


def dumped(d: str) -> list[bytes]:
    return [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(d, "*")))]


def body_of(dump: bytes) -> bytes:
    """smtp-sink's own headers end with its three-line Received:; the message follows."""
    head, _, rest = dump.partition(b"Received: from ")
    return rest.split(b"\n", 3)[3]


# ---------------------------------------------------------------------------
# The agent against smtp-sink
# ---------------------------------------------------------------------------

@needs_sink
def test_relayhost_literal_delivers_byte_for_byte(peers):
    port = free_port()
    d = peers.sink("127.0.0.1", port)
    res = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com", "c@tesis.com"))
    assert [r.status for r in res] == ["sent", "sent"], f"got {res}"
    assert res[0].relay == f"127.0.0.1[127.0.0.1]:{port}" and res[0].reason.startswith("250 2.0.0")
    wait_for(lambda: dumped(d), 5, what="dump")
    (got,) = dumped(d)
    assert b"X-Rcpt-Args: <b@tesis.com>" in got and b"X-Rcpt-Args: <c@tesis.com>" in got
    assert b"X-Mail-Args: <a@example.org> BODY=8BITMIME" in got   # smtp-sink offers no SIZE
    assert b"X-Helo-Args: client.example.org" in got
    # smtp-sink stores what it received, unstuffed, with LF endings.
    want = MESSAGE
    assert body_of(got).rstrip(b"\n") == want.rstrip(b"\n"), f"got {body_of(got)!r}, want {want!r}"


@needs_sink
def test_connection_reuse_one_session_for_many_messages(peers):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-n", "1")   # smtp-sink exits after one session
    agent = SmtpAgent(cfg(smtp_connection_cache_time_limit="5s"))

    async def go():
        out = []
        for i in range(5):
            out += await agent.deliver_message(request(f"[127.0.0.1]:{port}", f"u{i}@tesis.com"), MESSAGE)
        await agent.close()
        return out
    res = asyncio.run(go())
    assert [r.status for r in res] == ["sent"] * 5, f"got {res}"
    wait_for(lambda: len(dumped(d)) == 5, 5, what="5 dumps")


@needs_sink
def test_rcpt_4xx_defers_5xx_bounces(peers):
    p4, p5 = free_port(), free_port()
    peers.sink("127.0.0.1", p4, "-r", "RCPT", name="soft")
    peers.sink("127.0.0.1", p5, "-f", "RCPT", name="hard")
    (r4,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{p4}", "b@tesis.com"))
    (r5,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{p5}", "b@tesis.com"))
    assert (r4.status, r4.dsn) == ("deferred", "4.3.0"), f"got {r4}"
    assert r4.reason == f"host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed (in reply to RCPT TO command)"
    assert (r5.status, r5.dsn) == ("bounced", "5.3.0"), f"got {r5}"
    assert "(in reply to RCPT TO command)" in r5.reason


@needs_sink
def test_greeting_421_and_refused_connection_defer(peers):
    port = free_port()
    peers.sink("127.0.0.1", port, "-Q", "CONNECT")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"))
    assert r.status == "deferred" and "421" in r.reason, f"got {r}"
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{free_port()}", "b@tesis.com"))
    assert (r.status, r.dsn) == ("deferred", "4.4.1") and "Connection refused" in r.reason, f"got {r}"


@needs_sink
def test_lost_connection_after_data_defers(peers):
    port = free_port()
    peers.sink("127.0.0.1", port, "-q", ".")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"))
    assert r.status == "deferred" and "lost connection" in r.reason, f"got {r}"


@needs_sink
def test_lmtp_over_unix_socket(peers):
    path = os.path.join(peers.dir, "lmtp.sock")
    d = peers.sink(f"unix:{path}", 0, "-L", name="lmtp")
    res = deliver(SmtpAgent(cfg(), lmtp=True), request(f"unix:{path}", "x@tesis.com", "y@tesis.com", transport="lmtp"))
    assert [r.status for r in res] == ["sent", "sent"], f"got {res}"
    assert res[0].relay == f"client.example.org[{path}]"
    wait_for(lambda: dumped(d), 5, what="dump")
    assert b"X-Client-Proto: LMTP" in dumped(d)[0]


# ---------------------------------------------------------------------------
# Mixed per-recipient results: smtp-sink answers all recipients alike, so a
# small asyncio server stands in here.
# ---------------------------------------------------------------------------

async def _mixed_server(reader, writer):
    writer.write(b"220 mixed ESMTP\r\n")
    while line := await reader.readline():
        cmd = line.upper()
        if cmd.startswith(b"EHLO"):
            writer.write(b"250-mixed\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
        elif cmd.startswith(b"RCPT"):
            writer.write(b"250 2.1.5 Ok\r\n" if b"<ok" in line else
                         b"450 4.2.0 <soft@x>: Recipient address rejected: Greylisted\r\n" if b"<soft" in line else
                         b"550 5.1.1 <hard@x>: Recipient address rejected: User unknown\r\n")
        elif cmd.startswith(b"DATA"):
            writer.write(b"354 go\r\n")
            while (await reader.readline()) != b".\r\n":
                pass
            writer.write(b"250 2.0.0 Ok: queued as MIXED1\r\n")
        elif cmd.startswith(b"QUIT"):
            writer.write(b"221 2.0.0 Bye\r\n")
            break
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
        await writer.drain()
    writer.close()


def test_mixed_per_recipient_results():
    async def go():
        server = await asyncio.start_server(_mixed_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        agent = SmtpAgent(cfg())
        try:
            return await agent.deliver_message(
                request(f"[127.0.0.1]:{port}", "ok@x", "soft@x", "hard@x", "ok2@x"), MESSAGE)
        finally:
            await agent.close()
            server.close()
    res = asyncio.run(go())
    got = [(r.address, r.status, r.dsn) for r in res]
    assert got == [("ok@x", "sent", "2.0.0"), ("soft@x", "deferred", "4.2.0"), ("hard@x", "bounced", "5.1.1"),
                   ("ok2@x", "sent", "2.0.0")], f"got {got}"
    assert res[0].reason == "250 2.0.0 Ok: queued as MIXED1"
    assert res[2].reason.startswith("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <hard@x>")


# ---------------------------------------------------------------------------
# MX routing through a real DNS server
# ---------------------------------------------------------------------------

@needs_sink
@needs_dns
def test_mx_failover_first_mx_down(peers):
    dns_port = peers.dns()
    port = free_port()
    d = peers.sink("127.0.0.3", port)         # mx2 (pref 20) is up, mx1 (pref 10) is down
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", smtp_tcp_port=port))
    (r,) = deliver(agent, request("tesis.com", "b@tesis.com"))
    assert r.status == "sent" and r.relay == f"mx2.tesis.com[127.0.0.3]:{port}", f"got {r}"
    wait_for(lambda: dumped(d), 5, what="dump")


@needs_sink
@needs_dns
def test_mx_preference_order(peers):
    dns_port = peers.dns()
    port = free_port()
    d1 = peers.sink("127.0.0.2", port, name="mx1")
    d2 = peers.sink("127.0.0.3", port, name="mx2")
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", smtp_tcp_port=port))
    for _ in range(3):
        (r,) = deliver(agent, request("tesis.com", "b@tesis.com"))
        assert r.relay == f"mx1.tesis.com[127.0.0.2]:{port}", f"got {r}"
    wait_for(lambda: len(dumped(d1)) == 3, 5, what="3 dumps at mx1")
    assert dumped(d2) == []


@needs_sink
@needs_dns
def test_no_mx_uses_a_record(peers):
    dns_port = peers.dns()
    port = free_port()
    peers.sink("127.0.0.4", port)
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}", smtp_tcp_port=port))
    (r,) = deliver(agent, request("aonly.test", "b@aonly.test"))
    assert r.status == "sent" and r.relay == f"aonly.test[127.0.0.4]:{port}", f"got {r}"


@needs_dns
def test_null_mx_and_nxdomain_bounce_unresolvable_mx_defers(peers):
    dns_port = peers.dns()
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}"))
    (r,) = deliver(agent, request("nullmx.test", "b@nullmx.test"))
    assert (r.status, r.dsn) == ("bounced", "5.1.10") and "nullMX" in r.reason, f"got {r}"
    (r,) = deliver(SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}")), request("nosuch.test", "b@nosuch.test"))
    assert (r.status, r.dsn) == ("bounced", "5.4.4") and "Host not found" in r.reason, f"got {r}"
    (r,) = deliver(SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{dns_port}")), request("badmx.test", "b@badmx.test"))
    assert r.status == "deferred", f"got {r}"


def test_dns_server_down_defers():
    agent = SmtpAgent(cfg(dns_nameservers=f"127.0.0.1:{free_port()}", dns_timeout="1s"))
    (r,) = deliver(agent, request("tesis.com", "b@tesis.com"))
    assert (r.status, r.dsn) == ("deferred", "4.4.3"), f"got {r}"


# ---------------------------------------------------------------------------
# End to end: smtpd -> queue -> qmgr -> smtp -> smtp-sink
# ---------------------------------------------------------------------------

def send(inst: Instance, rcpts: list[str], body: bytes = b"Subject: e2e\r\n\r\nhello\r\n.dot\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.sendmail("alice@localhost", rcpts, body)


@pytest.fixture
def instances():
    made: list[Instance] = []

    def make(main: dict[str, str]) -> Instance:
        inst = Instance(main={"inet_protocols": "ipv4", **main}).init()
        made.append(inst)
        inst.start()
        return inst
    yield make
    for i in made:
        i.cleanup()


@needs_sink
def test_e2e_relayhost(peers, instances):
    port = free_port()
    d = peers.sink("127.0.0.1", port)
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    send(inst, ["bob@tesis.com", "carol@monografia.com"])
    wait_for(lambda: dumped(d), 20, what="relay delivery")
    wait_for(lambda: inst.queue_count() == 0, 20, what="empty queue")
    log = inst.log()
    assert f"relay=127.0.0.1[127.0.0.1]:{port}" in log and "status=sent (250 2.0.0 Ok" in log, log
    assert b"\n.dot\n" in dumped(d)[0]


@needs_sink
def test_e2e_4xx_deferred_then_delivered(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-r", "RCPT", name="soft")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    send(inst, ["bob@tesis.com"])
    wait_for(lambda: "status=deferred" in inst.log(), 20, what="deferral")
    wait_for(lambda: "said: 450 4.3.0 Error: command failed (in reply to RCPT TO command)" in inst.log(), 20, what="log line: " + "said: 450 4.3.0 Error: command failed (in reply to RCPT TO command)"[:60])
    peers.stop()
    wait_for(lambda: not port_open("127.0.0.1", port), 10, what="soft sink gone")
    d = peers.sink("127.0.0.1", port, name="good")
    wait_for(lambda: dumped(d), 30, what="delivery after the sink came back")
    wait_for(lambda: inst.queue_count() == 0, 20, what="empty queue")
    wait_for(lambda: "status=sent" in inst.log(), 20, what="log line: " + "status=sent"[:60])


@needs_sink
def test_e2e_5xx_bounced(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    send(inst, ["bob@tesis.com"])
    wait_for(lambda: "status=bounced" in inst.log(), 20, what="bounce")
    wait_for(lambda: "said: 500 5.3.0 Error: command failed (in reply to RCPT TO command)" in inst.log(), 20, what="log line: " + "said: 500 5.3.0 Error: command failed (in reply to RCPT TO command)"[:60])


@needs_sink
@needs_dns
def test_e2e_mx_routing(peers, instances):
    dns_port = peers.dns()
    port = free_port()
    d = peers.sink("127.0.0.3", port)
    inst = instances({"dns_nameservers": f"127.0.0.1:{dns_port}", "smtp_tcp_port": str(port)})
    send(inst, ["bob@tesis.com", "carol@monografia.com"])
    wait_for(lambda: len(dumped(d)) == 2, 30, what="two deliveries via MX")
    # The sink has the messages a moment before the agent logs its result.
    want = [f"to=<bob@tesis.com>, relay=mx2.tesis.com[127.0.0.3]:{port}",
            f"to=<carol@monografia.com>, relay=mail.monografia.com[127.0.0.3]:{port}"]
    wait_for(lambda: all(w in inst.log() for w in want), 10, what="both delivery log lines")


# ---------------------------------------------------------------------------
# STARTTLS (smtp-sink has no TLS): a small asyncio server with a certificate
# made by Debian's openssl.
# ---------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")


@pytest.fixture
def cert(workdir):
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    key, crt = os.path.join(workdir, "key.pem"), os.path.join(workdir, "cert.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, crt


def tls_server(key: str, crt: str, offer: bool, seen: dict):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)

    async def handle(reader, writer):
        writer.write(b"220 tls ESMTP\r\n")
        while line := await reader.readline():
            cmd = line.upper()
            if cmd.startswith(b"EHLO"):
                tls = writer.get_extra_info("ssl_object") is not None
                writer.write(b"250-tls\r\n250-PIPELINING\r\n" + (b"250-STARTTLS\r\n" if offer and not tls else b"")
                             + b"250 8BITMIME\r\n")
            elif cmd.startswith(b"STARTTLS"):
                writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.drain()
                await writer.start_tls(ctx)
                continue
            elif cmd.startswith(b"DATA"):
                writer.write(b"354 go\r\n")
                while (await reader.readline()) != b".\r\n":
                    pass
                seen["tls"] = writer.get_extra_info("ssl_object") is not None
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif cmd.startswith(b"QUIT"):
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
        writer.close()
    return handle


def run_tls(cert, offer: bool, **settings) -> tuple[base.RecipientResult, dict]:
    seen: dict = {}

    async def go():
        server = await asyncio.start_server(tls_server(*cert, offer, seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        agent = SmtpAgent(cfg(**settings))
        try:
            return await agent.deliver_message(request(f"[127.0.0.1]:{port}", "b@x"), MESSAGE)
        finally:
            await agent.close()
            server.close()
    (r,) = asyncio.run(go())
    return r, seen


def test_starttls_may_encrypts_when_offered(cert):
    r, seen = run_tls(cert, True, smtp_tls_security_level="may")
    assert r.status == "sent" and seen == {"tls": True}, f"got {r}, {seen}"


def test_starttls_may_stays_plain_when_not_offered(cert):
    r, seen = run_tls(cert, False, smtp_tls_security_level="may")
    assert r.status == "sent" and seen == {"tls": False}, f"got {r}, {seen}"


def test_starttls_encrypt_defers_when_not_offered(cert):
    r, seen = run_tls(cert, False, smtp_tls_security_level="encrypt")
    assert (r.status, r.dsn) == ("deferred", "4.7.4") and "TLS is required" in r.reason, f"got {r}"
    assert seen == {}


def test_starttls_verify_with_ca_file(cert):
    r, seen = run_tls(cert, True, smtp_tls_security_level="verify", smtp_tls_CAfile=cert[1])
    assert r.status == "sent" and seen == {"tls": True}, f"got {r}"


def test_starttls_verify_fails_with_unknown_ca(cert, tmp_path):
    r, seen = run_tls(cert, True, smtp_tls_security_level="verify", smtp_tls_CAfile="/etc/ssl/certs/ca-certificates.crt")
    assert r.status == "deferred" and "TLS handshake" in r.reason and seen == {}, f"got {r}"
