"""core/dsn.py: the postmaster's notices (notify_classes), parsed back with the email
package. Shapes checked against Postfix 3.7's postmaster copies:
    From: Mail Delivery System <MAILER-DAEMON@mx.example.test>
    Subject: Postmaster Copy: Undelivered Mail      (delay: Postmaster Warning: Delayed Mail)
    To: pm@example.test
    Auto-Submitted: auto-generated
    ... text/rfc822-headers ("Undelivered Message Headers"), whatever RET the sender asked
"""
from __future__ import annotations

import email
import email.policy

import pytest

from estafeta.core import dsn

ORIGINAL = b"Subject: hello\nFrom: a@example.org\n\nthe secret body\n"
REASON = "host mx.tesis.com[127.0.0.2] said: 550 5.1.1 User unknown (in reply to RCPT TO command)"


def notice(kind=dsn.FAILURE, **kw) -> dsn.Notice:
    action = "failed" if kind == dsn.FAILURE else "delayed"
    rcpt = dsn.RecipientReport("bob@tesis.com", action, "5.1.1" if kind == dsn.FAILURE else "4.4.1", REASON)
    args = dict(kind=kind, hostname="mx.example.org", queue_id="ABC123", sender="a@example.org",
                to="pm@example.org", arrival=1700000000.0, now=1700003600.0, recipients=(rcpt,),
                original=ORIGINAL, retry_until=1700000000.0 + 5 * 86400, postmaster_copy=True)
    args.update(kw)
    return dsn.Notice(**args)


def parse(n: dsn.Notice):
    return email.message_from_bytes(dsn.build(n), policy=email.policy.default)


@pytest.mark.parametrize("kind, subject, action", [
    (dsn.FAILURE, "Postmaster Copy: Undelivered Mail", "failed"),
    (dsn.DELAY, "Postmaster Warning: Delayed Mail", "delayed"),
])
@pytest.mark.parametrize("ret", ["", "FULL", "HDRS"])
def test_postmaster_copy_is_headers_only_for_the_postmaster(kind, subject, action, ret):
    msg = parse(notice(kind, ret=ret))
    assert msg["Subject"] == subject, f"got {msg['Subject']!r}, want {subject!r}"
    assert msg["To"].addresses[0].addr_spec == "pm@example.org", f"got To: {msg['To']}"
    assert msg["Auto-Submitted"] == "auto-generated", f"got {msg['Auto-Submitted']}"
    human, status, returned = msg.iter_parts()
    # RET=FULL is the sender's wish for the sender's notice: the postmaster gets headers.
    assert returned.get_content_type() == "text/rfc822-headers", f"got {returned.get_content_type()}"
    raw = dsn.build(notice(kind, ret=ret))
    assert b"Subject: hello\n" in raw and b"the secret body" not in raw
    blocks = [dict(b.items()) for b in status.get_payload()]
    assert blocks[0]["X-Estafeta-Sender"] == "rfc822; a@example.org"
    assert blocks[1]["Action"] == action, f"got {blocks[1]['Action']}, want {action}"
    text = human.get_content()
    assert "copy for the postmaster" in text and "<a@example.org>" in text, f"got {text!r}"
    assert "I'm sorry" not in text and "THIS IS A WARNING ONLY" not in text, "no sender boilerplate"
    assert f"<bob@tesis.com>: {REASON}" in text


def test_failure_copy_describes_the_headers():
    raw = dsn.build(notice())
    assert b"Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n" in raw


def test_sender_notice_is_unchanged():
    msg = parse(notice(postmaster_copy=False, to="a@example.org"))
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert list(msg.iter_parts())[2].get_content_type() == "message/rfc822"
    assert b"the secret body" in dsn.build(notice(postmaster_copy=False))


def test_double_bounce_keeps_its_own_text_and_the_whole_notice():
    msg = parse(notice(sender="", to="postmaster"))
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    parts = list(msg.iter_parts())
    assert "a double bounce" in parts[0].get_content()
    assert parts[2].get_content_type() == "message/rfc822"
    assert b"the secret body" in dsn.build(notice(sender="", to="postmaster"))


RCPTS = ("pm-bounce", "pm-delay", "pm-2bounce")


@pytest.mark.parametrize("classes, want", [
    (["resource", "software"], dsn.PostmasterNotices()),                     # Postfix's default: nothing
    ([], dsn.PostmasterNotices()),
    (["bounce"], dsn.PostmasterNotices("pm-bounce", "", "pm-2bounce")),    # bounce implies double bounces
    (["2bounce"], dsn.PostmasterNotices("", "", "pm-2bounce")),
    (["delay"], dsn.PostmasterNotices("", "pm-delay", "")),
    (["Bounce", "DELAY", "2bounce", "resource"], dsn.PostmasterNotices(*RCPTS)),
])
def test_notify_classes(classes, want):
    got, warnings = dsn.postmaster_notices(classes, *RCPTS)
    assert got == want, f"got {got}, want {want}"
    assert warnings == [], f"got warnings {warnings}"
    assert got.copy_to(dsn.FAILURE) == want.bounce and got.copy_to(dsn.DELAY) == want.delay
    assert got.copy_to(dsn.SUCCESS) == ""


def test_notify_classes_warnings():
    got, warnings = dsn.postmaster_notices(["bounce", "policy", "protocol", "software", "bogus"], *RCPTS)
    assert got == dsn.PostmasterNotices("pm-bounce", "", "pm-2bounce")
    want = ["notify_classes: unknown class 'bogus': ignored",
            "notify_classes: policy, protocol: SMTP session transcripts to error_notice_recipient "
            "are not implemented yet: ignored"]
    assert warnings == want, f"got {warnings}, want {want}"
