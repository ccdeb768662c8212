"""The SMTP session settings smtpd and sendmail -bs both build from main.cf
(core/smtpsettings.py): one function, so the two answer alike."""
import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.smtpsettings import smtp_settings
from estafeta.proto import events as ev
from estafeta.proto import replies as R


def cfg(text: str = "") -> MainConfig:
    return MainConfig.parse("myhostname = mx.example.org\n" + text, "main.cf")


def ehlo_lines(reply: R.Reply) -> list[str]:
    return [*reply.lines, reply.text]


def test_defaults() -> None:
    s = smtp_settings(cfg())
    got = ehlo_lines(s.ehlo)
    want = ["mx.example.org", "PIPELINING", "SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
            "SMTPUTF8"]
    assert got == want, f"got EHLO {got}, want {want}"
    assert s.banner == R.Reply(220, "", "mx.example.org ESMTP"), f"got banner {s.banner}"
    assert s.helo == R.helo_reply("mx.example.org")
    assert s.vrfy == R.VRFY_REPLY
    assert (s.smtputf8, s.strict_envelopes) == (True, False)
    assert (s.size_limit, s.line_limit, s.hard_errors, s.junk_limit, s.rcpt_limit) == (10240000, 2048, 20, 100, 1000)
    assert s.mail_params == {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}, f"got {sorted(s.mail_params)}"
    assert s.rcpt_params == {"NOTIFY", "ORCPT"}, f"got {sorted(s.rcpt_params)}"


def test_main_cf_settings() -> None:
    s = smtp_settings(cfg("smtputf8_enable = no\nstrict_rfc821_envelopes = yes\ndisable_vrfy_command = yes\n"
                          "message_size_limit = 5000\nsmtpd_banner = $myhostname ESMTP ready\n"
                          "line_length_limit = 1000\nsmtpd_hard_error_limit = 3\nsmtpd_junk_command_limit = 7\n"
                          "smtpd_recipient_limit = 2\n"))
    got = ehlo_lines(s.ehlo)
    want = ["mx.example.org", "PIPELINING", "SIZE 5000", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
    assert got == want, f"got EHLO {got}, want {want}"      # no VRFY, no SMTPUTF8
    assert "SMTPUTF8" not in s.mail_params
    assert s.vrfy == R.VRFY_DISABLED
    assert s.banner.text == "mx.example.org ESMTP ready", f"got banner {s.banner.text!r}"
    assert (s.strict_envelopes, s.size_limit, s.line_limit, s.hard_errors, s.junk_limit, s.rcpt_limit) == \
        (True, 5000, 1000, 3, 7, 2)


@pytest.mark.parametrize("settings, want", [
    # Postfix 3.7 (Debian 12) on the wire for the same settings, less ETRN and CHUNKING
    # (not implemented here); tests/interop/test_ehlo_postfix.py compares live.
    ("", ["PIPELINING", "SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]),
    ("disable_vrfy_command = yes\n",
     ["PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]),
    ("smtputf8_enable = no\n", ["PIPELINING", "SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]),
    ("message_size_limit = 0\n", ["PIPELINING", "SIZE", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]),
])
def test_ehlo_keywords_as_postfix(settings: str, want: list[str]) -> None:
    got = ehlo_lines(smtp_settings(cfg(settings)).ehlo)
    assert got == ["mx.example.org", *want], f"{settings!r}: got EHLO {got}, want {want}"


def test_without_dsn_only_dsn_differs() -> None:
    """sendmail -bs leaves DSN out (maildrop cannot carry NOTIFY/ORCPT); nothing else."""
    c = cfg("smtputf8_enable = no\n")
    full, bs = smtp_settings(c), smtp_settings(c, dsn=False)
    assert ehlo_lines(bs.ehlo) == [k for k in ehlo_lines(full.ehlo) if k != "DSN"], f"got {ehlo_lines(bs.ehlo)}"
    assert bs.mail_params == {"SIZE", "BODY"} and bs.rcpt_params == frozenset()
    same = ("hostname", "banner", "helo", "vrfy", "smtputf8", "strict_envelopes", "size_limit", "line_limit",
            "hard_errors", "junk_limit", "rcpt_limit")
    diff = [n for n in same if getattr(full, n) != getattr(bs, n)]
    assert diff == [], f"got differences in {diff}"


@pytest.mark.parametrize("strict, line, want", [
    ("no", b"MAIL FROM:a@example.org\r\n", ev.MailFrom),
    ("yes", b"MAIL FROM:a@example.org\r\n", ev.BadCommand),
    ("yes", b"MAIL FROM:<a@example.org>\r\n", ev.MailFrom),
])
def test_connection_applies_the_settings(strict: str, line: bytes, want: type) -> None:
    s = smtp_settings(cfg(f"strict_rfc821_envelopes = {strict}\n"))
    conn = s.connection()
    conn.send(s.banner)
    conn.receive_data(b"EHLO client.example\r\n")
    assert isinstance(conn.next_event(), ev.Ehlo)
    conn.send(s.ehlo)
    conn.receive_data(line)
    got = conn.next_event()
    assert isinstance(got, want), f"strict={strict} {line!r}: got {got}, want {want.__name__}"


@pytest.mark.parametrize("words, want", [
    # Postfix 3.7's maillog for the same smtpd_discard_ehlo_keywords, at each EHLO.
    ("", ""),
    ("pipelining", "discarding EHLO keywords: PIPELINING"),
    ("dsn, 8bitmime, size, vrfy, smtputf8, PIPELINING",
     "discarding EHLO keywords: 8BITMIME PIPELINING SIZE VRFY DSN EHLO_MASK_SMTPUTF8"),
    ("dsn 8bitmime size smtputf8 foo etrn chunking",
     "discarding EHLO keywords: 8BITMIME ETRN SIZE DSN EHLO_MASK_SMTPUTF8 CHUNKING"),
    ("silent-discard, dsn", ""),                    # the pseudo keyword stops the log line
    ("enhancedstatuscodes pipelining", ""),         # so does ENHANCEDSTATUSCODES, in Postfix 3.7
    ("no-such-keyword", ""),
])
def test_discard_log_line(words: str, want: str) -> None:
    got = smtp_settings(cfg(f"smtpd_discard_ehlo_keywords = {words}\n")).ehlo_log
    assert got == want, f"{words!r}: got {got!r}, want {want!r}"


@pytest.mark.parametrize("words, want", [
    ("pipelining, dsn", ["PIPELINING", "DSN"]),
    ("SIZE,vrfy", ["SIZE 10240000", "VRFY"]),
    ("8bitmime smtputf8 enhancedstatuscodes", ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]),
    ("silent-discard etrn starttls auth", []),
])
def test_discarded_keywords_not_announced(words: str, want: list[str]) -> None:
    full = ehlo_lines(smtp_settings(cfg()).ehlo)
    for dsn in (True, False):
        got = ehlo_lines(smtp_settings(cfg(f"smtpd_discard_ehlo_keywords = {words}\n"), dsn=dsn).ehlo)
        expected = [k for k in full if k not in want and (dsn or k != "DSN")]
        assert got == expected, f"{words!r} dsn={dsn}: got {got}, want {expected}"


def test_discard_dsn_refuses_its_parameters() -> None:
    for dsn in (True, False):
        s = smtp_settings(cfg("smtpd_discard_ehlo_keywords = dsn\n"), dsn=dsn)
        assert s.mail_params == {"SIZE", "BODY", "SMTPUTF8"} and s.rcpt_params == frozenset()
        assert dict(s.refused_params) == {p: R.DSN_DISABLED for p in ("RET", "ENVID", "NOTIFY", "ORCPT")}
        conn = s.connection()
        conn.send(s.banner)
        conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\n")
        conn.next_event()
        conn.send(s.ehlo)
        got = conn.next_event()
        assert isinstance(got, ev.BadCommand) and got.reply == R.DSN_DISABLED, f"dsn={dsn}: got {got}"


def test_discard_keeps_size_body_and_vrfy() -> None:
    """Postfix only hides SIZE, 8BITMIME, VRFY: the parameters and command still work."""
    s = smtp_settings(cfg("smtpd_discard_ehlo_keywords = size 8bitmime vrfy pipelining\n"))
    assert s.mail_params == {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}, f"got {sorted(s.mail_params)}"
    assert s.vrfy == R.VRFY_REPLY and s.size_limit == 10240000


def test_discard_smtputf8_refuses_the_parameter() -> None:
    s = smtp_settings(cfg("smtpd_discard_ehlo_keywords = SMTPUTF8\n"))
    assert "SMTPUTF8" not in s.mail_params and "SMTPUTF8" not in ehlo_lines(s.ehlo)
