"""Delivery status notices: RFC 3464 multipart/report messages. Pure: no IO, no clock.

Owns what a notice says and how it is laid out; qmgr decides when one is due and
sends it through cleanup (daemons/qmgr.py: notify). Three kinds, as Postfix words
them for people:

    FAILURE  "Undelivered Mail Returned to Sender"      Action: failed
    DELAY    "Delayed Mail (still being retried)"       Action: delayed
    SUCCESS  "Successful Mail Delivery Report"          Action: delivered | relayed | expanded

The postmaster can get notices too (postconf(5) notify_classes, decided by qmgr):
a copy of a non-delivery notice ("Postmaster Copy: Undelivered Mail", class bounce)
or of a delay notice ("Postmaster Warning: Delayed Mail", class delay), and the
double bounce, an undeliverable notice (class 2bounce or bounce). The copies carry
the message headers only, whatever RET the sender asked for; a double bounce carries
the undeliverable notice whole (postconf(5) 2bounce). Both say who the notice was
about instead of the polite boilerplate (Notice.postmaster_copy).

Each is multipart/report; report-type=delivery-status (RFC 3462) with three parts:
a text/plain explanation, the message/delivery-status fields (RFC 3464 2.2, 2.3)
and the returned message: message/rfc822 for RET=FULL (default for failures),
text/rfc822-headers for RET=HDRS (default for delay and success), cut at a line
end to at most bounce_size_limit bytes.

Trust: recipient addresses, ENVID/ORCPT (checked by proto/dsn.py) and the remote
server's reply (escaped by the smtp agent) end up in header-like fields, so every
value is flattened to one line here again before it is written. The message is
assembled as bytes rather than through email.generator so the returned original
passes through untouched (a re-generated message can rewrap or re-encode it); the
tests parse every notice back with the email package.
Next: daemons/qmgr.py (when notices go out), proto/dsn.py (RET/ENVID/NOTIFY/ORCPT).
"""
from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

FAILURE, DELAY, SUCCESS = "failure", "delay", "success"

SUBJECTS = {
    FAILURE: "Undelivered Mail Returned to Sender",
    DELAY: "Delayed Mail (still being retried)",
    SUCCESS: "Successful Mail Delivery Report",
}
POSTMASTER_SUBJECT = "Postmaster Copy: Undelivered Mail"
POSTMASTER_SUBJECTS = {FAILURE: POSTMASTER_SUBJECT, DELAY: "Postmaster Warning: Delayed Mail"}

# postconf(5) notify_classes. estafeta sends the notices of the first three; the
# others ask for SMTP session transcripts (smtpd, cleanup: error_notice_recipient),
# not implemented yet. Postfix's default is "resource, software".
NOTICE_CLASSES = frozenset({"bounce", "2bounce", "delay"})
TRANSCRIPT_CLASSES = frozenset({"data", "policy", "protocol", "resource", "software"})
DEFAULT_CLASSES = frozenset({"resource", "software"})

# "host mx[192.0.2.7] said: 550 5.1.1 ... (in reply to RCPT TO command)": the
# smtp agent's wording; the reply itself becomes the smtp Diagnostic-Code.
_SAID = re.compile(r"^host (\S+?)\[[^\]]*\] said: (.*) \(in reply to [^()]* command\)$", re.S)
_REFUSED = re.compile(r"^host (\S+?)\[[^\]]*\] refused to talk to me: (.*)$", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient's line in a notice."""
    address: str              # Final-Recipient (rfc822)
    action: str               # failed, delayed, delivered, relayed, expanded
    status: str               # RFC 3463 x.y.z
    reason: str               # the agent's text: remote reply or local explanation
    original: str = ""        # stored ORCPT "addr-type;address" ("" = none given)
    relay: str = ""           # "mx.example.org[192.0.2.7]:25" when a server was reached
    last_attempt: float = 0.0


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str                 # FAILURE, DELAY or SUCCESS
    hostname: str             # myhostname: Reporting-MTA, From:
    queue_id: str             # of the original message
    sender: str               # the original envelope sender
    to: str                   # who gets the notice (the sender, or the postmaster)
    arrival: float
    now: float
    recipients: tuple[RecipientReport, ...]
    original: bytes           # the original message, LF line endings
    ret: str = ""             # "FULL", "HDRS" or "" (the kind's default)
    envid: str = ""
    size_limit: int = 50000
    retry_until: float = 0.0  # DELAY: when the message expires
    postmaster_copy: bool = False   # for the postmaster: a copy (sender set) or a double bounce (sender "")
    boundary: str = ""        # fixed by callers that need reproducible output (tests)


@dataclass(frozen=True, slots=True)
class PostmasterNotices:
    """Who gets which postmaster notice; "" = not sent (the class is off)."""
    bounce: str = ""          # copy of a non-delivery notice: bounce_notice_recipient
    delay: str = ""           # copy of a delay notice: delay_notice_recipient
    double_bounce: str = ""   # an undeliverable notice: 2bounce_notice_recipient

    def copy_to(self, kind: str) -> str:
        return self.bounce if kind == FAILURE else self.delay if kind == DELAY else ""


def postmaster_notices(classes: list[str], bounce_rcpt: str, delay_rcpt: str,
                       double_bounce_rcpt: str) -> tuple[PostmasterNotices, list[str]]:
    """notify_classes as Postfix's bounce(8) reads it, and the warnings to log once.

    bounce: a headers-only copy of every non-delivery notice to bounce_notice_recipient;
    delay: the same for delay notices (delay_notice_recipient); 2bounce *or* bounce:
    undeliverable notices (mail from the null sender) go to 2bounce_notice_recipient,
    otherwise they are discarded; that includes the default "resource, software".
    Names are case-insensitive. Postfix stops on an unknown name; here it is a
    warning, the name is ignored and the rest applies."""
    got = {c.strip().lower() for c in classes if c.strip()}
    warnings = [f"notify_classes: unknown class {c!r}: ignored"
                for c in sorted(got - NOTICE_CLASSES - TRANSCRIPT_CLASSES)]
    asked = sorted((got & TRANSCRIPT_CLASSES) - DEFAULT_CLASSES)
    if asked:
        warnings.append(f"notify_classes: {', '.join(asked)}: SMTP session transcripts to "
                        "error_notice_recipient are not implemented yet: ignored")
    return PostmasterNotices(
        bounce_rcpt if "bounce" in got else "",
        delay_rcpt if "delay" in got else "",
        double_bounce_rcpt if got & {"bounce", "2bounce"} else ""), warnings


def one_line(text: str) -> str:
    """Field values never span lines: control characters become a space."""
    return _CONTROL.sub(" ", text).strip()


def diagnostic(reason: str) -> tuple[str, str]:
    """(Remote-MTA host, Diagnostic-Code value) from an agent's reason text."""
    m = _SAID.match(reason) or _REFUSED.match(reason)
    if m:
        return m.group(1), "smtp; " + one_line(m.group(2))
    return "", "X-Estafeta; " + one_line(reason)


def _span(seconds: float) -> str:
    """A wait in the units people use: '40 second(s)', '4 hour(s)', '5 day(s)'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds / size
            return f"{n:.0f} {unit}(s)" if n >= 10 or n == int(n) else f"{n:.1f} {unit}(s)"
    return f"{max(0, int(seconds))} second(s)"


def _date(t: float) -> str:
    return email.utils.formatdate(t, localtime=True)


def human_text(n: Notice) -> str:
    """The first part: what happened, in words, and one line per recipient."""
    top = f"This is the mail system at host {n.hostname}.\n\n"
    lines = "".join(f"<{one_line(r.address)}>: {one_line(r.reason)}\n" for r in n.recipients)
    sign = "                   The mail system\n\n"
    if n.postmaster_copy and n.sender:
        what = ("could not be delivered to" if n.kind == FAILURE else
                "is delayed, and still being retried, for")
        body = (f"A copy for the postmaster: the message from <{one_line(n.sender)}>\n"
                f"{what} the recipients below.\n"
                "The headers of the message are attached below.\n\n")
    elif n.kind == FAILURE:
        if n.postmaster_copy:
            body = ("An undeliverable delivery status notice (a double bounce) follows: the\n"
                    f"message from <{one_line(n.sender)}> could not be delivered, and its sender\n"
                    "cannot be told. It is attached below.\n\n")
        else:
            body = ("I'm sorry to have to inform you that your message could not\n"
                    "be delivered to one or more recipients. It's attached below.\n\n"
                    "For further assistance, please send mail to postmaster.\n\n"
                    "If you do so, please include this problem report. You can\n"
                    "delete your own text from the attached returned message.\n\n")
    elif n.kind == DELAY:
        body = ("####################################################################\n"
                "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
                "####################################################################\n\n"
                f"Your message could not be delivered for {_span(n.now - n.arrival)}.\n"
                f"It will be retried until it is {_span(n.retry_until - n.arrival)} old.\n\n"
                "For further assistance, please send mail to postmaster.\n\n"
                "If you do so, please include this problem report. You can\n"
                "delete your own text from the attached returned message.\n\n")
    else:
        body = ("Your message was successfully delivered to the destination(s)\n"
                "listed below. If the message was delivered to mailbox you will\n"
                "receive no further notifications. Otherwise you may still receive\n"
                "notifications of mail delivery errors from other systems.\n\n")
    return top + body + sign + lines


def status_fields(n: Notice) -> str:
    """The message/delivery-status part: per-message fields, then per recipient."""
    out = [f"Reporting-MTA: dns; {one_line(n.hostname)}",
           f"X-Estafeta-Queue-ID: {one_line(n.queue_id)}",
           f"X-Estafeta-Sender: rfc822; {one_line(n.sender)}".rstrip()]
    if n.envid:
        out.append(f"Original-Envelope-Id: {one_line(n.envid)}")
    out.append(f"Arrival-Date: {_date(n.arrival)}")
    for r in n.recipients:
        host, diag = diagnostic(r.reason)
        if not host and r.relay and r.relay != "none":
            host = r.relay.split("[", 1)[0]
        out.append("")
        out.append(f"Final-Recipient: rfc822; {one_line(r.address)}")
        if r.original:
            atype, _, addr = r.original.partition(";")
            out.append(f"Original-Recipient: {one_line(atype)}; {one_line(addr)}")
        out.append(f"Action: {r.action}")
        out.append(f"Status: {r.status}")
        if host:
            out.append(f"Remote-MTA: dns; {one_line(host)}")
        out.append(f"Diagnostic-Code: {diag}")
        if r.last_attempt:
            out.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if n.kind == DELAY and n.retry_until:
            out.append(f"Will-Retry-Until: {_date(n.retry_until)}")
    return "\n".join(out) + "\n"


def returned_part(n: Notice) -> tuple[str, bytes]:
    """(content type, body) of the third part, at most size_limit bytes of it."""
    # A postmaster copy has headers only, whatever RET the sender asked for: the body
    # is the sender's business. A double bounce (postmaster_copy, null sender) carries
    # the undeliverable notice whole, as Postfix's does (postconf(5) 2bounce: "Send
    # undeliverable bounced mail to the postmaster"); bounce_size_limit still applies.
    if n.postmaster_copy:
        ret = "HDRS" if n.sender else "FULL"
    else:
        ret = n.ret.upper() or ("FULL" if n.kind == FAILURE else "HDRS")
    msg = n.original
    if ret == "HDRS":
        end = msg.find(b"\n\n")
        msg = msg[:end + 1] if end >= 0 else msg
    if n.size_limit > 0 and len(msg) > n.size_limit:
        cut = msg.rfind(b"\n", 0, n.size_limit)
        msg = msg[:cut + 1] if cut >= 0 else b""
    if msg and not msg.endswith(b"\n"):
        msg += b"\n"
    return ("message/rfc822" if ret == "FULL" else "text/rfc822-headers"), msg


def _cte(data: bytes) -> str:
    return "7bit" if data.isascii() else "8bit"


def build(n: Notice) -> bytes:
    """The whole notice, LF line endings, ready for cleanup (which adds Received:,
    Message-Id: and Date: when missing, as for any message)."""
    human = human_text(n).encode("utf-8", "surrogateescape")
    status = status_fields(n).encode("utf-8", "surrogateescape")
    ctype, returned = returned_part(n)
    boundary = n.boundary or f"{n.queue_id}.{int(n.now * 1000)}/{n.hostname}"
    while f"--{boundary}".encode() in returned:     # RFC 2046 5.1.1: must not occur inside
        boundary += "=_"
    subject = POSTMASTER_SUBJECTS.get(n.kind, POSTMASTER_SUBJECT) if n.postmaster_copy else SUBJECTS[n.kind]
    # RFC 3834 5: a notice answers the sender's message; a postmaster copy answers nobody.
    auto = "auto-generated" if n.postmaster_copy else "auto-replied"
    head = (f"From: MAILER-DAEMON@{n.hostname} (Mail Delivery System)\n"
            f"Subject: {subject}\n"
            f"To: <{one_line(n.to)}>\n"
            f"Date: {_date(n.now)}\n"
            f"Auto-Submitted: {auto}\n"
            "MIME-Version: 1.0\n"
            f'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"\n'
            "Content-Transfer-Encoding: 8bit\n"
            "\n"
            "This is a MIME-encapsulated message.\n\n").encode("utf-8", "surrogateescape")
    b = f"--{boundary}\n".encode()
    parts = [
        b + b"Content-Description: Notification\n"
            b"Content-Type: text/plain; charset=" + (b"us-ascii" if human.isascii() else b"utf-8") +
            b"\nContent-Transfer-Encoding: " + _cte(human).encode() + b"\n\n" + human + b"\n",
        b + b"Content-Description: Delivery report\nContent-Type: message/delivery-status\n"
            b"Content-Transfer-Encoding: " + _cte(status).encode() + b"\n\n" + status + b"\n",
        b + (b"Content-Description: Undelivered Message Headers\n"
             if n.kind == FAILURE and ctype == "text/rfc822-headers" else
             b"Content-Description: Undelivered Message\n" if n.kind == FAILURE else
             b"Content-Description: Message Headers\n" if ctype == "text/rfc822-headers" else
             b"Content-Description: Message\n") +
            f"Content-Type: {ctype}\n".encode() +
            b"Content-Transfer-Encoding: " + _cte(returned).encode() + b"\n\n" + returned + b"\n",
    ]
    return head + b"".join(parts) + f"--{boundary}--\n".encode()
