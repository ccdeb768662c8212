"""End to end: a header_checks/body_checks REJECT of a message submitted with sendmail
(maildrop -> pickup -> cleanup) is returned to the sender as an RFC 3464 notice, as
Postfix's cleanup does for local submissions; it is never silently dropped.

The log must have Postfix's shape (checked against Postfix 3.7):
    QID: uid=0 from=<demo@localhost>
    QID: reject: header Subject: please reject me from local; from=<demo@localhost> to=<x@remote.example>: 5.7.1 no thanks
    QID: to=<x@remote.example>, relay=none, delay=0.04, delays=0.04/0/0/0, dsn=5.7.1, status=bounced (no thanks)
    QID: sender non-delivery notification: NEWQID
"""
import email
import email.policy
import os
import re
import subprocess
import sys
import time

import pytest

from estafeta.testing.instance import wait_for

HEADER_CHECKS = """\
/^Subject:.*please reject me/   REJECT no thanks
/^Subject:.*try later/          REJECT 4.7.1 not now
"""
BODY_CHECKS = "/forbidden body words/   REJECT 5.7.1 body rejected\n"


@pytest.fixture
def inst(instance_factory):
    # notify_classes = 2bounce: double bounces go to the postmaster (Postfix's default
    # "resource, software" discards them; test_null_sender_reject_discarded_by_default).
    return make_inst(instance_factory, notify_classes="2bounce")


def make_inst(instance_factory, **main):
    i = instance_factory(main={"header_checks": "regexp:HC", "body_checks": "regexp:BC",
                               "2bounce_notice_recipient": "demo@localhost", **main}, start=False)
    i.cli("config", "-e", f"header_checks=regexp:{i.path('header_checks')}",
          f"body_checks=regexp:{i.path('body_checks')}")
    with open(i.path("header_checks"), "w") as f:
        f.write(HEADER_CHECKS)
    with open(i.path("body_checks"), "w") as f:
        f.write(BODY_CHECKS)
    with open(i.path("vmailbox"), "a") as f:
        f.write("u1@localhost u1/Maildir/\n")
    i.start()
    return i


def sendmail(inst, *args, input: bytes):
    code = "import sys; from estafeta.cli.sendmail import sendmail_main as m; sys.argv[0] = 'sendmail'; sys.exit(m())"
    r = subprocess.run([sys.executable, "-c", code, "-C", inst.root, *args], input=input,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def maildrop(inst):
    return os.listdir(os.path.join(inst.queue_dir, "maildrop"))


def notices(inst, user="demo"):
    out = []
    for p in inst.delivered(user):
        m = email.message_from_binary_file(open(p, "rb"), policy=email.policy.default)
        if m["Subject"] == "Undelivered Mail Returned to Sender" or str(m["Subject"]).startswith("Postmaster Copy"):
            out.append(m)
    return out


def report(m):
    """(recipient blocks of the delivery-status part, the returned part)."""
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    human, status, returned = m.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    blocks = [dict(b.items()) for b in status.get_payload()[1:]]
    return human, blocks, returned


def qid_of_reject(log, needle):
    line = next(x for x in log.splitlines() if needle in x)
    return re.search(r": ([0-9A-F]{21}): reject: ", line).group(1)


def test_header_checks_reject_bounces_to_local_sender(inst):
    msg = b"From: demo@localhost\nTo: x@remote.example\nSubject: please reject me\n\nthe text\n"
    sendmail(inst, "-f", "demo@localhost", "x@remote.example", input=msg)
    got = wait_for(lambda: notices(inst), 30, what="the non-delivery notice in demo's Maildir")
    assert len(got) == 1
    human, blocks, returned = report(got[0])
    assert "<x@remote.example>: no thanks" in human.get_content()
    assert len(blocks) == 1
    b = blocks[0]
    assert (b["Final-Recipient"], b["Action"], b["Status"]) == ("rfc822; x@remote.example", "failed", "5.7.1"), b
    assert "no thanks" in b["Diagnostic-Code"]
    assert returned.get_content_type() == "message/rfc822"
    orig = returned.get_payload()[0]
    assert orig["Subject"] == "please reject me" and orig.get_content().strip() == "the text"
    assert got[0]["To"].addresses[0].addr_spec == "demo@localhost" and got[0]["Auto-Submitted"] == "auto-replied"
    assert maildrop(inst) == []
    # the log: Postfix's lines, in Postfix's order
    log = inst.log()
    qid = qid_of_reject(log, "reject: header Subject: please reject me")
    lines = [x.split(": ", 1)[1] for x in log.splitlines() if f": {qid}: " in x]
    want_reject = (f"{qid}: reject: header Subject: please reject me from local; from=<demo@localhost> "
                   "to=<x@remote.example>: 5.7.1 no thanks")
    assert want_reject in lines, "\n".join(lines)
    uid = lines.index(f"{qid}: uid=0 from=<demo@localhost>") if os.geteuid() == 0 else 0
    bounced = next(i for i, x in enumerate(lines) if re.fullmatch(
        rf"{qid}: to=<x@remote\.example>, relay=none, delay=[\d.]+, delays=[\d.]+/0/0/0, dsn=5\.7\.1, "
        r"status=bounced \(no thanks\)", x))
    notified = next(i for i, x in enumerate(lines) if x.startswith(f"{qid}: sender non-delivery notification: "))
    assert uid < lines.index(want_reject) < bounced < notified, "\n".join(lines)
    # nothing of it was queued for, or delivered to, the recipient
    assert f"{qid}: removed" not in log and f"{qid}: from=<" not in log


def test_body_checks_reject_bounces_every_recipient(inst):
    msg = b"Subject: body\n\nfine line\nsome forbidden body words here\n"
    sendmail(inst, "-f", "demo", "u1@localhost", "y@remote.example", input=msg)
    got = wait_for(lambda: notices(inst), 30, what="the non-delivery notice")
    _, blocks, returned = report(got[0])
    assert sorted(b["Final-Recipient"] for b in blocks) == ["rfc822; u1@localhost", "rfc822; y@remote.example"]
    assert all(b["Status"] == "5.7.1" for b in blocks)
    # The notice quotes the rejected line: notices are not inspected by body_checks
    # (internal_mail_filter_classes is empty), so it was not rejected in turn.
    assert "some forbidden body words here" in returned.get_payload()[0].get_content()
    assert inst.delivered("u1") == [] and maildrop(inst) == []
    log = inst.log()
    qid = qid_of_reject(log, "reject: body some forbidden body words here from local;")
    for r in ("u1@localhost", "y@remote.example"):
        assert f"{qid}: to=<{r}>, relay=none" in log and "status=bounced (body rejected)" in log


def test_notify_never_bounces_without_notice(inst):
    sendmail(inst, "-f", "demo@localhost", "-N", "never", "x@remote.example",
             input=b"Subject: please reject me\n\nx\n")
    wait_for(lambda: "status=bounced (no thanks)" in inst.log(), 30, what="the bounced line")
    wait_for(lambda: maildrop(inst) == [], 10, what="maildrop emptied")
    time.sleep(1)
    assert notices(inst) == [] and "non-delivery notification" not in inst.log()


def test_null_sender_reject_goes_to_postmaster(inst):
    sendmail(inst, "-f", "", "x@remote.example", input=b"Subject: please reject me\n\nsecret body\n")
    got = wait_for(lambda: notices(inst), 30, what="the postmaster copy")
    assert got[0]["Subject"] == "Postmaster Copy: Undelivered Mail"
    _, blocks, returned = report(got[0])
    # A double bounce carries the undeliverable mail whole (postconf(5) 2bounce).
    assert returned.get_content_type() == "message/rfc822"
    assert b"secret body" in returned.as_bytes()
    assert blocks[0]["Status"] == "5.7.1"
    wait_for(lambda: "postmaster non-delivery notification: " in inst.log(), 10, what="log line")


def test_null_sender_reject_discarded_by_default(instance_factory):
    """Postfix's default notify_classes (resource, software) has neither 2bounce nor
    bounce: an undeliverable notice is discarded, as qmgr does, with a log line."""
    inst = make_inst(instance_factory)
    sendmail(inst, "-f", "", "x@remote.example", input=b"Subject: please reject me\n\nx\n")
    wait_for(lambda: "undeliverable notice discarded (1 recipient(s)): notify_classes has neither 2bounce nor bounce"
             in inst.log(), 30, what="the discard line")
    wait_for(lambda: maildrop(inst) == [], 10, what="maildrop emptied")
    time.sleep(1)
    assert notices(inst) == [] and "notification: " not in inst.log()


def test_bounce_class_copies_the_postmaster(instance_factory):
    """notify_classes = bounce: the sender gets the notice, bounce_notice_recipient a
    headers-only copy from double_bounce_sender."""
    inst = make_inst(instance_factory, notify_classes="bounce", bounce_notice_recipient="u1@localhost")
    sendmail(inst, "-f", "demo@localhost", "x@remote.example", input=b"Subject: please reject me\n\nsecret body\n")
    sent = wait_for(lambda: notices(inst), 30, what="the sender's notice")
    copy = wait_for(lambda: notices(inst, "u1"), 30, what="the postmaster copy")
    assert sent[0]["Subject"] == "Undelivered Mail Returned to Sender"
    assert report(sent[0])[2].get_content_type() == "message/rfc822"
    assert len(copy) == 1 and copy[0]["Subject"] == "Postmaster Copy: Undelivered Mail"
    _, blocks, returned = report(copy[0])
    assert returned.get_content_type() == "text/rfc822-headers" and b"secret body" not in returned.as_bytes()
    assert blocks[0]["Status"] == "5.7.1"
    log = inst.log()
    assert "sender non-delivery notification: " in log and "postmaster non-delivery notification: " in log
    assert re.search(r"from=<double-bounce@[^>]+>", log), "the copy comes from double_bounce_sender"


def test_temporary_reject_stays_in_maildrop(inst):
    sendmail(inst, "-f", "demo@localhost", "x@remote.example", input=b"Subject: try later\n\nx\n")
    wait_for(lambda: "not queued: 450 4.7.1 not now; left in maildrop" in inst.log(), 30, what="the 4xx log line")
    assert len(maildrop(inst)) == 1 and notices(inst) == []
