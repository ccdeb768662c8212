"""Privilege separation, checked on a running instance started as root (issue 7, item 4).

Every kind of service is woken (smtpd, cleanup inside it, qmgr, pickup through
sendmail, showq through an ordinary user's mailq, the local, virtual and smtp agents,
retry), then the test lists every process of the instance with its uid: only the
master and the local delivery agent may hold root. The queue is private to
mail_owner: every queue directory is 0700 and owned by it (maildrop 3733 and public
0711 are the documented exceptions), a queue file is 0600, and an ordinary user can
neither list a queue directory nor read a queue file.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import smtplib
import stat
import subprocess
import tempfile

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for

from torture_support import ROOT, SINK, Sink

pytestmark = pytest.mark.skipif(not ROOT or not shutil.which("useradd") or not SINK,
                                reason="needs root, useradd and smtp-sink: checks uids of services and queue modes")

SHARED = {"maildrop": 0o3733, "public": 0o711}
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def user():
    name = f"etpv{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        for p in (f"/var/mail/{name}", f"/var/mail/{name}.lock"):
            if os.path.exists(p):
                os.unlink(p)


def _as(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, timeout=30)


@pytest.mark.klass("privilege: only master and local hold root; the queue is mail_owner's alone")
def test_only_master_and_local_hold_root_and_the_queue_is_private(user):
    work = tempfile.mkdtemp(prefix="torture-priv-")    # not tmp_path: smtp-sink runs as nobody
    os.chmod(work, 0o755)
    port = free_port()
    sink = Sink(work, port, 180)
    inst = Instance(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                          "mail_spool_directory": "/var/mail", "relayhost": f"[127.0.0.1]:{port}",
                          "virtual_mailbox_domains": "virt.example",
                          "virtual_mailbox_maps": "inline:{ box@virt.example=box/Maildir/ }",
                          "transport_maps": "inline:{ later.example=retry: }"})
    try:
        inst.init().start()
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.sendmail("a@example.org", [f"{user}@localhost", "box@virt.example", "x@remote.example",
                                         "y@later.example"],
                       b"Subject: privileges\r\n\r\nthe secret is 4711\r\n")
        r = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "sendmail"), "-C", inst.root,
                            "-f", "root@localhost", "x@remote.example"], input=b"Subject: via pickup\n\nx\n",
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: os.path.exists(f"/var/mail/{user}") and b"4711" in open(f"/var/mail/{user}", "rb").read(),
                 60, what="local delivery to the user's mbox")
        wait_for(lambda: len(sink.files()) >= 2, 60, what="both remote copies at the sink")
        wait_for(lambda: inst.queue_count("deferred") == 1, 60, what="the retry-transport copy deferred")
        wait_for(lambda: inst.delivered("box"), 60, what="the virtual delivery")

        owner = pwd.getpwnam("estafeta")
        master = inst.master_pid()
        procs = {}
        for pid in inst.all_pids():
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except FileNotFoundError:
                continue
            name = "master" if pid == master else (argv[argv.index(b"--") - 1].decode() if b"--" in argv else "?")
            wait_for(lambda: pid not in inst.all_pids() or name in ("master", "local") or inst.uid_of(pid) != 0,
                     10, what=f"{name} ({pid}) to drop root")
            if pid in inst.all_pids():
                procs[pid] = (name, inst.uid_of(pid))
        names = {n for n, _ in procs.values()}
        assert {"master", "smtpd", "qmgr", "pickup", "local", "virtual", "smtp"} <= names, f"got {sorted(names)}"
        root = sorted({n for n, uid in procs.values() if uid == 0})
        assert set(root) <= {"master", "local"}, f"these hold root: {root}"
        for name in ("smtpd", "qmgr", "pickup", "virtual", "smtp"):
            assert all(uid == owner.pw_uid for n, uid in procs.values() if n == name), \
                f"{name} runs as {[uid for n, uid in procs.values() if n == name]}, want {owner.pw_uid}"

        q = inst.queue_dir
        for d in sorted(os.listdir(q)):
            st = os.stat(os.path.join(q, d))
            if not stat.S_ISDIR(st.st_mode):
                continue
            want = SHARED.get(d, 0o700)
            assert st.st_uid == owner.pw_uid, f"{d}/ owned by uid {st.st_uid}, want mail_owner's {owner.pw_uid}"
            assert stat.S_IMODE(st.st_mode) == want, f"{d}/ mode {stat.S_IMODE(st.st_mode):o}, want {want:o}"
        [qid] = os.listdir(os.path.join(q, "deferred"))
        qf = os.path.join(q, "deferred", qid)
        st = os.stat(qf)
        assert st.st_uid == owner.pw_uid and stat.S_IMODE(st.st_mode) & 0o077 == 0, \
            f"queue file uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):o}"
        for argv in (("cat", qf), ("ls", os.path.join(q, "deferred")), ("ls", os.path.join(q, "maildrop")),
                     ("rm", "-f", qf)):
            r = _as(user, *argv)
            assert r.returncode != 0, f"{user} could run {argv}: {r.stdout[:200]!r}"
        assert os.path.exists(qf) and b"4711" in open(qf, "rb").read()
        # An ordinary user's mailq goes through the showq service: envelopes, never content.
        if os.path.exists("/usr/bin/python3"):
            os.chmod(SRC, os.stat(SRC).st_mode | 0o005)        # the user runs this source tree
            code = "import sys; from estafeta.cli.sendmail import mailq_main as m; sys.argv[0] = 'mailq'; sys.exit(m())"
            r = _as(user, "env", f"PYTHONPATH={SRC}", "/usr/bin/python3", "-c", code, "-C", inst.root)
            assert r.returncode == 0 and qid.encode() in r.stdout and b"4711" not in r.stdout, r
            showq = wait_for(lambda: inst.service_pids("showq"), 10, what="the showq service")
            assert all(inst.uid_of(p) == owner.pw_uid for p in showq), "showq holds root"
    finally:
        inst.cleanup()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
