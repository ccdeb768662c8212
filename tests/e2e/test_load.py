"""Load and crash tests against a real instance: smtp-source, and kill -9 during a load."""
import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from estafeta.testing.instance import wait_for

SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
QID_RE = re.compile(rb"with E?SMTP id ([0-9A-F]{21})")


def received_qids(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            m = QID_RE.search(f.read(4096))
        out.append(m.group(1).decode() if m else None)
    return out


@pytest.mark.skipif(not SMTP_SOURCE, reason="smtp-source not installed (Debian package postfix; make test installs it as root: tools/install-peers)")
def test_smtp_source_1000_messages_10_sessions(instance):
    r = subprocess.run([SMTP_SOURCE, "-s", "10", "-m", "1000", "-l", "1024", "-f", "sender@example.org",
                        "-t", "demo@localhost", f"127.0.0.1:{instance.port}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: len(instance.delivered()) >= 1000 and instance.queue_count() == 0, timeout=120,
             what="1000 deliveries")
    files = instance.delivered()
    qids = received_qids(files)
    assert len(files) == 1000, f"got {len(files)} messages, want 1000"
    assert None not in qids and len(set(qids)) == 1000, f"got {len(set(qids))} distinct queue ids, want 1000"


def test_kill9_during_load_loses_nothing(instance):
    """Kill -9 smtpd workers and qmgr at random moments while clients send: every
    message that got 250 must be delivered. Duplicates are counted, not failed:
    a qmgr killed after a delivery and before marking it done delivers it again."""
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors = []
    per_thread, threads_n = 60, 6

    def client(t):
        for i in range(per_thread):
            tag = f"t{t}-m{i}"
            body = f"Subject: {tag}\r\nX-Test-Id: {tag}\r\n\r\nbody {tag}\r\n".encode()
            try:
                with smtplib.SMTP("127.0.0.1", instance.port, timeout=20) as s:
                    s.sendmail("load@example.org", ["demo@localhost"], body)
                with lock:
                    acked.add(tag)
            except (smtplib.SMTPException, OSError) as e:
                errors.append(repr(e))      # no 250: the client knows it failed

    kills = []

    def killer():
        rng = random.Random(7)
        while not stop.is_set():
            time.sleep(rng.uniform(0.2, 0.6))
            victims = instance.service_pids("smtpd") + instance.service_pids("qmgr")
            if victims:
                pid = rng.choice(victims)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

    ts = [threading.Thread(target=client, args=(t,)) for t in range(threads_n)]
    k = threading.Thread(target=killer)
    k.start()
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=240)
    stop.set()
    k.join()
    assert len(kills) >= 3, f"only {len(kills)} kills happened"
    assert len(acked) > per_thread * threads_n // 3, f"too few messages accepted: {len(acked)}; errors: {errors[:5]}"

    def tags():
        found = []
        for p in instance.delivered():
            with open(p, "rb") as f:
                m = re.search(rb"X-Test-Id: (\S+)", f.read())
            if m:
                found.append(m.group(1).decode())
        return found

    wait_for(lambda: acked <= set(tags()) and instance.queue_count() == 0, timeout=120,
             what="every acknowledged message delivered")
    found = tags()
    lost = acked - set(found)
    dups = len(found) - len(set(found))
    print(f"\nkill -9 torture: {len(kills)} kills, {len(acked)} acked, {len(set(found))} delivered, "
          f"{len(lost)} lost, {dups} duplicates, {len(errors)} client-side failures (no 250)")
    assert not lost, f"lost {len(lost)} acknowledged messages: {sorted(lost)[:10]}"
