"""sendmail -bs on in-memory stdio: it answers with smtpd's settings
(core/smtpsettings.py), as Postfix's sendmail -bs runs its smtpd."""
import io
import os

from estafeta.cli import sendmail as sm
from estafeta.config.main_cf import MainConfig
from estafeta.queue.store import QueueStore


def session(tmp_path, main: str, dialog: bytes) -> tuple[list[str], QueueStore]:
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}/q\nmyhostname = mx.example.org\n{main}", "main.cf")
    out = io.BytesIO()
    assert sm.smtp_on_stdio(sm.Options(mode="s"), cfg, store, io.BytesIO(dialog), out) == 0
    return out.getvalue().decode().split("\r\n")[:-1], store


def test_banner_ehlo_and_recipient_limit_from_main_cf(tmp_path) -> None:
    dialog = (b"EHLO me\nMAIL FROM:<s@example.org>\nRCPT TO:<a@localhost>\nRCPT TO:<b@localhost>\n"
              b"RCPT TO:<c@localhost>\nDATA\nSubject: bs\n\nhi\n.\nQUIT\n")
    got, store = session(tmp_path, "smtpd_banner = $myhostname ESMTP local\nsmtpd_recipient_limit = 2\n"
                                   "smtputf8_enable = no\n", dialog)
    want = ["220 mx.example.org ESMTP local",
            "250-mx.example.org", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ENHANCEDSTATUSCODES",
            "250 8BITMIME",
            "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients",
            "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued", "221 2.0.0 Bye"]
    assert got == want, f"got {got}, want {want}"
    assert len(os.listdir(store.path("maildrop"))) == 1


def test_vrfy_and_strict_envelopes(tmp_path) -> None:
    dialog = b"HELO me\nVRFY demo\nMAIL FROM:s@example.org\nQUIT\n"
    got, _ = session(tmp_path, "disable_vrfy_command = yes\nstrict_rfc821_envelopes = yes\n", dialog)
    want = ["220 mx.example.org ESMTP", "250 mx.example.org", "502 5.5.1 VRFY command is disabled",
            "501 5.1.7 Bad sender address syntax", "221 2.0.0 Bye"]
    assert got == want, f"got {got}, want {want}"
