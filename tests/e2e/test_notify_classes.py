"""End to end: notify_classes (bounce, delay, 2bounce) through a real instance, as
Postfix 3.7 does it (checked against a private Postfix):

    QID: sender non-delivery notification: NEWQID1
    QID: postmaster non-delivery notification: NEWQID2     <- notify_classes has bounce

The postmaster copy (from double_bounce_sender, "Postmaster Copy: Undelivered Mail",
headers only) goes to bounce_notice_recipient; delay notices likewise with class delay
("Postmaster Warning: Delayed Mail", delay_notice_recipient). Postfix's default
notify_classes (resource, software) sends no copy and discards undeliverable notices
(mail from the null sender); 2bounce or bounce sends those to 2bounce_notice_recipient.
A postmaster notice that cannot be delivered is discarded: nothing loops.
"""
import email
import email.policy
import subprocess
import sys
import time

from estafeta.testing.instance import wait_for

TRANSPORTS = "err.example error:no such place\nretry.example retry:4.4.1 waiting for a link\n"
USERS = ("pm", "pm2")


def make(instance_factory, **main):
    inst = instance_factory(main=main, start=False)
    inst.cli("config", "-e", f"transport_maps=texthash:{inst.path('transport')}")
    with open(inst.path("transport"), "w") as f:
        f.write(TRANSPORTS)
    with open(inst.path("vmailbox"), "a") as f:
        f.write("".join(f"{u}@localhost {u}/Maildir/\n" for u in USERS))
    inst.start()
    return inst


def sendmail(inst, *args, body: bytes = b"Subject: lost\n\nthe secret body\n"):
    code = "import sys; from estafeta.cli.sendmail import sendmail_main as m; sys.argv[0] = 'sendmail'; sys.exit(m())"
    r = subprocess.run([sys.executable, "-c", code, "-C", inst.root, *args], input=body,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


def messages(inst, user):
    return [email.message_from_binary_file(open(p, "rb"), policy=email.policy.default)
            for p in inst.delivered(user)]


def subjects(inst, user):
    return sorted(str(m["Subject"]) for m in messages(inst, user))


def settle(inst, seconds=1.5):
    """The queue is empty and stays so: nothing more is coming."""
    wait_for(lambda: inst.queue_count() == 0, 30, what="an empty queue")
    time.sleep(seconds)
    assert inst.queue_count() == 0, "the queue filled again"


def test_bounce_class_copies_headers_to_the_postmaster(instance_factory):
    inst = make(instance_factory, notify_classes="bounce", bounce_notice_recipient="pm@localhost")
    sendmail(inst, "-f", "demo@localhost", "x@err.example")
    wait_for(lambda: inst.delivered("demo") and inst.delivered("pm"), 30, what="the notice and the copy")
    (sent,) = messages(inst, "demo")
    assert sent["Subject"] == "Undelivered Mail Returned to Sender"
    assert list(sent.iter_parts())[2].get_content_type() == "message/rfc822"
    assert b"the secret body" in sent.as_bytes()
    (copy,) = messages(inst, "pm")
    assert copy["Subject"] == "Postmaster Copy: Undelivered Mail", f"got {copy['Subject']}"
    assert copy["To"].addresses[0].addr_spec == "pm@localhost"
    assert copy["Return-Path"] == "<double-bounce@localhost>", f"got {copy['Return-Path']}"
    human, status, returned = copy.iter_parts()
    assert returned.get_content_type() == "text/rfc822-headers", f"got {returned.get_content_type()}"
    assert "Subject: lost" in returned.get_content() and b"the secret body" not in copy.as_bytes()
    rcpt = dict(status.get_payload()[1].items())
    assert (rcpt["Final-Recipient"], rcpt["Action"]) == ("rfc822; x@err.example", "failed"), rcpt
    assert "<demo@localhost>" in human.get_content()
    log = inst.log()
    assert "sender non-delivery notification: " in log and "postmaster non-delivery notification: " in log
    assert "notify_classes" not in log, "no warning for the notice classes"

    # NOTIFY=NEVER keeps the sender's notice away, not the postmaster's copy (Postfix).
    sendmail(inst, "-N", "never", "-f", "demo@localhost", "y@err.example", body=b"Subject: quiet\n\nx\n")
    wait_for(lambda: len(inst.delivered("pm")) == 2, 30, what="the second copy")
    settle(inst)
    assert len(inst.delivered("demo")) == 1, "NOTIFY=NEVER: no notice to the sender"


def test_default_classes_send_no_copy_and_drop_double_bounces(instance_factory):
    inst = make(instance_factory, bounce_notice_recipient="pm@localhost",
                **{"2bounce_notice_recipient": "pm2@localhost"})
    sendmail(inst, "-f", "demo@localhost", "x@err.example")
    sendmail(inst, "-f", "", "y@err.example", body=b"Subject: from nobody\n\nx\n")
    wait_for(lambda: inst.delivered("demo"), 30, what="the sender's notice")
    wait_for(lambda: "undeliverable notice discarded (1 recipient(s)): notify_classes has neither 2bounce nor bounce"
             in inst.log(), 30, what="the discarded double bounce")
    settle(inst)
    assert subjects(inst, "demo") == ["Undelivered Mail Returned to Sender"]
    assert inst.delivered("pm") == [] and inst.delivered("pm2") == [], "no postmaster notice by default"
    log = inst.log()
    assert "postmaster non-delivery notification" not in log
    assert "notify_classes:" not in log, "the default value warns about nothing"


def test_no_loop(instance_factory):
    """The sender's notice bounces (a double bounce, to 2bounce_notice_recipient) and
    the postmaster copy bounces too (discarded): one message each, then quiet."""
    inst = make(instance_factory, notify_classes="bounce, 2bounce, policy",
                bounce_notice_recipient="lost@localhost", **{"2bounce_notice_recipient": "pm2@localhost"})
    sendmail(inst, "-f", "ghost@localhost", "x@err.example")
    wait_for(lambda: inst.delivered("pm2"), 30, what="the double bounce")
    wait_for(lambda: "undeliverable double bounce discarded" in inst.log(), 30, what="the copy discarded")
    settle(inst, 3)
    assert subjects(inst, "pm2") == ["Postmaster Copy: Undelivered Mail"]
    (double,) = messages(inst, "pm2")
    rcpt = dict(list(double.iter_parts())[1].get_payload()[1].items())
    assert rcpt["Final-Recipient"] == "rfc822; ghost@localhost", rcpt
    log = inst.log()
    assert log.count("postmaster non-delivery notification: ") == 2, "one copy, one double bounce"
    assert log.count("sender non-delivery notification: ") == 1
    # Classes that ask for SMTP transcripts are accepted and said to be ignored, once.
    assert log.count("notify_classes: policy: SMTP session transcripts") == 1, log[-2000:]


def test_delay_class_copies_the_warning(instance_factory):
    inst = make(instance_factory, notify_classes="delay", delay_warning_time="1s",
                delay_notice_recipient="pm@localhost")
    sendmail(inst, "-f", "demo@localhost", "x@retry.example")
    wait_for(lambda: inst.delivered("demo") and inst.delivered("pm"), 30, what="the warning and its copy")
    assert subjects(inst, "demo") == ["Delayed Mail (still being retried)"]
    (copy,) = messages(inst, "pm")
    assert copy["Subject"] == "Postmaster Warning: Delayed Mail", f"got {copy['Subject']}"
    assert copy["Return-Path"] == "<double-bounce@localhost>", f"got {copy['Return-Path']}"
    _, status, returned = copy.iter_parts()
    assert returned.get_content_type() == "text/rfc822-headers"
    rcpt = dict(status.get_payload()[1].items())
    assert (rcpt["Final-Recipient"], rcpt["Action"]) == ("rfc822; x@retry.example", "delayed"), rcpt
    wait_for(lambda: "postmaster delay notification: " in inst.log(), 10, what="the log line")
    # Once per message, as the sender's warning.
    n = inst.log().count("status=deferred")
    wait_for(lambda: inst.log().count("status=deferred") >= n + 2, 30, what="two more attempts")
    assert len(inst.delivered("pm")) == 1 and len(inst.delivered("demo")) == 1
