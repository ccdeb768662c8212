"""Scheduling: a dead destination never holds up the others (SPEC S3).

A "blackhole" MX accepts TCP connections (the kernel does, from the listen
backlog) and never says a word, so each delivery to it hangs until
smtp_helo_timeout. With default_process_limit = 5 agent slots and the per-destination
limit at 2, ten messages for the dead site occupy two slots at most, and mail for a
live site (Postfix's smtp-sink) goes out at once.
"""
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile

import pytest

from estafeta.testing.instance import free_port, wait_for

SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)


@pytest.fixture
def sink():
    port = free_port()
    d = tempfile.mkdtemp(prefix="sink-")
    out = open(os.path.join(d, "sink.out"), "wb")
    args = ["timeout", "300", SINK] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{port}", "50"]
    p = subprocess.Popen(args, stdout=out, stderr=out)
    wait_for(lambda: _open(port), 10, what="smtp-sink")
    yield port
    # SIGTERM, which timeout(1) passes on to smtp-sink: a SIGKILL would end only the
    # timeout process and leave smtp-sink running, orphaned, for good.
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    out.close()
    shutil.rmtree(d, ignore_errors=True)


def _open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not SINK, reason="smtp-sink not installed (Debian package postfix)")
def test_dead_destination_does_not_hold_up_others(instance_factory, sink):
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)                     # never accept(): connections hang, silent
    hport = hole.getsockname()[1]
    try:
        inst = instance_factory(main={
            "transport_maps": f"inline:{{ dead.example=smtp:[127.0.0.1]:{hport}, "
                              f"live.example=smtp:[127.0.0.1]:{sink} }}",
            "default_process_limit": "5",
            "default_destination_concurrency_limit": "2",
            "smtp_helo_timeout": "120s", "smtp_connect_timeout": "120s"})
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            for i in range(10):
                s.sendmail("a@example.org", [f"u{i}@dead.example"], f"Subject: dead {i}\r\n\r\nx\r\n".encode())
            for i in range(5):
                s.sendmail("a@example.org", [f"u{i}@live.example"], f"Subject: live {i}\r\n\r\nx\r\n".encode())
        wait_for(lambda: inst.log().count("@live.example>, relay=") == 5, 30, what="the live site's mail")
        log = inst.log()
        assert log.count("@live.example>, relay=127.0.0.1") == 5 and "status=sent" in log
        assert "@dead.example>, relay=" not in log, "the dead site answered?"
        assert inst.queue_count("active") == 10, "the dead site's mail should still be in hand"
    finally:
        hole.close()
