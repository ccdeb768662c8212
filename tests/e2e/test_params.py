"""End to end: main.cf parameters that used to be declared and ignored, now doing what
Postfix's postconf(5) says: automatic BCC (always_bcc, sender_bcc_maps,
recipient_bcc_maps), mail_name in Received:, authorized_submit_users, and the SMTP
server's disable_vrfy_command, smtputf8_enable and strict_rfc821_envelopes."""
import email
import os
import pwd
import smtplib
import subprocess
import sys

from estafeta.testing.instance import wait_for

ME = pwd.getpwuid(os.getuid()).pw_name


def sendmail(inst, *args, input: bytes) -> subprocess.CompletedProcess:
    code = "import sys; from estafeta.cli.sendmail import sendmail_main as m; sys.argv[0] = 'sendmail'; sys.exit(m())"
    return subprocess.run([sys.executable, "-c", code, "-C", inst.root, *args], input=input,
                          capture_output=True, timeout=60)


def messages(inst, user):
    return [email.message_from_bytes(open(p, "rb").read()) for p in inst.delivered(user)]


def test_automatic_bcc_and_mail_name(instance_factory):
    inst = instance_factory(main={
        "always_bcc": "archive@localhost",
        "sender_bcc_maps": "inline:{ alice@example.org=sbcc@localhost }",
        "recipient_bcc_maps": "inline:{ demo@localhost=rbcc@localhost }",
        "mail_name": "Correo",
    }, start=False)
    with open(inst.path("vmailbox"), "a") as f:
        f.write("archive@localhost archive/Maildir/\nsbcc@localhost sbcc/Maildir/\nrbcc@localhost rbcc/Maildir/\n")
    inst.start()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.sendmail("alice@example.org", ["demo@localhost"], b"Subject: watched\r\n\r\nhello\r\n")
    for user in ("demo", "archive", "sbcc", "rbcc"):
        wait_for(lambda: inst.delivered(user), what=f"delivery to {user}")
    for user in ("demo", "archive", "sbcc", "rbcc"):
        got = [m["Subject"] for m in messages(inst, user)]
        assert got == ["watched"], f"{user}: got {got}, want one copy"
    received = " ".join(messages(inst, "demo")[0]["Received"].split())
    assert "by localhost (Correo) with ESMTP" in received, f"got Received: {received}"

    # A bounce is mail estafeta makes itself: no automatic BCC for it (the message
    # that bounced was new mail, so the archive has that one).
    r = sendmail(inst, "-f", "demo@localhost", "nobody@localhost", input=b"Subject: lost\n\nbody\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(inst.delivered("demo")) == 2, what="bounce to demo")
    wait_for(lambda: len(inst.delivered("archive")) == 2, what="archive copy of the submission")
    wait_for(lambda: inst.queue_count() == 0, what="empty queue")
    subjects = sorted(m["Subject"] for m in messages(inst, "archive"))
    assert subjects == ["lost", "watched"], f"got archive {subjects}, want no bounce in it"
    # Maildir file names need not sort in delivery order: look for the bounce by type.
    types = sorted(m.get_content_type() for m in messages(inst, "demo"))
    assert types == ["multipart/report", "text/plain"], f"got {types} in demo's Maildir"


def test_authorized_submit_users(instance_factory):
    inst = instance_factory(main={"authorized_submit_users": f"!{ME}, static:all"})
    r = sendmail(inst, "demo@localhost", input=b"Subject: refused\n\nbody\n")
    want = f"sendmail: fatal: User {ME}({os.getuid()}) is not allowed to submit mail"
    assert r.returncode == 77, f"got exit {r.returncode}, want 77 (EX_NOPERM)"
    assert want in r.stderr.decode(), f"got {r.stderr!r}, want {want!r}"
    assert os.listdir(os.path.join(inst.queue_dir, "maildrop")) == []
    inst.cli("config", "-e", f"authorized_submit_users = {ME}")
    # pickup checks the file's owner against the list too (root included, as root is
    # for the command): it must have read the new list before the file comes.
    before = set(inst.service_pids("pickup"))
    inst.cli("reload")
    wait_for(lambda: (now := set(inst.service_pids("pickup"))) and not now & before, 60, what="pickup with the new list")
    r = sendmail(inst, "demo@localhost", input=b"Subject: allowed\n\nbody\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: inst.delivered(), what="delivery")


def test_smtpd_vrfy_smtputf8_strict_envelopes(instance_factory):
    inst = instance_factory(main={"disable_vrfy_command": "yes", "smtputf8_enable": "no",
                                  "strict_rfc821_envelopes": "yes"})
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("smtputf8"), f"got EHLO features {s.esmtp_features}"
        got = s.docmd("VRFY demo")
        assert got == (502, b"5.5.1 VRFY command is disabled"), f"got {got}"
        got = s.docmd("MAIL FROM:<a@example.org> SMTPUTF8")
        assert got[0] == 555 and got[1].startswith(b"5.5.4"), f"got {got}, want 555 5.5.4"
        got = s.docmd("MAIL FROM:a@example.org")
        assert got == (501, b"5.1.7 Bad sender address syntax"), f"got {got}"
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        got = s.docmd("RCPT TO:demo@localhost")
        assert got == (501, b"5.1.3 Bad recipient address syntax"), f"got {got}"
        assert s.docmd("RCPT TO:<demo@localhost>")[0] == 250


def test_smtpd_defaults_vrfy_smtputf8_lenient_envelopes(instance):
    with smtplib.SMTP("127.0.0.1", instance.port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.has_extn("smtputf8")
        assert s.docmd("VRFY demo")[0] == 252
        assert s.docmd("MAIL FROM:a@example.org SMTPUTF8")[0] == 250
        assert s.docmd("RCPT TO:demo@localhost")[0] == 250


def test_ignored_parameter_warns_at_start(instance_factory):
    inst = instance_factory(main={"smtpd_tls_security_level": "may"}, start=False)
    r = inst.cli("start", check=False)
    inst.running = r.returncode == 0
    assert r.returncode == 0, r.stderr
    want = "smtpd_tls_security_level is not implemented yet (SPEC S1: STARTTLS): ignored"
    assert f"estafeta: warning: {inst.path('main.cf')}, line " in r.stderr and want in r.stderr, \
        f"got {r.stderr!r}, want a warning naming main.cf and its line: {want!r}"
