"""Delivery status notices end to end: a real instance relays to Postfix's smtp-sink,
and the RFC 3464 notices land in the demo user's Maildir (the sender is
demo@localhost), where they are parsed back with Python's email package.

smtp-sink answers 5xx (-f) or 4xx (-r) to a command, and announces DSN unless -N.
Debian package: postfix (smtp-sink only; no Postfix instance runs).
"""
from __future__ import annotations

import email
import email.policy
import smtplib

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for

# The peers/instances fixtures and helpers are shared with the smtp delivery tests.
from test_smtp_delivery import SINK, dumped, instances, peers, workdir  # noqa: F401

needs_sink = pytest.mark.skipif(SINK is None, reason="smtp-sink not installed (Debian package postfix)")

SENDER = "demo@localhost"
BODY = (b"From: Demo <demo@localhost>\r\nTo: bob@tesis.com\r\nSubject: dsn test\r\n\r\n"
        b"first body line\r\nsecond body line\r\n")


def send(inst: Instance, rcpts: list[str], sender: str = SENDER, mail_options=(), rcpt_options=(),
         body: bytes = BODY) -> str:
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn"), "smtpd does not announce DSN"
        s.mail(sender, list(mail_options))
        for r in rcpts:
            code, msg = s.rcpt(r, list(rcpt_options))
            assert code == 250, f"got {code} {msg!r} for RCPT {r}"
        code, msg = s.data(body)
        assert code == 250, f"got {code} {msg!r} at end of data"
        return msg.decode().rsplit(" ", 1)[1]       # "Ok: queued as QID"


def notices(inst: Instance) -> list[email.message.EmailMessage]:
    out = []
    for p in inst.delivered("demo"):
        with open(p, "rb") as f:
            out.append(email.message_from_bytes(f.read(), policy=email.policy.default))
    return out


def report(msg) -> tuple[dict, list[dict]]:
    """(per-message fields, [per-recipient fields]) of a multipart/report notice."""
    assert msg.get_content_type() == "multipart/report", f"got {msg.get_content_type()}"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = [dict(b.items()) for b in parts[1].get_payload()]
    return blocks[0], blocks[1:]


def settled(inst: Instance, qid: str) -> None:
    """The message is gone and, with it, any notice it caused (notices are queued
    before the original is removed) has been delivered."""
    wait_for(lambda: f"{qid}: removed" in inst.log(), 30, what=f"{qid} removed")
    wait_for(lambda: inst.queue_count() == 0, 30, what="empty queue")


@needs_sink
def test_5xx_bounce_is_rfc3464_with_the_remote_reply(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    qid = send(inst, ["bob@tesis.com"], mail_options=["ENVID=env+2B42"],
               rcpt_options=["ORCPT=rfc822;Bob+40tesis.com"])
    wait_for(lambda: inst.delivered("demo"), 30, what="bounce in demo's Maildir")
    (msg,) = notices(inst)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert "MAILER-DAEMON@" in msg["From"]
    head, (rcpt,) = report(msg)
    assert head["X-Estafeta-Queue-ID"] == qid and head["Original-Envelope-Id"] == "env+42"
    assert head["Reporting-MTA"].startswith("dns; ") and "Arrival-Date" in head
    assert rcpt["Final-Recipient"] == "rfc822; bob@tesis.com"
    assert rcpt["Original-Recipient"] == "rfc822; Bob@tesis.com"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.3.0", f"got {rcpt}"
    assert rcpt["Remote-MTA"] == "dns; 127.0.0.1"
    # smtp-sink's own reply, word for word.
    assert rcpt["Diagnostic-Code"] == "smtp; 500 5.3.0 Error: command failed", f"got {rcpt}"
    human, _, returned = msg.iter_parts()
    assert "could not\nbe delivered" in human.get_content() and "500 5.3.0" in human.get_content()
    assert returned.get_content_type() == "message/rfc822"      # RET=FULL by default for failures
    original = returned.get_payload()[0]
    assert original["Subject"] == "dsn test" and "second body line" in original.get_content()
    # The notice itself came from the null sender.
    wait_for(lambda: "from=<>" in inst.log(), 20, what="log line: " + "from=<>"[:60])


@needs_sink
def test_ret_hdrs_returns_headers_only(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    send(inst, ["bob@tesis.com"], mail_options=["RET=HDRS"])
    wait_for(lambda: inst.delivered("demo"), 30, what="bounce")
    (msg,) = notices(inst)
    returned = list(msg.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers", f"got {returned.get_content_type()}"
    text = returned.get_content()
    assert "Subject: dsn test" in text and "body line" not in text, f"got {text!r}"


@needs_sink
def test_bounce_size_limit_cuts_the_returned_message(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "bounce_size_limit": "2000"})
    big = BODY + b"".join(b"line %05d of a long message\r\n" % i for i in range(2000))
    send(inst, ["bob@tesis.com"], body=big)
    wait_for(lambda: inst.delivered("demo"), 30, what="bounce")
    with open(inst.delivered("demo")[0], "rb") as f:
        raw = f.read()
    assert b"line 00000 of" in raw and b"line 01999 of" not in raw and len(raw) < 6000, len(raw)


@needs_sink
def test_notify_never_gives_no_notice(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    qid = send(inst, ["bob@tesis.com"], rcpt_options=["NOTIFY=NEVER"])
    settled(inst, qid)
    wait_for(lambda: "status=bounced" in inst.log(), 20, what="log line: " + "status=bounced"[:60])
    assert notices(inst) == []


@needs_sink
def test_notify_success_relayed_to_a_server_without_dsn(peers, instances):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-N")          # -N: no DSN announced
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    send(inst, ["bob@tesis.com"], rcpt_options=["NOTIFY=SUCCESS"])
    wait_for(lambda: inst.delivered("demo"), 30, what="success notice")
    (msg,) = notices(inst)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    _, (rcpt,) = report(msg)
    assert rcpt["Action"] == "relayed" and rcpt["Status"].startswith("2."), f"got {rcpt}"
    assert list(msg.iter_parts())[2].get_content_type() == "text/rfc822-headers"
    assert b"NOTIFY" not in dumped(d)[0]


@needs_sink
def test_notify_and_orcpt_passed_on_to_a_dsn_server_which_then_reports(peers, instances):
    port = free_port()
    d = peers.sink("127.0.0.1", port)
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    qid = send(inst, ["bob@tesis.com"], mail_options=["RET=HDRS", "ENVID=e1"],
               rcpt_options=["NOTIFY=SUCCESS,DELAY"])
    settled(inst, qid)
    (got,) = dumped(d)
    assert b"X-Mail-Args: <demo@localhost> RET=HDRS ENVID=e1" in got, got[:400]
    assert b"X-Rcpt-Args: <bob@tesis.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob@tesis.com" in got, got[:400]
    assert notices(inst) == []        # the next hop reports success now, not us


@needs_sink
def test_mixed_results_one_failure_notice_one_success_notice(peers, instances):
    hard, good = free_port(), free_port()
    peers.sink("127.0.0.1", hard, "-f", "RCPT", name="hard")
    peers.sink("127.0.0.1", good, "-N", name="good")
    inst = instances({"transport_maps": f"inline:{{ tesis.com=smtp:[127.0.0.1]:{hard}, "
                                        f"monografia.com=smtp:[127.0.0.1]:{good} }}"})
    qid = send(inst, ["bob@tesis.com", "carol@monografia.com"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    settled(inst, qid)
    got = {m["Subject"]: report(m)[1] for m in notices(inst)}
    assert set(got) == {"Undelivered Mail Returned to Sender", "Successful Mail Delivery Report"}, f"got {got}"
    (failed,) = got["Undelivered Mail Returned to Sender"]
    (ok,) = got["Successful Mail Delivery Report"]
    assert failed["Final-Recipient"] == "rfc822; bob@tesis.com" and failed["Status"] == "5.3.0"
    assert ok["Final-Recipient"] == "rfc822; carol@monografia.com" and ok["Action"] == "relayed"


@needs_sink
def test_delay_warning_once(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-r", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "delay_warning_time": "1s"})
    send(inst, ["bob@tesis.com"])
    wait_for(lambda: inst.delivered("demo"), 30, what="delay notice")
    (msg,) = notices(inst)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    _, (rcpt,) = report(msg)
    assert rcpt["Action"] == "delayed" and rcpt["Status"] == "4.3.0", f"got {rcpt}"
    assert "Will-Retry-Until" in rcpt
    assert rcpt["Diagnostic-Code"] == "smtp; 450 4.3.0 Error: command failed"
    assert list(msg.iter_parts())[2].get_content_type() == "text/rfc822-headers"
    assert "THIS IS A WARNING ONLY" in list(msg.iter_parts())[0].get_content()
    # More attempts, still one warning.
    n = inst.log().count("status=deferred")
    wait_for(lambda: inst.log().count("status=deferred") >= n + 2, 30, what="two more attempts")
    assert len(inst.delivered("demo")) == 1


@needs_sink
def test_null_sender_bounce_gets_no_notice_but_a_postmaster_double_bounce(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "2bounce_notice_recipient": "demo@localhost",
                      "notify_classes": "2bounce"})
    qid = send(inst, ["bob@tesis.com"], sender="")
    settled(inst, qid)
    wait_for(lambda: f"{qid}: postmaster non-delivery notification" in inst.log(), 20, what="log line: " + f"{qid}: postmaster non-delivery notification"[:60])
    (msg,) = notices(inst)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    head, (rcpt,) = report(msg)
    assert head["X-Estafeta-Sender"] == "rfc822;" and rcpt["Status"] == "5.3.0", f"got {head} {rcpt}"
    # The undeliverable notice goes to the postmaster whole (postconf(5) 2bounce).
    assert list(msg.iter_parts())[2].get_content_type() == "message/rfc822"
    # The double bounce comes from double_bounce_sender, so it can never bounce again.
    wait_for(lambda: "from=<double-bounce@" in inst.log(), 20, what="log line: " + "from=<double-bounce@"[:60])


@needs_sink
def test_null_sender_default_postmaster(peers, instances):
    """2bounce_notice_recipient's default is postmaster, not demo."""
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "notify_classes": "2bounce"})
    qid = send(inst, ["bob@tesis.com"], sender="")
    wait_for(lambda: f"{qid}: postmaster non-delivery notification" in inst.log(), 30, what="double bounce")
    assert notices(inst) == []


@needs_sink
def test_null_sender_double_bounce_discarded_by_default(peers, instances):
    """Postfix's default notify_classes (resource, software) has neither 2bounce nor
    bounce: the undeliverable notice is discarded (checked against Postfix 3.7)."""
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "2bounce_notice_recipient": "demo@localhost"})
    qid = send(inst, ["bob@tesis.com"], sender="")
    wait_for(lambda: f"{qid}: undeliverable notice discarded (1 recipient(s))" in inst.log(), 30,
             what="the discard line")
    settled(inst, qid)
    assert notices(inst) == [] and "postmaster non-delivery notification" not in inst.log()


@needs_sink
def test_soft_bounce_defers_instead(peers, instances):
    port = free_port()
    peers.sink("127.0.0.1", port, "-f", "RCPT")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}", "soft_bounce": "yes"})
    send(inst, ["bob@tesis.com"])
    wait_for(lambda: inst.log().count("status=bounced") >= 2, 30, what="two attempts")
    wait_for(lambda: inst.queue_count("deferred") == 1, 10, what="message deferred")
    assert notices(inst) == []
