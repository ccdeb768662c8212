"""End to end: transport_maps routing to pipe, discard, error and retry services.

A real instance routes test domains through a texthash transport_maps to a pipe
service (master.cf `mypipe ... pipe user=nobody argv=...`) running a small script
that records its argv, stdin and uid; its exit status follows the nexthop, so one
table gives sent, EX_TEMPFAIL and EX_NOUSER. Hostile local parts must reach the
script as single literal argv elements, with nothing run by a shell.
"""
import json
import os
import pwd
import secrets
import smtplib

import pytest

from estafeta.testing.instance import Instance
from estafeta.testing.instance import wait_for as _wait_for


def wait_for(pred, what: str):
    return _wait_for(pred, 60, what=what)      # generous: the suite shares two cores

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None
pytestmark = pytest.mark.skipif(PYTHON is None, reason="needs the system's /usr/bin/python3 for the pipe script")

SCRIPT = """#!/usr/bin/python3
import json, os, sys
out = {{"argv": sys.argv[1:], "stdin": sys.stdin.read(), "uid": os.getuid()}}
path = os.path.join({out!r}, "call.%d" % os.getpid())
with open(path + ".tmp", "w") as f:
    json.dump(out, f)
os.rename(path + ".tmp", path)      # the test never reads half a file
code = {{"temp": 75, "bad": 67}}.get(sys.argv[1], 0)
if code:
    print("exiting with", code)
sys.exit(code)
"""

ARGV = "${nexthop} ${sender} ${recipient} ${user} ${extension} ${mailbox} ${domain} ${original_recipient} " \
       "${client_address} ${queue_id} ${size}"


@pytest.fixture(scope="module")
def inst():
    i = Instance(main={"recipient_delimiter": "+", "mypipe_destination_recipient_limit": "1"})
    i.master_extra = f"mypipe unix - n n - - pipe flags=R user=nobody argv={i.path('record')} {ARGV}\n"
    i.main["transport_maps"] = f"texthash:{i.path('transport')}"
    i.init()
    out = i.path("out")
    os.makedirs(out)
    os.chmod(out, 0o777)
    with open(i.path("record"), "w") as f:
        f.write(SCRIPT.format(out=out))
    os.chmod(i.path("record"), 0o755)
    with open(i.path("transport"), "w") as f:
        f.write("""\
# domain            transport:nexthop
pipe.example        mypipe:
temp.example        mypipe:temp
bad.example         mypipe:bad
.dis.example        discard:
err.example         error:mail for err.example is not accepted
retry.example       retry:4.4.1 waiting for a link
""")
    i.start()
    try:
        yield i
    finally:
        i.cleanup()


def send(inst, rcpts, sender="demo@localhost", body=b"Subject: pipe test\r\n\r\nline one\r\n.dot line\r\n"):
    """Raw MAIL/RCPT commands: smtplib would rewrite quoted local parts."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        code, msg = s.docmd(f"MAIL FROM:<{sender}>")
        assert code == 250, f"got {code} {msg}, want 250"
        for r in rcpts:
            code, msg = s.docmd(f"RCPT TO:<{r}>")
            assert code == 250, f"RCPT {r}: got {code} {msg}, want 250"
        code, msg = s.data(body)
        assert code == 250, f"got {code} {msg}, want 250"


def calls(inst):
    out = []
    d = inst.path("out")
    for n in sorted(x for x in os.listdir(d) if not x.endswith(".tmp")):
        with open(os.path.join(d, n)) as f:
            out.append(json.load(f))
    return out


def calls_for(inst, nexthop, n):
    return wait_for(lambda: (c := [x for x in calls(inst) if x["argv"][0] == nexthop]) and len(c) >= n and c,
                    what=f"{n} pipe call(s) for {nexthop}")


def test_pipe_argv_macros_and_stdin(inst):
    send(inst, ["Bob+Tag@pipe.example"])
    (c,) = calls_for(inst, "pipe.example", 1)
    nexthop, sender, rcpt, user, ext, mailbox, domain, orig, client, qid, size = c["argv"]
    got = (nexthop, sender, rcpt, user, ext, mailbox, domain, orig, client)
    want = ("pipe.example", "demo@localhost", "Bob+Tag@pipe.example", "Bob", "Tag", "Bob+Tag", "pipe.example",
            "Bob+Tag@pipe.example", "127.0.0.1")
    assert got == want, f"got {got}, want {want}"
    assert len(qid) >= 8 and int(size) > 0, f"got queue_id={qid!r} size={size!r}"
    assert c["stdin"].startswith("Return-Path: <demo@localhost>\n"), f"got {c['stdin'][:60]!r}"
    assert c["stdin"].endswith("\nline one\n.dot line\n"), f"got {c['stdin'][-60:]!r}"
    if os.geteuid() == 0:
        want_uid = pwd.getpwnam("nobody").pw_uid
        assert c["uid"] == want_uid, f"got uid {c['uid']}, want nobody's {want_uid}"
    line = wait_for(lambda: next((x for x in inst.log().splitlines() if f"{qid}: to=<Bob+Tag@pipe.example>" in x), None),
                    what="the delivery log line")
    assert "relay=mypipe," in line and line.endswith("status=sent (delivered via mypipe service)"), f"got {line!r}"


def test_hostile_local_parts_are_single_literal_arguments(inst):
    canary = f"/tmp/estafeta-canary-{secrets.token_hex(4)}"
    hostile = [f'"a;touch {canary}"@pipe.example', f'"|touch {canary}"@pipe.example', "-oQ/tmp/x@pipe.example",
               f'"$(touch {canary})"@pipe.example']
    send(inst, hostile)
    got = wait_for(lambda: (c := [x for x in calls(inst) if x["argv"][0] == "pipe.example"
                                  and x["argv"][2] != "Bob+Tag@pipe.example"]) and len(c) >= len(hostile) and c,
                   what="a pipe call per hostile recipient")
    rcpt_args = sorted(c["argv"][2] for c in got)
    want = sorted([f"a;touch {canary}@pipe.example", f"|touch {canary}@pipe.example", "-oQ/tmp/x@pipe.example",
                   f"$(touch {canary})@pipe.example"])
    assert rcpt_args == want, f"got {rcpt_args}, want {want}"
    for c in got:
        assert len(c["argv"]) == 11, f"got {len(c['argv'])} arguments, want 11: {c['argv']}"
    assert not os.path.exists(canary), f"{canary} exists: something ran a shell"
    assert not os.path.exists("/tmp/x"), "/tmp/x exists: -oQ was taken as an option"


def test_exit_75_defers_and_exit_67_bounces(inst):
    send(inst, ["someone@temp.example", "nobody@bad.example"])
    wait_for(lambda: "status=bounced (user unknown. Command output: exiting with 67 )" in inst.log(), what="bounce")
    wait_for(lambda: "status=deferred (temporary failure. Command output: exiting with 75 )" in inst.log(),
             what="deferral")
    log = inst.log()
    assert "to=<nobody@bad.example>, relay=mypipe" in log and "dsn=5.1.1, status=bounced" in log
    assert "to=<someone@temp.example>, relay=mypipe" in log and "dsn=4.3.0, status=deferred" in log
    # The agent logs before qmgr files the message; with the harness's 1s backoff it
    # then cycles between active and deferred: it must stay in one of the two.
    wait_for(lambda: inst.queue_count("deferred", "active") >= 1, what="the EX_TEMPFAIL recipient kept queued")
    wait_for(lambda: any("nobody@bad.example" in open(p, errors="replace").read() for p in inst.delivered()),
             what="non-delivery notice to demo@localhost")


def test_discard_error_and_retry(inst):
    send(inst, ["a@x.dis.example", "b@err.example", "c@retry.example"])
    wait_for(lambda: "to=<b@err.example>" in inst.log() and "to=<c@retry.example>" in inst.log()
             and "to=<a@x.dis.example>" in inst.log(), what="three results")
    lines = {k: next(line for line in inst.log().splitlines() if f"to=<{k}>" in line)
             for k in ("a@x.dis.example", "b@err.example", "c@retry.example")}
    want = {"a@x.dis.example": "relay=none", "b@err.example": "relay=none", "c@retry.example": "relay=none"}
    for k, v in want.items():
        assert v in lines[k], f"got {lines[k]!r}, want {v}"
    assert lines["a@x.dis.example"].endswith("dsn=2.0.0, status=sent (x.dis.example)"), lines["a@x.dis.example"]
    assert lines["b@err.example"].endswith("dsn=5.0.0, status=bounced (mail for err.example is not accepted)"), \
        lines["b@err.example"]
    assert lines["c@retry.example"].endswith("dsn=4.4.1, status=deferred (waiting for a link)"), \
        lines["c@retry.example"]
