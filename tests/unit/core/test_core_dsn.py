"""core/dsn.py: notices parsed back with the email package."""
from __future__ import annotations

import email
import email.policy

import pytest

from estafeta.core import dsn

ORIGINAL = b"Subject: hello\nFrom: a@example.org\n\nbody line 1\nbody \xc3\xb1 line 2\n"
SAID = "host mx.tesis.com[127.0.0.2] said: 550 5.1.1 <bob@tesis.com>: User unknown (in reply to RCPT TO command)"


def notice(kind=dsn.FAILURE, **kw) -> dsn.Notice:
    rcpts = kw.pop("recipients", (dsn.RecipientReport("bob@tesis.com", "failed", "5.1.1", SAID,
                                                      "rfc822;Bob@tesis.com", "mx.tesis.com[127.0.0.2]:25"),))
    args = dict(kind=kind, hostname="mx.example.org", queue_id="ABC123", sender="a@example.org",
                to="a@example.org", arrival=1700000000.0, now=1700003600.0, recipients=rcpts,
                original=ORIGINAL, retry_until=1700000000.0 + 5 * 86400)
    args.update(kw)
    return dsn.Notice(**args)


def parse(n: dsn.Notice):
    raw = dsn.build(n)
    assert b"\r" not in raw, "notices have LF line endings (cleanup's format)"
    return email.message_from_bytes(raw, policy=email.policy.default)


def fields(msg):
    parts = list(msg.iter_parts())
    blocks = [dict(b.items()) for b in parts[1].get_payload()]
    return parts, blocks[0], blocks[1:]


def test_failure_notice_layout():
    msg = parse(notice(envid="ENV1"))
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert b"\nFrom: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n" in b"\n" + dsn.build(notice())
    assert msg["To"].addresses[0].addr_spec == "a@example.org" and msg["Auto-Submitted"] == "auto-replied"
    parts, head, (r,) = fields(msg)
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    assert head == {"Reporting-MTA": "dns; mx.example.org", "X-Estafeta-Queue-ID": "ABC123",
                    "X-Estafeta-Sender": "rfc822; a@example.org", "Original-Envelope-Id": "ENV1",
                    "Arrival-Date": head["Arrival-Date"]}
    assert r["Final-Recipient"] == "rfc822; bob@tesis.com"
    assert r["Original-Recipient"] == "rfc822; Bob@tesis.com"
    assert (r["Action"], r["Status"]) == ("failed", "5.1.1")
    assert r["Remote-MTA"] == "dns; mx.tesis.com"
    assert r["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@tesis.com>: User unknown"
    assert "Will-Retry-Until" not in r
    text = parts[0].get_content()
    assert text.startswith("This is the mail system at host mx.example.org.")
    assert "I'm sorry to have to inform you" in text and f"<bob@tesis.com>: {SAID}" in text
    # The original passes through byte for byte, 8-bit included.
    assert parts[2]["Content-Transfer-Encoding"] == "8bit"
    assert ORIGINAL in dsn.build(notice())


def test_no_envid_no_orcpt_no_fields():
    r = dsn.RecipientReport("bob@tesis.com", "failed", "5.0.0", "unknown user: \"bob\"")
    _, head, (got,) = fields(parse(notice(recipients=(r,))))
    assert "Original-Envelope-Id" not in head and "Original-Recipient" not in got and "Remote-MTA" not in got
    assert got["Diagnostic-Code"] == 'X-Estafeta; unknown user: "bob"'


def test_delay_notice():
    r = dsn.RecipientReport("bob@tesis.com", "delayed", "4.4.1", "connect to x[192.0.2.1]:25: Connection refused")
    msg = parse(notice(dsn.DELAY, recipients=(r,)))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    parts, _, (got,) = fields(msg)
    assert (got["Action"], got["Status"]) == ("delayed", "4.4.1") and "Will-Retry-Until" in got
    assert parts[2].get_content_type() == "text/rfc822-headers"    # headers by default for delay
    assert parts[2].get_content() == "Subject: hello\nFrom: a@example.org\n"
    text = parts[0].get_content()
    assert "could not be delivered for 1 hour(s)" in text and "until it is 5 day(s) old" in text


def test_success_notice_ret_full_honoured():
    r = dsn.RecipientReport("bob@tesis.com", "delivered", "2.0.0", "delivered to maildir")
    msg = parse(notice(dsn.SUCCESS, recipients=(r,), ret="FULL"))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    parts, _, (got,) = fields(msg)
    assert got["Action"] == "delivered" and parts[2].get_content_type() == "message/rfc822"


def test_ret_hdrs_on_failure():
    parts, _, _ = fields(parse(notice(ret="HDRS")))
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "body line" not in parts[2].get_content()


def test_size_limit_cuts_at_a_line_end():
    big = b"Subject: big\n\n" + b"".join(b"line %04d\n" % i for i in range(1000))
    _, body = dsn.returned_part(notice(original=big, size_limit=100))
    assert len(body) <= 100 and body.endswith(b"\n") and body.startswith(b"Subject: big\n")
    _, body = dsn.returned_part(notice(original=big, size_limit=0))
    assert body == big


def test_double_bounce_carries_the_undeliverable_notice_whole():
    """postconf(5) 2bounce: "Send undeliverable bounced mail to the postmaster": the
    whole notice, not only its headers (a postmaster *copy* of a bounce has headers only)."""
    msg = parse(notice(sender="", to="postmaster", postmaster_copy=True))
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    parts, head, _ = fields(msg)
    assert head["X-Estafeta-Sender"] == "rfc822;"
    assert parts[2].get_content_type() == "message/rfc822"
    assert b"body line 1" in dsn.build(notice(sender="", to="postmaster", postmaster_copy=True))


def test_hostile_values_stay_on_one_line():
    r = dsn.RecipientReport("bob@x\r\nBcc: evil@x", "failed", "5.0.0", "bad\nX-Injected: 1")
    raw = dsn.build(notice(recipients=(r,), envid="a\rb"))
    assert b"\nBcc:" not in raw and b"\nX-Injected" not in raw and b"\rb" not in raw


def test_boundary_never_inside_the_returned_message():
    n = notice(boundary="B")
    hostile = dsn.build(dsn.Notice(**{**{f: getattr(n, f) for f in n.__slots__}, "original": b"Subject: x\n\n--B\n"}))
    msg = email.message_from_bytes(hostile, policy=email.policy.default)
    assert len(list(msg.iter_parts())) == 3
    assert msg.get_boundary() != "B"


@pytest.mark.parametrize("reason, want", [
    (SAID, ("mx.tesis.com", "smtp; 550 5.1.1 <bob@tesis.com>: User unknown")),
    ("host a.b[1.2.3.4] refused to talk to me: 554 go away", ("a.b", "smtp; 554 go away")),
    ("message expired: connect refused", ("", "X-Estafeta; message expired: connect refused")),
])
def test_diagnostic(reason, want):
    assert dsn.diagnostic(reason) == want, f"got {dsn.diagnostic(reason)}, want {want}"
