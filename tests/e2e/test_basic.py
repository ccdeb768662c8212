"""End to end: a real instance, real clients (smtplib, swaks), mail read back from Maildir."""
import email
import mailbox
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from estafeta.testing.instance import wait_for


def send(inst, rcpts, body=b"Subject: test\r\n\r\nhello\r\n", sender="alice@example.org"):
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        return s.sendmail(sender, rcpts, body)


def test_smtplib_delivers_to_maildir(instance):
    send(instance, ["demo@localhost"], b"Subject: first\r\nX-Test: 1\r\n\r\nline one\r\n.starts with dot\r\n")
    wait_for(lambda: instance.delivered(), what="delivery")
    box = mailbox.Maildir(instance.maildir(), create=False)
    msgs = list(box)
    assert len(msgs) == 1, f"got {len(msgs)} messages, want 1"
    m = msgs[0]
    assert m["Subject"] == "first"
    assert m["Delivered-To"] == "demo@localhost"
    assert m["Return-Path"] == "<alice@example.org>"
    assert m["Message-Id"] and m["Date"] and m["Received"]
    assert m.get_payload() == "line one\n.starts with dot\n", f"got {m.get_payload()!r}"
    # The Maildir has the message a moment before the agent and qmgr log about it.
    wait_for(lambda: "status=sent (delivered to maildir)" in instance.log() and ": removed" in instance.log(),
             what="delivery and removal logged")
    wait_for(lambda: instance.queue_count() == 0, what="empty queue")


def test_unknown_user_and_relay_refused(instance_factory):
    inst = instance_factory(main={"mynetworks": "127.0.0.2/32"})
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("a@example.org")
        code, msg = s.rcpt("nobody@localhost")
        assert (code, msg[:5]) == (550, b"5.1.1"), f"got {code} {msg!r}, want 550 5.1.1"
        code, msg = s.rcpt("someone@remote.example")
        # Postfix >= 2.10 default smtpd_relay_restrictions ends in defer_unauth_destination: 454
        assert (code, msg[:5]) == (454, b"4.7.1"), f"got {code} {msg!r}, want 454 4.7.1"
        assert b"Relay access denied" in msg
        code, _ = s.rcpt("demo@localhost")
        assert code == 250
    wait_for(lambda: "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 <someone@remote.example>: Relay access denied" in inst.log(), 20, what="log line: " + "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 <someone@remote.example>: Relay access denied"[:60])


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed (Debian package swaks; make test installs it as root: tools/install-peers)")
def test_swaks(instance):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{instance.port}", "--to", "demo@localhost",
                        "--from", "swaks@example.org", "--header", "Subject: via swaks", "--body", "swaks body"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: queued as" in r.stdout
    wait_for(lambda: instance.delivered(), what="delivery")
    m = email.message_from_bytes(open(instance.delivered()[0], "rb").read())
    assert m["Subject"] == "via swaks"


def raw_session(port, chunks, read_until_close=False, timeout=10):
    """Send raw byte chunks, return everything the server said."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = s.recv(4096)
    for c in chunks:
        s.sendall(c)
        time.sleep(0.05)
    s.shutdown(socket.SHUT_WR) if read_until_close else None
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if not read_until_close and out.endswith(b"\r\n") and len(chunks) and out.count(b"\r\n") > len(chunks):
                break
    except socket.timeout:
        pass
    s.close()
    return out.decode("latin-1")


def test_malformed_input_gets_right_replies_and_server_keeps_serving(instance):
    p = instance.port
    out = raw_session(p, [b"MAIL FROM:<a@b>\r\n", b"QUIT\r\n"], read_until_close=True)
    assert "503 5.5.1 Error: send HELO/EHLO first" in out, out
    out = raw_session(p, [b"EHLO x\r\n", b"RCPT TO:<demo@localhost>\r\n", b"QUIT\r\n"], read_until_close=True)
    assert "503 5.5.1 Error: need MAIL command" in out, out
    out = raw_session(p, [b"EHLO x\r\n", b"FOO BAR\r\n", b"QUIT\r\n"], read_until_close=True)
    assert "500 5.5.2 Error: command not recognized" in out, out
    out = raw_session(p, [b"EHLO x\r\n", b"NOOP " + b"x" * 100_000 + b"\r\n", b"QUIT\r\n"], read_until_close=True)
    assert "500 5.5.2 Error: line too long" in out, out
    out = raw_session(p, [b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n",
                          b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n", b"QUIT\r\n"], read_until_close=True)
    assert "550 5.5.2" in out and "queued as" not in out, out
    # Smuggling: "\n.\n" does not end the data; only CRLF.CRLF does, and the message is refused.
    out = raw_session(p, [b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n",
                          b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n", b"QUIT\r\n"],
                      read_until_close=True)
    assert "queued as" not in out, out
    # After all that, a normal client still gets served.
    send(instance, ["demo@localhost"])
    wait_for(lambda: len(instance.delivered()) == 1, what="delivery")
    time.sleep(0.5)
    assert len(instance.delivered()) == 1, "a refused message was delivered"


def test_data_over_size_limit_refused(instance_factory):
    inst = instance_factory(main={"message_size_limit": "2000"})
    # smtplib announces SIZE=, so the refusal comes at MAIL (RFC 1870 6.1) ...
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("a@example.org", ["demo@localhost"], b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n")
        assert e.value.smtp_code == 552
    # ... and without SIZE= at the end of data.
    out = raw_session(inst.port, [b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n",
                                  b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n.\r\n", b"QUIT\r\n"],
                      read_until_close=True)
    assert "552 5.3.4" in out and "queued as" not in out, out
    assert inst.queue_count() == 0


def test_bad_config_refuses_to_start(instance_factory):
    inst = instance_factory(start=False)
    with open(inst.path("main.cf"), "a") as f:
        f.write("message_size_limit = ten\n")
    r = inst.cli("start", check=False)
    assert r.returncode != 0
    line = len(open(inst.path("main.cf")).read().splitlines())
    assert f"main.cf, line {line}:" in r.stderr and "message_size_limit" in r.stderr, r.stderr
    assert not inst.master_pid()
    with open(inst.path("master.cf"), "a") as f:
        f.write("bogus inet n - n - - smtpd\n")
    inst.cli("config", "-e", "message_size_limit=1000")
    r = inst.cli("start", check=False)
    assert r.returncode != 0 and "master.cf, line" in r.stderr, r.stderr


def test_master_restarts_killed_service_and_reloads(instance):
    old = instance.service_pids("qmgr")
    assert len(old) == 1
    os.kill(old[0], signal.SIGKILL)
    new = wait_for(lambda: [p for p in instance.service_pids("qmgr") if p not in old], what="qmgr restart")
    assert new
    wait_for(lambda: f"process qmgr pid {old[0]} killed by signal 9" in instance.log(), 20, what="log line: " + f"process qmgr pid {old[0]} killed by signal 9"[:60])
    # reload: a new banner takes effect for new connections; mail keeps flowing.
    instance.cli("config", "-e", "smtpd_banner=$myhostname ESMTP reloaded")
    smtpd_before = set(instance.service_pids("smtpd"))
    instance.cli("reload")

    def banner():
        try:
            with socket.create_connection(("127.0.0.1", instance.port), timeout=5) as s:
                return s.recv(512)
        except OSError:            # new workers still starting on a loaded machine
            return b""
    wait_for(lambda: b"reloaded" in banner(), 60, what="new banner")
    wait_for(lambda: not (set(instance.service_pids("smtpd")) & smtpd_before), 60, what="old smtpd gone")
    send(instance, ["demo@localhost"])
    wait_for(lambda: instance.delivered(), what="delivery after reload")


def test_status_stop(instance):
    r = instance.cli("status")
    assert "is running" in r.stdout
    instance.stop()
    r = instance.cli("status", check=False)
    assert r.returncode == 1 and "not running" in r.stdout
    assert instance.all_pids() == [], "processes left after stop"


def test_expired_message_bounces_to_sender(instance_factory):
    # A transport that no service provides defers ("mail transport unavailable");
    # with maximal_queue_lifetime = 0 that single attempt bounces.
    inst = instance_factory(main={"maximal_queue_lifetime": "0", "default_transport": "nosuch"})
    send(inst, ["far@remote.example"], sender="demo@localhost")
    wait_for(lambda: inst.delivered(), what="bounce notice")
    m = email.message_from_bytes(open(inst.delivered()[0], "rb").read())
    assert m["Subject"] == "Undelivered Mail Returned to Sender"
    assert "far@remote.example" in m.as_string()
    wait_for(lambda: "status=expired, returned to sender" in inst.log(), 20, what="log line: " + "status=expired, returned to sender"[:60])
    wait_for(lambda: inst.queue_count() == 0, what="empty queue")


def test_deferred_then_delivered_after_transport_appears(instance_factory):
    # No virtual service at first: local mail defers, then a reload adds it back and
    # the deferred message goes out on the next queue run (backoff 1s here).
    inst = instance_factory(start=False)
    mc = inst.path("master.cf")
    text = open(mc).read()
    open(mc, "w").write("\n".join(l for l in text.splitlines() if not l.startswith("virtual ")) + "\n")
    r = inst.cli("start", check=False)
    assert r.returncode == 0, r.stderr
    inst.running = True
    wait_for(inst.accepting, what="port")
    send(inst, ["demo@localhost"])
    wait_for(lambda: inst.queue_count("deferred") == 1, what="deferred")
    wait_for(lambda: "status=deferred (mail transport unavailable)" in inst.log(), 20, what="log line: " + "status=deferred (mail transport unavailable)"[:60])
    assert os.path.exists(os.path.join(inst.queue_dir, "defer", os.listdir(os.path.join(inst.queue_dir, "deferred"))[0]))
    open(mc, "w").write(text)
    inst.cli("reload")
    wait_for(lambda: inst.delivered(), timeout=30, what="delivery after retry")
    wait_for(lambda: inst.queue_count() == 0, what="empty queue")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks that services drop to mail_owner")
def test_privileges_as_root(instance):
    import pwd
    owner = pwd.getpwnam("estafeta").pw_uid
    master = instance.master_pid()
    assert instance.uid_of(master) == 0
    # Delivery agents start on demand: one message brings the virtual agent up.
    send(instance, ["demo@localhost"])
    wait_for(lambda: instance.delivered(), what="delivery")
    # A child starts as root and drops once its code is loaded; give it that moment.
    for cmd in ("smtpd", "qmgr", "virtual"):
        pids = instance.service_pids(cmd)
        assert pids, f"no {cmd} process"
        for pid in pids:
            try:
                wait_for(lambda: instance.uid_of(pid) == owner, timeout=10, what=f"{cmd} drop")
            except TimeoutError:
                pytest.fail(f"{cmd} pid {pid} runs as uid {instance.uid_of(pid)}, want {owner}")
    st = os.stat(os.path.join(instance.queue_dir, "incoming"))
    assert st.st_uid == owner and st.st_mode & 0o077 == 0


def test_null_sender_mail_expires_after_bounce_queue_lifetime(instance_factory):
    # maximal_queue_lifetime is long; bounce_queue_lifetime = 0 gives mail from <>
    # (notices) a single attempt: it is dropped (no notice to the null sender).
    inst = instance_factory(main={"maximal_queue_lifetime": "5d", "bounce_queue_lifetime": "0",
                                  "default_transport": "nosuch"})
    send(inst, ["far@remote.example"], sender="")
    send(inst, ["far2@remote.example"], sender="alice@example.org")
    wait_for(lambda: "from=<>, status=expired" in inst.log(), what="null-sender expiry")
    wait_for(lambda: inst.queue_count("deferred") == 1, what="the other message still deferred")


def test_maxproc_bounds_sessions_across_workers(instance_factory):
    # maxproc 3 with 2 smtpd workers (they share one session count): with 3 sessions
    # in hand, a 4th client waits in the listen queue, unanswered, whichever worker
    # would take it (Postfix: "new clients may experience noticeable delays"); it gets
    # its banner as soon as a session ends.
    inst = instance_factory(main={"smtpd_worker_count": "2"}, start=False)
    mc = inst.path("master.cf")
    text = open(mc).read()
    import re as _re
    open(mc, "w").write(_re.sub(r"^(127\.0\.0\.1:\d+\s+inet\s+n\s+-\s+n\s+-\s+)-", r"\g<1>3", text, flags=_re.M))
    inst.start()
    wait_for(lambda: len(inst.service_pids("smtpd")) == 2, what="two smtpd workers")
    held = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", inst.port), timeout=10)
        assert s.recv(512).startswith(b"220")
        held.append(s)
    waiting = [socket.create_connection(("127.0.0.1", inst.port), timeout=10) for _ in range(2)]
    try:
        for s in waiting:
            s.settimeout(1.5)
            with pytest.raises(TimeoutError):
                got = s.recv(512)
                raise AssertionError(f"a session over maxproc was served: {got!r}")
        held.pop(0).close()                 # one slot frees: exactly one waiting client is served
        waiting[0].settimeout(10)
        waiting[1].settimeout(10)
        first = wait_for(lambda: _poll_banner(waiting), 10, what="a waiting client's banner")
        assert first.startswith(b"220"), first
        assert wait_for(lambda: 'has reached its process limit "3"' in inst.log(), 10, what="the limit warning")
    finally:
        for s in held + waiting:
            s.close()
    wait_for(lambda: _banner(inst.port).startswith(b"220"), what="room again after sessions end")


def _poll_banner(socks):
    import select
    ready, _, _ = select.select(socks, [], [], 0.2)
    return ready[0].recv(512) if ready else None


def _banner(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(512)
    except OSError:
        return b""


def test_agents_start_on_demand_and_leave_when_idle(instance_factory):
    inst = instance_factory(main={"max_idle": "2s"})
    assert inst.service_pids("virtual") == [] and inst.service_pids("lmtp") == [], \
        "delivery agents should not run before they are needed"
    send(inst, ["demo@localhost"])
    wait_for(lambda: inst.delivered(), what="delivery (starts the virtual agent)")
    first = wait_for(lambda: inst.service_pids("virtual"), what="virtual agent")
    # qmgr keeps its connection open, so the agent stays while qmgr uses it; a qmgr
    # restart drops the connection and the idle agent leaves after max_idle.
    os.kill(inst.service_pids("qmgr")[0], signal.SIGKILL)
    wait_for(lambda: not inst.service_pids("virtual"), 30, what="the idle agent to exit")
    send(inst, ["demo@localhost"])
    wait_for(lambda: len(inst.delivered()) == 2, 30, what="second delivery (agent started again)")
    assert inst.service_pids("virtual") and inst.service_pids("virtual") != first


def _reply(sock) -> tuple[bytes, float]:
    """One reply (all its lines) and the seconds it took to come."""
    t0, buf = time.monotonic(), b""
    while not re.search(rb"(^|\n)\d{3} [^\n]*\n$", buf):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf, time.monotonic() - t0


def test_error_and_junk_limits_slow_down_then_disconnect(instance_factory):
    inst = instance_factory(main={"smtpd_soft_error_limit": "2", "smtpd_hard_error_limit": "4",
                                  "smtpd_error_sleep_time": "1s", "smtpd_junk_command_limit": "3"})
    s = socket.create_connection(("127.0.0.1", inst.port), timeout=30)
    _reply(s)
    took = []
    for cmd in (b"EHLO x", b"NOOP", b"NOOP", b"NOOP",   # within the junk limit: no error
                b"NOOP",                                # junk 4: error 1
                b"FOO",                                 # error 2: the soft limit
                b"NOOP",                                # slowed; error 3
                b"BAR"):                                # slowed; error 4
        s.sendall(cmd + b"\r\n")
        reply, seconds = _reply(s)
        took.append((cmd, reply[:3], seconds))
    assert [r for _, r, _ in took] == [b"250"] * 5 + [b"500", b"250", b"500"], took
    assert all(sec < 0.9 for _, _, sec in took[:6]), took
    assert all(sec >= 0.9 for _, _, sec in took[6:]), took
    last, seconds = _reply(s)        # the hard limit: 421 (also slowed) and the end
    assert last.startswith(b"421 4.7.0") and seconds >= 0.9, (last, seconds)
    assert s.recv(1) == b""
    s.close()
