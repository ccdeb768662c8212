"""Resource faults against a real instance: full disks, a hostile or broken remote MX,
a dead DNS server. Each must end in a temporary failure (the client or the queue keeps
the message) and in delivery once the fault is gone; none may lose or bounce mail.

Full disks are tmpfs mounts with size= laid over the instance's queue or mail
directory, made and removed by the test: root only (skipped otherwise). The remote MX
is a small asyncio server on loopback, switched between hostile modes and a good one.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import smtplib
import socket
import struct
import subprocess
import threading
import time

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for

from torture_support import ROOT, count, message, tags_in

needs_root = pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root")


# ---------------------------------------------------------------------------
# Small filesystems
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def small_fs(path: str, size: str = "4m"):
    """Lay a tmpfs of `size` over directory `path`, keeping its content and owner."""
    st = os.stat(path)
    saved = path + ".orig"
    os.rename(path, saved)
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={st.st_mode & 0o7777:o},uid={st.st_uid},"
                    f"gid={st.st_gid}", "tmpfs", path], check=True, timeout=20)
    try:
        subprocess.run(["cp", "-a", f"{saved}/.", path], check=True, timeout=20)
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", path], capture_output=True, timeout=20).returncode == 0:
                break
            time.sleep(0.2)                   # a process of the instance still holds a file
        else:
            subprocess.run(["umount", "-l", path], timeout=20)
        os.rmdir(path)
        os.rename(saved, path)


def fill(directory: str) -> str:
    """Use every free byte of the filesystem holding `directory`; returns the filler."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 512, 1):          # big chunks, then the last crumbs
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, f"got {e}, want ENOSPC"
    finally:
        os.close(fd)
    return path


def dotfiles(d: str) -> list[str]:
    return [n for n in os.listdir(d) if n.startswith(".")]


@needs_root
@pytest.mark.klass("fault: queue filesystem full")
def test_queue_disk_full_temp_fails_cleanly_and_recovers():
    inst = Instance().init()
    try:
        with small_fs(inst.queue_dir) as q:
            inst.start()
            filler = fill(q)
            count("faults injected")
            with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
                s.ehlo("torture")
                s.mail("a@example.org")
                s.rcpt("demo@localhost")
                code, text = s.data(message("full-1", "demo@localhost", 200_000))
                assert code in (451, 452), f"got {code} {text!r}, want 452 4.3.1 or 451"
                left = dotfiles(os.path.join(q, "incoming"))
                assert not left, f"half-written files left in incoming: {left}"
                # The session goes on: the next transaction works once there is room.
                os.unlink(filler)
                s.rset()
                s.sendmail("a@example.org", ["demo@localhost"], message("full-2", "demo@localhost"))
            assert not dotfiles(os.path.join(q, "incoming"))
            wait_for(lambda: tags_in(inst.delivered())["full-2"], 30, what="delivery after space returned")
            assert not tags_in(inst.delivered())["full-1"]
            inst.stop()
    finally:
        inst.cleanup()


@needs_root
@pytest.mark.klass("fault: Maildir filesystem full")
def test_maildir_disk_full_defers_then_delivers():
    inst = Instance().init()
    mail = inst.path("var", "mail")
    try:
        with small_fs(mail) as m:
            inst.start()
            filler = fill(m)
            count("faults injected")
            with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
                s.sendmail("a@example.org", ["demo@localhost"], message("mfull", "demo@localhost", 100_000))
            wait_for(lambda: "status=deferred" in inst.log(), 30, what="a deferral")
            assert "status=bounced" not in inst.log(), inst.log()[-2000:]
            assert not tags_in(inst.delivered())["mfull"]
            os.unlink(filler)
            wait_for(lambda: tags_in(inst.delivered())["mfull"], 30, what="delivery after space returned")
            assert "status=bounced" not in inst.log()
            inst.stop()
    finally:
        inst.cleanup()


# ---------------------------------------------------------------------------
# A remote MX that misbehaves
# ---------------------------------------------------------------------------

class HostileMX:
    """An SMTP server on loopback whose behaviour the test switches by `mode`:
    ok (accepts and keeps messages), reset_in_data (RST halfway through DATA),
    endless_greeting (220- lines until 10 MB are sent), huge_line (one 10 MB greeting
    line without an end), endless_ehlo (250- lines after EHLO, up to 10 MB)."""

    LIMIT = 10 * 1024 * 1024

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.mode = "ok"
        self.received: list[bytes] = []
        self.sent_junk = 0
        self.injected = 0
        self.after_inject: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self.session, self.host, self.port))
        ready.set()
        self.loop.run_forever()

    async def junk(self, w: asyncio.StreamWriter, line: bytes) -> None:
        sent = 0
        while sent < self.LIMIT:
            w.write(line)
            sent += len(line)
            self.sent_junk += len(line)
            await w.drain()

    async def session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        mode = self.mode
        try:
            if mode == "endless_greeting":
                await self.junk(w, b"220-" + b"x" * 70 + b"\r\n")
                return
            if mode == "huge_line":
                w.write(b"220 ")
                await self.junk(w, b"y" * 65536)
                return
            w.write(b"220 hostile.example ESMTP\r\n")
            data_mode = False
            body = b""
            while line := await r.readline():
                if data_mode:
                    body += line
                    if mode == "reset_in_data" and len(body) > 2000:
                        sock = w.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        w.transport.abort()              # RST, mid-message
                        return
                    if line == b".\r\n":
                        data_mode = False
                        self.received.append(body)
                        body = b""
                        w.write(b"250 2.0.0 queued\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    if mode == "endless_ehlo":
                        await self.junk(w, b"250-" + b"z" * 70 + b"\r\n")
                        return
                    tls = b"250-STARTTLS\r\n" if mode == "starttls_inject" else b""
                    w.write(b"250-hostile.example\r\n" + tls + b"250 8BITMIME\r\n")
                elif line.upper().startswith(b"STARTTLS") and mode == "starttls_inject":
                    # CVE-2011-0411 class: replies to commands the client has not sent
                    # yet, in the same segment as the 220, as if they came over TLS.
                    self.injected += 1
                    w.write(b"220 2.0.0 Ready to start TLS\r\n250-hostile.example\r\n250 8BITMIME\r\n"
                            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n250 2.0.0 fake queued\r\n")
                    await w.drain()
                    rest = await r.read(65536)          # a TLS ClientHello, or the client leaving
                    self.after_inject.append(rest)
                    return
                elif verb == b"DATA":
                    data_mode = True
                    w.write(b"354 go\r\n")
                elif verb == b"QUIT":
                    w.write(b"221 bye\r\n")
                    await w.drain()
                    return
                else:
                    w.write(b"250 ok\r\n")
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def vm_hwm_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def mx_instance():
    mx = HostileMX()
    inst = Instance(main={"relayhost": f"[127.0.0.1]:{mx.port}", "smtp_connect_timeout": "3s",
                          "smtp_helo_timeout": "10s", "smtp_data_done_timeout": "10s",
                          "smtp_connection_cache_time_limit": "0s"}).init().start()
    yield mx, inst
    inst.cleanup()
    mx.stop()


def _send_remote(inst: Instance, tag: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.sendmail("a@example.org", ["x@remote.example"], message(tag, "x@remote.example", 20_000))


def _status_lines(inst: Instance, rcpt: str = "x@remote.example") -> list[str]:
    return [ln for ln in inst.log().splitlines() if f"to=<{rcpt}>" in ln and "status=" in ln]


@pytest.mark.klass("fault: remote MX resets mid-DATA")
def test_remote_reset_mid_data_defers_then_delivers(mx_instance):
    mx, inst = mx_instance
    mx.mode = "reset_in_data"
    _send_remote(inst, "rst")
    count("faults injected")
    wait_for(lambda: any("status=deferred" in ln for ln in _status_lines(inst)), 30, what="a deferral")
    assert not any("status=bounced" in ln or "status=sent" in ln for ln in _status_lines(inst))
    assert inst.queue_count() == 1, f"got {inst.queue_count()} queued, want 1"
    mx.mode = "ok"
    wait_for(lambda: tags_in_bytes(mx.received)["rst"], 30, what="delivery once the MX behaves")
    wait_for(lambda: inst.queue_count() == 0, 10, what="an empty queue")


def tags_in_bytes(blobs: list[bytes]):
    from collections import Counter
    c: Counter[str] = Counter()
    for b in blobs:
        m = re.search(rb"X-Test-Id: (\S+)", b)
        if m and b"END-OF-" + m.group(1) in b:
            c[m.group(1).decode()] += 1
    return c


@pytest.mark.klass("hostile: oversized / endless SMTP replies (CVE-2020-8794 class)")
def test_endless_or_huge_reply_defers_with_bounded_memory(mx_instance):
    mx, inst = mx_instance
    mx.mode = "ok"                      # a first, normal delivery starts the agents: the baseline
    _send_remote(inst, "base")
    wait_for(lambda: tags_in_bytes(mx.received)["base"], 30, what="the baseline delivery")
    agents = wait_for(lambda: inst.service_pids("smtp"), 10, what="the smtp agents (smtp, relay)")
    base = {pid: vm_hwm_kb(pid) for pid in agents}
    for mode in ("endless_greeting", "huge_line", "endless_ehlo"):
        mx.mode = mode
        seen = len([ln for ln in _status_lines(inst) if "status=deferred" in ln])
        _send_remote(inst, f"evil-{mode}")
        count("faults injected")
        wait_for(lambda: len([ln for ln in _status_lines(inst) if "status=deferred" in ln]) > seen, 60,
                 what=f"a deferral ({mode})")
        line = [ln for ln in _status_lines(inst) if "status=deferred" in ln][seen]
        assert re.search(r"protocol error|longer than|more than \d+ lines|lost connection", line), \
            f"got {line!r}, want a clear reason ({mode})"
        assert sorted(inst.service_pids("smtp")) == sorted(agents), f"an smtp agent died on {mode}"
        grown = max(vm_hwm_kb(pid) - base[pid] for pid in agents)
        assert grown < 8 * 1024, f"smtp agent peak RSS grew by {grown} kB on a {mode} reply, want < 8 MB"
        mx.mode = "ok"
        wait_for(lambda: tags_in_bytes(mx.received)[f"evil-{mode}"], 30, what=f"delivery after {mode}")
    assert mx.sent_junk < HostileMX.LIMIT * 4


@pytest.mark.klass("hostile: STARTTLS response injection (smtp client)")
@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_starttls_response_injection_is_refused(level):
    """A server that sends replies after its 220 to STARTTLS, in the same segment,
    hopes the client reads them as answers over TLS. The smtp agent must notice the
    buffered plaintext, send nothing more in that session (no TLS ClientHello, no
    MAIL), and defer; once the server behaves, the message goes out once."""
    mx = HostileMX()
    inst = Instance(main={"relayhost": f"[127.0.0.1]:{mx.port}", "smtp_tls_security_level": level,
                          "smtp_connection_cache_time_limit": "0s"}).init().start()
    try:
        mx.mode = "starttls_inject"
        _send_remote(inst, "inject")
        count("faults injected")
        wait_for(lambda: any("status=deferred" in ln for ln in _status_lines(inst)), 30, what="a deferral")
        line = [ln for ln in _status_lines(inst) if "status=deferred" in ln][0]
        assert "sent data after the STARTTLS reply" in line, f"got {line!r}"
        assert mx.injected >= 1 and mx.received == [], f"injected {mx.injected}, received {len(mx.received)}"
        assert all(not rest for rest in mx.after_inject), \
            f"the client sent {mx.after_inject[0][:40]!r} after an injected STARTTLS reply, want nothing"
        assert not any("status=sent" in ln for ln in _status_lines(inst))
        if level == "may":              # a server without STARTTLS gets the mail in plaintext
            mx.mode = "ok"
            wait_for(lambda: tags_in_bytes(mx.received)["inject"] == 1, 60, what="delivery once the MX behaves")
    finally:
        inst.cleanup()
        mx.stop()


class SlowDNS:
    """A DNS server on 127.0.0.1 that answers after `delay` seconds (dnspython builds
    the answers): MX of remote.example is mx.remote.example, whose A is 127.0.0.2."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rrset
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            qn = q.question[0]
            name, rdtype = qn.name.to_text().lower(), dns.rdatatype.to_text(qn.rdtype)
            if name == "remote.example." and rdtype == "MX":
                r.answer.append(dns.rrset.from_text(qn.name, 60, "IN", "MX", "10 mx.remote.example."))
            elif name == "mx.remote.example." and rdtype == "A":
                r.answer.append(dns.rrset.from_text(qn.name, 60, "IN", "A", "127.0.0.2"))
            threading.Timer(self.delay, self._reply, (r.to_wire(), peer)).start()

    def _reply(self, wire: bytes, peer) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(wire, peer)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.klass("fault: DNS server slow")
def test_slow_dns_delivers_or_defers_never_bounces():
    """Answers slower than dns_timeout defer the mail (never a bounce, never a guess);
    answers that come in time, however late, deliver it."""
    dns_srv = SlowDNS(delay=4.0)
    mx = HostileMX(host="127.0.0.2")
    inst = Instance(main={"dns_nameservers": f"127.0.0.1:{dns_srv.port}", "dns_timeout": "2s",
                          "smtp_tcp_port": str(mx.port)}).init().start()
    try:
        _send_remote(inst, "slowdns")
        count("faults injected")
        wait_for(lambda: _status_lines(inst), 60, what="a delivery attempt")
        (line, *_) = _status_lines(inst)
        assert "status=deferred" in line, f"got {line!r}, want status=deferred (answers 4 s late, timeout 2 s)"
        assert dns_srv.queries >= 1 and mx.received == []
        dns_srv.delay = 1.5                 # slow, but within dns_timeout
        wait_for(lambda: tags_in_bytes(mx.received)["slowdns"] == 1, 90, what="delivery once DNS answers in time")
        assert not any("status=bounced" in ln for ln in _status_lines(inst))
    finally:
        inst.cleanup()
        mx.stop()
        dns_srv.stop()


@pytest.mark.klass("fault: DNS server down")
def test_dns_down_defers():
    # dns_nameservers = 127.0.0.1:9 (the harness default): nothing answers there.
    inst = Instance(main={"dns_nameservers": "127.0.0.1:9", "dns_timeout": "1s"}).init().start()
    try:
        _send_remote(inst, "nodns")
        count("faults injected")
        wait_for(lambda: _status_lines(inst), 30, what="a delivery attempt")
        (line, *_) = _status_lines(inst)
        assert "status=deferred" in line, f"got {line!r}, want status=deferred"
        assert inst.queue_count() == 1
    finally:
        inst.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: qmgr runs as mail_owner, so a directory mode stops it")
@pytest.mark.klass("fault: qmgr cannot move queue files (ENOSPC/EACCES)")
def test_qmgr_survives_a_queue_it_cannot_move_files_in():
    """When qmgr cannot rename into active/ (a full filesystem needing a new directory
    block; here a mode it may not write), it must keep running and try again: a qmgr
    that dies restarts into the same failure and nothing is ever delivered, which is
    also what would free the space (found by the power-cut torture on a full disk)."""
    inst = Instance().init().start()
    active = os.path.join(inst.queue_dir, "active")
    try:
        wait_for(lambda: inst.service_pids("qmgr"), 10, what="qmgr")
        os.chmod(active, 0o500)
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.sendmail("a@example.org", ["demo@localhost"], b"Subject: stuck\r\n\r\nx\r\n")
        count("faults injected")
        wait_for(lambda: "cannot move to active" in inst.log(), 30, what="qmgr's warning")
        # it keeps failing (each trigger, each scan) without dying
        qmgr = inst.service_pids("qmgr")
        time.sleep(3)
        assert inst.service_pids("qmgr") == qmgr, "qmgr restarted"
        assert "process qmgr pid" not in inst.log(), inst.log()[-2000:]
        assert inst.delivered() == []
        os.chmod(active, 0o700)
        wait_for(lambda: inst.delivered(), 30, what="delivery at the next scan")
    finally:
        os.chmod(active, 0o700)
        inst.cleanup()
