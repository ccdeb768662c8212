"""End to end: address rewriting (canonical, masquerading, virtual aliases, relocated)
and header_checks/body_checks actions through a real instance.

One instance holds every table; each test sends its own message and reads it back
from the Maildirs, the queue directories and the log.
"""
import email
import mailbox
import os
import smtplib

import pytest

from estafeta.testing.instance import Instance
from estafeta.testing.instance import wait_for as _wait_for


def wait_for(pred, what: str):
    return _wait_for(pred, 60, what=what)      # generous: the suite shares two cores


HEADER_CHECKS = """\
/^Subject:.*reject me/      REJECT no thanks
/^Subject:.*hold me/        HOLD kept for review
/^Subject:.*discard me/     DISCARD
/^Subject:.*prepend me/     PREPEND X-Prepended: yes
/^Subject:.*replace me/     REPLACE Subject: replaced
/^Subject:.*redirect me/    REDIRECT u3@localhost
/^X-Drop:/                  IGNORE
/^X-Warn:/                  WARN looked at
"""
BODY_CHECKS = "/forbidden body words/   REJECT 5.7.1 body rejected\n"
VIRTUAL = """\
team@localhost          u1@localhost, u2@localhost u3@localhost
@alias.example          demo@localhost
"""
USERS = ("demo", "u1", "u2", "u3")


@pytest.fixture(scope="module")
def inst():
    i = Instance()
    t = lambda name: f"texthash:{i.path(name)}"
    i.main.update({
        "sender_canonical_maps": t("sender_canonical"),
        "canonical_maps": t("canonical"),
        "masquerade_domains": "example.com",
        "virtual_alias_maps": t("virtual"),
        "virtual_alias_domains": "alias.example, other.example",
        "relocated_maps": t("relocated"),
        "header_checks": f"regexp:{i.path('header_checks')}",
        "body_checks": f"regexp:{i.path('body_checks')}",
    })
    files = {
        "sender_canonical": "joe@inside.example   Joe.Public@localhost\n",
        "canonical": "oldname@localhost   demo@localhost\n",
        "virtual": VIRTUAL,
        "relocated": "moved@localhost   new@elsewhere.example\n",
        "header_checks": HEADER_CHECKS,
        "body_checks": BODY_CHECKS,
    }
    for name, text in files.items():
        with open(i.path(name), "w") as f:
            f.write(text)
    i.init()
    with open(i.path("vmailbox"), "a") as f:
        f.write("".join(f"{u}@localhost {u}/Maildir/\n" for u in USERS[1:]))
    i.start()
    try:
        yield i
    finally:
        i.cleanup()


def send(inst, sender, rcpts, body: bytes):
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        return s.sendmail(sender, rcpts, body)


def messages(inst, user: str):
    try:
        return list(mailbox.Maildir(inst.maildir(user), create=False))
    except (FileNotFoundError, mailbox.NoSuchMailboxError):
        return []


def find(inst, user: str, subject: str):
    return wait_for(lambda: next((m for m in messages(inst, user) if m["Subject"] == subject), None),
                    f"{subject!r} for {user}")


def test_sender_canonical_rewrites_envelope_and_header(inst):
    send(inst, "joe@inside.example", ["demo@localhost"],
         b"From: Joe Public <joe@inside.example>\r\nSubject: canonical\r\n\r\nhi\r\n")
    m = find(inst, "demo", "canonical")
    assert m["Return-Path"] == "<Joe.Public@localhost>", f"got {m['Return-Path']}"
    assert m["From"] == "Joe Public <Joe.Public@localhost>", f"got {m['From']}"


def test_recipient_canonical_accepted_at_rcpt_and_rewritten(inst):
    send(inst, "a@sender.example", ["oldname@localhost"],
         b"To: Old Name <oldname@localhost>\r\nSubject: canonical rcpt\r\n\r\nhi\r\n")
    m = find(inst, "demo", "canonical rcpt")
    assert m["To"] == "Old Name <demo@localhost>", f"got {m['To']}"
    assert m["Delivered-To"] == "demo@localhost"


def test_masquerading_strips_subdomains_of_the_sender(inst):
    send(inst, "bob@host.dept.example.com", ["demo@localhost"],
         b"From: bob@host.dept.example.com\r\nCc: carol@x.example.com\r\nSubject: masq\r\n\r\nhi\r\n")
    m = find(inst, "demo", "masq")
    assert m["Return-Path"] == "<bob@example.com>", f"got {m['Return-Path']}"
    assert m["From"] == "bob@example.com" and m["Cc"] == "carol@example.com", f"got {m['From']} {m['Cc']}"


def test_virtual_alias_one_to_many_gives_three_copies(inst):
    send(inst, "a@sender.example", ["team@localhost"], b"Subject: team\r\n\r\nfor all\r\n")
    for u in ("u1", "u2", "u3"):
        m = find(inst, u, "team")
        assert m["Delivered-To"] == f"{u}@localhost"


def test_virtual_alias_catch_all_and_unknown_in_alias_domain(inst):
    send(inst, "a@sender.example", ["whoever@alias.example"], b"Subject: catch-all\r\n\r\nx\r\n")
    find(inst, "demo", "catch-all")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("a@sender.example")
        code, msg = s.rcpt("x@other.example")
        assert (code, msg[:5]) == (550, b"5.1.1"), f"got {code} {msg!r}, want 550 5.1.1"
        assert b"User unknown in virtual alias table" in msg


def test_relocated_refused_at_rcpt(inst):
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("a@sender.example")
        code, msg = s.rcpt("moved@localhost")
    want = b"5.1.6 <moved@localhost>: Recipient address rejected: User has moved to new@elsewhere.example"
    assert (code, msg) == (550, want), f"got {code} {msg!r}, want 550 {want!r}"


def test_header_checks_reject_at_end_of_data(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "a@sender.example", ["demo@localhost"], b"Subject: please reject me\r\n\r\nx\r\n")
    assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 no thanks"), f"got {e.value}"
    log = inst.log()
    assert "reject: header Subject: please reject me from localhost[127.0.0.1]; from=<a@sender.example> " \
           "to=<demo@localhost> proto=ESMTP helo=<" in log and ": 5.7.1 no thanks" in log, log[-2000:]


def test_body_checks_reject(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "a@sender.example", ["demo@localhost"],
             b"Subject: body\r\n\r\nfine line\r\nsome forbidden body words here\r\nmore\r\n")
    assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 body rejected"), f"got {e.value}"
    wait_for(lambda: "reject: body some forbidden body words here from localhost[127.0.0.1]" in inst.log(), what="log line: " + "reject: body some forbidden body words here from localhost[127.0.0.1]"[:60])


def test_header_checks_hold_puts_message_in_hold(inst):
    before = inst.queue_count("hold")
    send(inst, "a@sender.example", ["demo@localhost"], b"Subject: hold me\r\n\r\nx\r\n")
    assert inst.queue_count("hold") == before + 1, "got no new file in hold/"
    wait_for(lambda: "hold: header Subject: hold me from localhost[127.0.0.1]" in inst.log(), what="log line: " + "hold: header Subject: hold me from localhost[127.0.0.1]"[:60])
    assert not any(m["Subject"] == "hold me" for m in messages(inst, "demo"))


def test_header_checks_discard_accepts_and_queues_nothing(inst):
    r = send(inst, "a@sender.example", ["demo@localhost"], b"Subject: discard me\r\n\r\nx\r\n")
    assert r == {}
    line = next(x for x in inst.log().splitlines() if "discard: header Subject: discard me" in x)
    qid = line.split(": discard: ")[0].rsplit(" ", 1)[-1]
    wait_for(lambda: f"{qid}: discarded" in inst.log(), what="log line: " + f"{qid}: discarded"[:60])
    assert inst.cli("queue", "list", check=False).stdout.count(qid) == 0, "discarded mail is in the queue"


def test_header_checks_prepend_replace_ignore_warn(inst):
    send(inst, "a@sender.example", ["demo@localhost"],
         b"Subject: prepend me\r\nX-Drop: gone\r\nX-Warn: w\r\n\r\nx\r\n")
    m = find(inst, "demo", "prepend me")
    assert m["X-Prepended"] == "yes" and m["X-Drop"] is None and m["X-Warn"] == "w"
    raw = m.as_string()
    assert raw.index("X-Prepended: yes") < raw.index("Subject: prepend me"), raw
    wait_for(lambda: "warning: header X-Warn: w from localhost[127.0.0.1]" in inst.log(), what="log line: " + "warning: header X-Warn: w from localhost[127.0.0.1]"[:60])
    send(inst, "a@sender.example", ["demo@localhost"], b"Subject: replace me\r\n\r\nx\r\n")
    find(inst, "demo", "replaced")


def test_header_checks_redirect(inst):
    send(inst, "a@sender.example", ["demo@localhost"], b"Subject: redirect me\r\n\r\nx\r\n")
    m = find(inst, "u3", "redirect me")
    assert m["Delivered-To"] == "u3@localhost"
    assert not any(m["Subject"] == "redirect me" for m in messages(inst, "demo"))
