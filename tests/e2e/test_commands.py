"""End to end: sendmail, mailq, postqueue, postsuper, postcat against a real instance.

The queue tools run as separate programs, as an administrator would run them.
The Postfix comparison starts a private Postfix (PEERS.md section 7's recipe).
"""
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from estafeta.testing.instance import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Deferred mail: no service named "nosuch" runs, so qmgr defers with
# "mail transport unavailable"; long backoff and run delay so that only the
# queue runs a test asks for retry anything.
DEFER = {"default_transport": "nosuch", "minimal_backoff_time": "3600s", "maximal_backoff_time": "3600s",
         "queue_run_delay": "3600s"}


def tool(name, inst, *args, input=None, user=None):
    """Run one of the console tools (sendmail, mailq, postqueue, postsuper, postcat).

    As another user it runs under the system python3 (the venv's interpreter is
    under /root), with only this source tree on the path."""
    mod, fn = {"sendmail": ("sendmail", "sendmail"), "mailq": ("sendmail", "mailq"),
               "postqueue": ("queue_admin", "postqueue"), "postsuper": ("queue_admin", "postsuper"),
               "postcat": ("queue_admin", "postcat")}[name]
    flag = "-C" if mod == "sendmail" else "-c"
    code = (f"import sys; from estafeta.cli.{mod} import {fn}_main as m; sys.argv[0] = {name!r}; "
            f"sys.exit(m({'' if mod == 'sendmail' else 'sys.argv[1:]'}))")
    py = sys.executable
    prefix = []
    if user:
        py = "/usr/bin/python3"
        prefix = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={ROOT}"]
    return subprocess.run(prefix + [py, "-c", code, flag, inst.root, *args], input=input,
                          capture_output=True, timeout=60)


def attempts(inst, rcpt):
    return inst.log().count(f"to=<{rcpt}>")


def deferred_ids(inst):
    return sorted(os.listdir(os.path.join(inst.queue_dir, "deferred")))


def test_sendmail_t_waits_in_maildrop_then_delivered(instance_factory):
    inst = instance_factory(start=False)
    msg = b"To: demo@localhost\nBcc: demo@localhost\nSubject: from cron\n\nbody line\n.\nnot part of it\n"
    r = tool("sendmail", inst, "-t", input=msg)
    assert r.returncode == 0, r.stderr
    drop = os.path.join(inst.queue_dir, "maildrop")
    names = os.listdir(drop)
    assert len(names) == 1 and re.fullmatch(r"[0-9a-f]{32}", names[0]), f"got {names}"
    r = tool("mailq", inst)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("-Queue ID-  --Size-- ----Arrival Time----") and names[0] in out
    assert "demo@localhost" in out and out.rstrip().endswith("in 1 Request."), out
    inst.start()
    wait_for(lambda: inst.delivered(), 30, what="delivery of the maildrop message")
    assert os.listdir(drop) == []
    text = open(inst.delivered()[0], "rb").read()
    assert b"Subject: from cron" in text and b"body line\n" in text
    assert b"Bcc:" not in text and b"not part of it" not in text, text
    assert len(inst.delivered()) == 1            # demo was both To and Bcc: one copy per recipient
    assert re.search(r"estafeta/pickup\[\d+\]: [0-9A-F]{21}: uid=\d+ from=<root@localhost>", inst.log())
    assert tool("mailq", inst).stdout == b"Mail queue is empty\n"


def test_queue_run_selection(instance_factory):
    inst = instance_factory(main=DEFER)
    for sender, rcpt in (("alice@example.org", "x@remote.example"), ("bob@example.org", "y@other.example"),
                         ("carol@example.org", "z@third.example")):
        assert tool("sendmail", inst, "-f", sender, rcpt, input=b"Subject: t\n\nb\n").returncode == 0
    wait_for(lambda: len(deferred_ids(inst)) == 3, 30, what="three deferred messages")
    rc = ["x@remote.example", "y@other.example", "z@third.example"]
    wait_for(lambda: [attempts(inst, r) for r in rc] == [1, 1, 1], 10, what="first attempts logged")

    def run_and_expect(args, want):
        r = tool("sendmail", inst, *args)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: [attempts(inst, x) for x in rc] == want, 10, what=f"attempts {want} after {args}")
        time.sleep(0.5)      # nothing else may follow
        got = [attempts(inst, x) for x in rc]
        assert got == want, f"after {args}: got {got}, want {want}"

    run_and_expect(["-qRremote.example"], [2, 1, 1])
    run_and_expect(["-qSbob@"], [2, 2, 1])
    z_id = [i for i in deferred_ids(inst) if b"z@third" in tool("postcat", inst, "-q", i).stdout][0]
    run_and_expect(["-qI" + z_id.lower()], [2, 2, 2])   # case-insensitive, as Sendmail
    run_and_expect(["-q"], [3, 3, 3])


def test_hold_release_flush_delete(instance_factory):
    inst = instance_factory(main=DEFER)
    tool("sendmail", inst, "-f", "alice@example.org", "x@remote.example", input=b"Subject: h\n\nb\n")
    wait_for(lambda: deferred_ids(inst) and attempts(inst, "x@remote.example") == 1, 30, what="deferred")
    qid = deferred_ids(inst)[0]
    r = tool("postsuper", inst, "-h", qid)
    assert r.returncode == 0 and b"Placed on hold: 1 message" in r.stderr, r.stderr
    assert os.listdir(os.path.join(inst.queue_dir, "hold")) == [qid]
    assert f"{qid}!".encode() in tool("mailq", inst).stdout
    assert tool("postqueue", inst, "-f").returncode == 0     # a flush leaves held mail alone
    time.sleep(1.0)
    assert attempts(inst, "x@remote.example") == 1 and os.listdir(os.path.join(inst.queue_dir, "hold")) == [qid]
    r = tool("postsuper", inst, "-H", qid)
    assert r.returncode == 0 and b"Released from hold: 1 message" in r.stderr
    assert tool("postqueue", inst, "-i", qid).returncode == 0
    wait_for(lambda: attempts(inst, "x@remote.example") == 2, 10, what="attempt after release")
    wait_for(lambda: deferred_ids(inst) == [qid], 10, what="back in deferred")
    r = tool("postcat", inst, "-q", qid)
    assert r.returncode == 0 and b"*** ENVELOPE RECORDS deferred/" in r.stdout and b"Subject: h" in r.stdout
    r = tool("postsuper", inst, "-d", "ALL", "deferred")
    assert r.returncode == 0 and b"Deleted: 1 message" in r.stderr
    assert deferred_ids(inst) == [] and not os.path.exists(os.path.join(inst.queue_dir, "defer", qid))
    assert tool("mailq", inst).stdout == b"Mail queue is empty\n"


def shape(text):
    """A listing with ids, sizes and times made generic: what must match Postfix's."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^[0-9A-Za-z]{10,21}([*!]?) +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  ", r"ID\1 SIZE DATE  ", line)
        line = re.sub(r"-- \d+ Kbytes", "-- N Kbytes", line)
        out.append(line)
    return out


@pytest.mark.skipif(not shutil.which("postfix") or os.geteuid() != 0, reason="needs Debian's postfix and root")
def test_mailq_shape_matches_postfix(instance_factory):
    T = tempfile.mkdtemp(prefix="pfq-")
    os.chmod(T, 0o755)
    os.makedirs(f"{T}/etc")
    os.makedirs(f"{T}/spool")
    with open(f"{T}/etc/main.cf", "w") as f:
        f.write(f"compatibility_level = 3.6\nqueue_directory = {T}/spool\ndata_directory = {T}/data\n"
                f"maillog_file = {T}/maillog\nmaillog_file_prefixes = {T}\nmyhostname = mx.example.test\n"
                f"mydestination =\ninet_interfaces = loopback-only\ninet_protocols = ipv4\nalias_maps =\n"
                f"default_transport = nosuch\n")
    with open(f"{T}/etc/master.cf", "w") as f:
        f.write("pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\nqmgr unix n - n 300 1 qmgr\n"
                "rewrite unix - - n - - trivial-rewrite\nbounce unix - - n - 0 bounce\ndefer unix - - n - 0 bounce\n"
                "trace unix - - n - 0 bounce\nshowq unix n - n - - showq\nerror unix - - n - - error\n"
                "retry unix - - n - - error\npostlog unix-dgram n - n - 1 postlogd\n")
    pf = ["postfix", "-c", f"{T}/etc"]
    try:
        subprocess.run(pf + ["check"], check=True, capture_output=True, timeout=60)
        subprocess.run(pf + ["start"], check=True, capture_output=True, timeout=60)
        for rcpts in (["bob@remote.example", "carol@remote.example"],):
            subprocess.run(["/usr/sbin/sendmail", "-C", f"{T}/etc", "-f", "alice@example.org", *rcpts],
                           input=b"Subject: x\n\nbody\n", check=True, timeout=60)
        subprocess.run(["/usr/sbin/sendmail", "-C", f"{T}/etc", "-f", "", "dave@remote.example"],
                       input=b"Subject: x\n\nbody\n", check=True, timeout=60)
        pq = ["postqueue", "-c", f"{T}/etc", "-p"]
        # Wait until Postfix has settled both messages in its deferred queue: no "*"
        # (still active) and every recipient's reason known.
        def settled():
            o = subprocess.run(pq, capture_output=True, text=True).stdout
            ok = (o.count("(mail transport unavailable)") == 2 and "reason unavailable" not in o
                  and not re.search(r"^[0-9A-F]+\*", o, re.M))
            return o if ok else None
        postfix_out = wait_for(settled, 60, interval=0.5, what="postfix deferrals")
    finally:
        subprocess.run(pf + ["stop"], capture_output=True, timeout=60)
        shutil.rmtree(T, ignore_errors=True)
    inst = instance_factory(main=DEFER)
    tool("sendmail", inst, "-f", "alice@example.org", "bob@remote.example", "carol@remote.example", input=b"Subject: x\n\nbody\n")
    wait_for(lambda: len(deferred_ids(inst)) == 1, 30, what="first deferral")
    tool("sendmail", inst, "-f", "", "dave@remote.example", input=b"Subject: x\n\nbody\n")
    wait_for(lambda: len(deferred_ids(inst)) == 2, 30, what="second deferral")
    ours = tool("mailq", inst).stdout.decode()
    # Same messages, possibly in another order: compare each message's block.
    def blocks(text):
        s = shape(text)
        body = "\n".join(s[1:-1]).split("\n\n")
        return s[0], sorted(b.strip("\n") for b in body), s[-1]
    got, want = blocks(ours), blocks(postfix_out)
    assert got == want, f"got\n{ours}\nwant (Postfix)\n{postfix_out}"
    j = tool("postqueue", inst, "-j").stdout.decode().splitlines()
    assert len(j) == 2 and all('"queue_name": "deferred"' in x for x in j)


@pytest.fixture
def two_users():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    names = [f"etst{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for n in names:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", n], check=True)
    try:
        yield names
    finally:
        for n in names:
            subprocess.run(["userdel", n], capture_output=True)


def test_unprivileged_submit_and_privacy(instance_factory, two_users):
    u1, u2 = two_users
    inst = instance_factory(main=DEFER, start=False)
    os.chmod(ROOT, os.stat(ROOT).st_mode | 0o005)     # the users must read the source tree
    secret = b"Subject: private matter\n\nthe secret is 4711\n"
    r = tool("sendmail", inst, "x@remote.example", input=secret, user=u1)
    assert r.returncode == 0, r.stderr
    drop = os.path.join(inst.queue_dir, "maildrop")
    [name] = os.listdir(drop)
    st = os.stat(os.path.join(drop, name))
    assert st.st_uid == pwd.getpwnam(u1).pw_uid and st.st_mode & 0o777 == 0o640
    # u2 cannot list maildrop, nor read the file even knowing its name.
    assert subprocess.run(["runuser", "-u", u2, "--", "ls", drop], capture_output=True).returncode != 0
    assert subprocess.run(["runuser", "-u", u2, "--", "cat", os.path.join(drop, name)], capture_output=True).returncode != 0
    # nor remove it (sticky directory)
    assert subprocess.run(["runuser", "-u", u2, "--", "rm", "-f", os.path.join(drop, name)], capture_output=True).returncode != 0
    assert os.listdir(drop) == [name]
    # Daemons down: the queue is not readable for u2.
    r = tool("mailq", inst, user=u2)
    assert r.returncode == 69 and b"mail system is down" in r.stderr, r
    inst.start()
    wait_for(lambda: len(deferred_ids(inst)) == 1, 30, what="deferral")
    wait_for(lambda: f"uid={pwd.getpwnam(u1).pw_uid} from=<{u1}@localhost>" in inst.log(), 20, what="log line: " + f"uid={pwd.getpwnam(u1).pw_uid} from=<{u1}@localhost>"[:60])
    qid = deferred_ids(inst)[0]
    r = tool("mailq", inst, user=u2)                      # envelopes only, via showq
    assert r.returncode == 0 and qid.encode() in r.stdout and f"{u1}@localhost".encode() in r.stdout, r
    for args in (("postcat", "-q", qid), ("postsuper", "-d", qid), ("postsuper", "-h", "ALL")):
        r = tool(args[0], inst, *args[1:], user=u2)
        assert r.returncode == 77, f"{args}: got {r.returncode} {r.stderr!r}, want 77"
        assert b"4711" not in r.stdout + r.stderr
    for args in (("mailq",), ("postqueue", "-j"), ("postqueue", "-p")):
        r = tool(args[0], inst, *args[1:], user=u2)
        assert r.returncode == 0 and b"4711" not in r.stdout and b"private matter" not in r.stdout
    assert subprocess.run(["runuser", "-u", u2, "--", "cat", os.path.join(inst.queue_dir, "deferred", qid)],
                          capture_output=True).returncode != 0
    assert deferred_ids(inst) == [qid]
    # u2 may ask for a retry (Postfix's authorized_flush_users default), through showq.
    r = tool("sendmail", inst, "-qRremote", user=u2)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: attempts(inst, "x@remote.example") == 2, 10, what="retry asked by an ordinary user")


def test_bs_smtp_on_stdin(instance_factory):
    inst = instance_factory()
    dialog = b"EHLO me\nMAIL FROM:<s@example.org>\nRCPT TO:<demo@localhost>\nDATA\nSubject: bs\n\nhi\n.\nQUIT\n"
    r = tool("sendmail", inst, "-bs", input=dialog)
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("220 ") and "250 2.0.0 Ok: queued" in out and "221 2.0.0" in out, out
    wait_for(lambda: inst.delivered(), 30, what="delivery of -bs message")
    assert b"Subject: bs" in open(inst.delivered()[0], "rb").read()
