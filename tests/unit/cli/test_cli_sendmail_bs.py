"""sendmail -bs on in-memory stdio (cli/sendmail_bs.py): it answers with smtpd's
settings (core/smtpsettings.py), as Postfix's sendmail -bs runs its smtpd, and logs,
times out and applies smtpd_discard_ehlo_keyword_address_maps as Postfix 3.7's
`smtpd -S` does. The log lines wanted here were read from a private Postfix's
maillog for the same sessions; tests/interop/test_sendmail_bs_postfix.py compares
the two live. One test runs the command on a real pipe for smtpd_timeout."""
import io
import os
import re
import subprocess
import sys
import threading
import time

from estafeta.cli import sendmail as sm
from estafeta.cli import sendmail_bs as bs
from estafeta.config.main_cf import MainConfig
from estafeta.queue.store import QueueStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
QID = re.compile(r"\b[0-9A-F]{21}\b")


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append("warning: " + msg)


class SilentAfter(io.BytesIO):
    """stdin that gives `data` and then nothing: each further read times out."""

    def read1(self, n: int = -1) -> bytes:
        got = super().read1(n)
        if not got:
            raise TimeoutError
        return got


def config(tmp_path, main: str) -> tuple[MainConfig, QueueStore]:
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}/q\nmyhostname = mx.example.org\n{main}", "main.cf")
    return cfg, store


def session(tmp_path, main: str, dialog: bytes, infile=None) -> tuple[list[str], list[str], QueueStore]:
    """(replies, log lines with queue ids as QID, store)."""
    cfg, store = config(tmp_path, main)
    out, log = io.BytesIO(), FakeLog()
    infile = infile or io.BytesIO(dialog)
    assert sm.smtp_on_stdio(sm.Options(mode="s"), cfg, store, infile, out, log=log) == 0
    return out.getvalue().decode().split("\r\n")[:-1], [QID.sub("QID", x) for x in log.lines], store


def test_banner_ehlo_and_recipient_limit_from_main_cf(tmp_path) -> None:
    dialog = (b"EHLO me\nMAIL FROM:<s@example.org>\nRCPT TO:<a@localhost>\nRCPT TO:<b@localhost>\n"
              b"RCPT TO:<c@localhost>\nDATA\nSubject: bs\n\nhi\n.\nQUIT\n")
    got, log, store = session(tmp_path, "smtpd_banner = $myhostname ESMTP local\nsmtpd_recipient_limit = 2\n"
                                        "smtputf8_enable = no\n", dialog)
    got = [QID.sub("QID", x) for x in got]
    want = ["220 mx.example.org ESMTP local",
            "250-mx.example.org", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ENHANCEDSTATUSCODES",
            "250 8BITMIME",
            "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients",
            "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued as QID", "221 2.0.0 Bye"]
    assert got == want, f"got {got}, want {want}"
    assert len(os.listdir(store.path("maildrop"))) == 1
    # Postfix: a recipient over the limit is not a failed command (overshoot limit).
    want_log = ["connect from localhost[127.0.0.1]", "QID: client=localhost[127.0.0.1]",
                "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=3 data=1 quit=1 commands=7"]
    assert log == want_log, f"got {log}, want {want_log}"


def test_recipient_limit_zero_means_none_up_to_the_maildrop_cap(tmp_path, monkeypatch) -> None:
    """smtpd_recipient_limit = 0 is no limit to estafeta (Postfix's code reads it so,
    but Postfix 3.7 refuses the value: "fatal: invalid smtpd_recipient_limit parameter
    value 0 < 1", smtpd and sendmail -bs alike); -bs still never takes more than a
    maildrop file may hold (pickup would move it to corrupt/ after our 250)."""
    from estafeta.queue import maildrop
    monkeypatch.setattr(maildrop, "MAX_RECIPIENTS", 3)
    dialog = b"HELO me\nMAIL FROM:<s@example.org>\n" + b"".join(b"RCPT TO:<r%d@localhost>\n" % i for i in range(4))
    got, _, _ = session(tmp_path, "smtpd_recipient_limit = 0\n", dialog + b"QUIT\n")
    assert got[3:7] == ["250 2.1.5 Ok"] * 3 + ["452 4.5.3 Error: too many recipients"], got


def test_vrfy_and_strict_envelopes(tmp_path) -> None:
    dialog = b"HELO me\nVRFY demo\nMAIL FROM:s@example.org\nQUIT\n"
    got, _, _ = session(tmp_path, "disable_vrfy_command = yes\nstrict_rfc821_envelopes = yes\n", dialog)
    want = ["220 mx.example.org ESMTP", "250 mx.example.org", "502 5.5.1 VRFY command is disabled",
            "501 5.1.7 Bad sender address syntax", "221 2.0.0 Bye"]
    assert got == want, f"got {got}, want {want}"


def test_queue_id_per_transaction_and_in_the_reply(tmp_path) -> None:
    dialog = (b"HELO me\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@localhost>\r\nDATA\r\nhi\r\n.\r\n"
              b"MAIL FROM:<>\r\nRCPT TO:<b@localhost>\r\nRSET\r\nQUIT\r\n")
    cfg, store = config(tmp_path, "")
    out, log = io.BytesIO(), FakeLog()
    bs.run(cfg, store, io.BytesIO(dialog), out, log=log)
    ids = [line.split(":")[0] for line in log.lines if line.endswith(": client=localhost[127.0.0.1]")]
    assert len(set(ids)) == 2, f"got {log.lines}, want two transactions with their own ids"
    assert f"250 2.0.0 Ok: queued as {ids[0]}\r\n".encode() in out.getvalue()
    assert log.lines[-1] == "disconnect from localhost[127.0.0.1] helo=1 mail=2 rcpt=2 data=1 rset=1 quit=1 commands=8"


def test_counters_as_postfix(tmp_path) -> None:
    # Postfix 3.7 logged, for this session (HELP left out: Postfix does not know it):
    # disconnect from localhost[127.0.0.1] helo=1 ehlo=1 mail=1 rcpt=1/3 rset=1 noop=1 vrfy=1 quit=1 unknown=0/1 commands=8/11
    dialog = (b"NOOP\r\nEHLO me\r\nRCPT TO:<a@b>\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bad addr\r\n"
              b"RCPT TO:<root@localhost>\r\nRSET\r\nVRFY root\r\nFOO\r\nHELO x\r\nQUIT\r\n")
    _, log, _ = session(tmp_path, "", dialog)
    want = ["connect from localhost[127.0.0.1]", "QID: client=localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] helo=1 ehlo=1 mail=1 rcpt=1/3 rset=1 noop=1 vrfy=1 quit=1 "
            "unknown=0/1 commands=8/11"]
    assert log == want, f"got {log}, want {want}"


def test_empty_line_is_no_command(tmp_path) -> None:
    # Postfix 3.7's sendmail -bs (smtpd -S) answers an empty or blank line 500 and
    # counts it nowhere, as its network smtpd does; read from its maillog:
    # disconnect from localhost[127.0.0.1] noop=1 quit=1 commands=2, and for the
    # second dialog "lost connection after HELO" then helo=1 commands=1.
    got, log, _ = session(tmp_path, "", b"\r\n   \r\nNOOP\r\nQUIT\r\n")
    assert got[1:3] == ["500 5.5.2 Error: bad syntax"] * 2, got
    want = ["connect from localhost[127.0.0.1]", "disconnect from localhost[127.0.0.1] noop=1 quit=1 commands=2"]
    assert log == want, f"got {log}, want {want}"
    (tmp_path / "2").mkdir()
    _, log, _ = session(tmp_path / "2", "", b"HELO x\n\n")
    want = ["connect from localhost[127.0.0.1]", "lost connection after HELO from localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] helo=1 commands=1"]
    assert log == want, f"got {log}, want {want}"


def test_lost_connection(tmp_path) -> None:
    head = b"HELO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<root@localhost>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n"
    cases = {
        b"": ["lost connection after CONNECT from localhost[127.0.0.1]",
              "disconnect from localhost[127.0.0.1] commands=0/0"],
        b"HELO me\r\nNOOP\r\n": ["lost connection after NOOP from localhost[127.0.0.1]",
                                 "disconnect from localhost[127.0.0.1] helo=1 noop=1 commands=2"],
        head: ["QID: client=localhost[127.0.0.1]",
               "lost connection after DATA (18 bytes) from localhost[127.0.0.1]",
               "disconnect from localhost[127.0.0.1] helo=1 mail=1 rcpt=1 data=0/1 commands=3/4"],
        # After the message, leaving without QUIT is not logged (Postfix neither).
        head + b".\r\n": ["QID: client=localhost[127.0.0.1]",
                          "disconnect from localhost[127.0.0.1] helo=1 mail=1 rcpt=1 data=1 commands=4"],
    }
    for i, (dialog, want) in enumerate(cases.items()):
        (tmp_path / str(i)).mkdir()
        _, log, _ = session(tmp_path / str(i), "", dialog)
        want = ["connect from localhost[127.0.0.1]", *want]
        assert log == want, f"{dialog!r}: got {log}, want {want}"


def test_too_many_errors(tmp_path) -> None:
    got, log, _ = session(tmp_path, "smtpd_hard_error_limit = 2\n", b"FOO\r\nBAR\r\nBAZ\r\nQUIT\r\n")
    assert got[-1] == "421 4.7.0 mx.example.org Error: too many errors", got
    want = ["connect from localhost[127.0.0.1]", "too many errors after UNKNOWN from localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] unknown=0/2 commands=0/2"]
    assert log == want, f"got {log}, want {want}"


def test_timeout(tmp_path) -> None:
    cases = {
        b"EHLO me\r\nMAIL FROM:<s@example.org>\r\n": [
            "timeout after MAIL from localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 commands=2"],
        b"HELO me\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<root@localhost>\r\nDATA\r\nSubject: x\r\n": [
            "QID: client=localhost[127.0.0.1]",
            "timeout after DATA (12 bytes) from localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] helo=1 mail=1 rcpt=1 data=0/1 commands=3/4"],
    }
    for i, (dialog, want) in enumerate(cases.items()):
        (tmp_path / str(i)).mkdir()
        got, log, store = session(tmp_path / str(i), "", dialog, infile=SilentAfter(dialog))
        assert got[-1] == "421 4.4.2 mx.example.org Error: timeout exceeded", f"got {got[-1]!r}"
        want = ["connect from localhost[127.0.0.1]", *want]
        assert log == want, f"got {log}, want {want}"
        assert os.listdir(store.path("maildrop")) == []


def test_discard_keywords_logged_at_ehlo(tmp_path) -> None:
    got, log, _ = session(tmp_path, "smtpd_discard_ehlo_keywords = pipelining, size\n", b"HELO a\r\nEHLO b\r\nQUIT\r\n")
    assert "250-PIPELINING" not in got and "250-SIZE 10240000" not in got, got
    assert log.count("discarding EHLO keywords: PIPELINING SIZE") == 1, log     # EHLO only, not HELO


def test_discard_maps_ask_for_127_0_0_1(tmp_path) -> None:
    # Postfix's smtpd -S looks its client up as 127.0.0.1; the first result replaces
    # smtpd_discard_ehlo_keywords; no result: the global list.
    (tmp_path / "ehlo.cidr").write_text("127.0.0.2 vrfy\n127.0.0.0/8 size, 8bitmime\n")
    main = (f"smtpd_discard_ehlo_keywords = pipelining\n"
            f"smtpd_discard_ehlo_keyword_address_maps = inline:{{127.0.0.2=vrfy}}, cidr:{tmp_path}/ehlo.cidr\n")
    got, log, _ = session(tmp_path, main, b"EHLO b\r\nQUIT\r\n")
    keywords = [x[4:] for x in got if x.startswith("250")]
    assert keywords == ["mx.example.org", "PIPELINING", "VRFY", "ENHANCEDSTATUSCODES", "SMTPUTF8"], keywords
    assert "discarding EHLO keywords: 8BITMIME SIZE" in log, log
    (tmp_path / "x").mkdir()
    got, log, _ = session(tmp_path / "x", "smtpd_discard_ehlo_keywords = vrfy\n"
                                          "smtpd_discard_ehlo_keyword_address_maps = inline:{127.0.0.2=size}\n",
                          b"EHLO b\r\nQUIT\r\n")
    assert "250-VRFY" not in got and "250-SIZE 10240000" in got, got
    assert "discarding EHLO keywords: VRFY" in log, log


def test_discard_maps_lookup_error(tmp_path) -> None:
    main = f"smtpd_discard_ehlo_keyword_address_maps = cidr:{tmp_path}/missing.cidr\n"
    got, log, _ = session(tmp_path, main, b"EHLO b\r\nQUIT\r\n")
    assert got == ["220 mx.example.org ESMTP", "421 4.3.0 mx.example.org Server local data error"], got
    assert log[0].startswith(f"warning: cidr:{tmp_path}/missing.cidr is unavailable"), log
    assert log[1] == "connect from localhost[127.0.0.1]", log
    assert log[2].startswith(f'warning: cidr:{tmp_path}/missing.cidr lookup error for "127.0.0.1"'), log
    want = ["warning: don't know what EHLO features to announce to localhost[127.0.0.1]",
            "NOQUEUE: reject: EHLO from localhost[127.0.0.1]: 421 4.3.0 mx.example.org Server local data error",
            "disconnect from localhost[127.0.0.1] ehlo=0/1 commands=0/1"]
    assert log[3:] == want, f"got {log[3:]}, want {want}"


def test_open_log(tmp_path) -> None:
    maillog = tmp_path / "maillog"
    cfg = MainConfig.parse(f"maillog_file = {maillog}\nmyhostname = mx.example.org\n", "main.cf")
    err = io.StringIO()
    # Never created by sendmail: root's file would lock mail_owner's daemons out.
    assert isinstance(bs.open_log(cfg, administrator=False, err=err), bs.NoLog)
    assert not maillog.exists() and err.getvalue() == "", err.getvalue()
    assert isinstance(bs.open_log(cfg, administrator=True, err=err), bs.NoLog)
    assert err.getvalue().count("warning: cannot open maillog_file") == 1, err.getvalue()
    maillog.write_text("")
    log = bs.open_log(cfg, administrator=False, err=err)
    log.info("connect from localhost[127.0.0.1]")
    log.flush()
    line = maillog.read_text()
    assert re.fullmatch(r"\w{3} [ \d]\d \d\d:\d\d:\d\d mx estafeta/smtpd\[\d+\]: connect from localhost\[127\.0\.0\.1\]\n",
                        line), line
    cfg = MainConfig.parse("myhostname = mx.example.org\n", "main.cf")
    assert isinstance(bs.open_log(cfg, administrator=True, err=err), bs.NoLog)   # stderr is the client's


def test_timeout_on_a_real_pipe(tmp_path) -> None:
    """The command itself, its stdin a pipe that stays open and silent: smtpd_timeout
    ends the session with Postfix's 421, and the maillog has the session."""
    cfg, store = config(tmp_path, "")
    maillog = tmp_path / "maillog"
    maillog.write_text("")
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/q\nmyhostname = mx.example.org\n"
                                      f"maillog_file = {maillog}\nsmtpd_timeout = 1s\n")
    code = "import sys; from estafeta.cli.sendmail import sendmail_main as m; sys.exit(m())"
    p = subprocess.Popen([sys.executable, "-c", code, "-C", str(tmp_path), "-bs"], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(30, p.kill)      # bounded, whatever happens
    watchdog.start()
    try:
        p.stdin.write(b"EHLO me\nMAIL FROM:<s@example.org>\n")
        p.stdin.flush()
        start = time.monotonic()
        out = p.stdout.read()                   # until the command ends: stdin stays open
        err = p.stderr.read()
        p.stdin.close()
        p.wait(10)
    finally:
        watchdog.cancel()
    took = time.monotonic() - start
    assert p.returncode == 0, err
    assert out.endswith(b"250 2.1.0 Ok\r\n421 4.4.2 mx.example.org Error: timeout exceeded\r\n"), out
    assert 0.9 < took < 20, f"got {took:.1f}s, want about smtpd_timeout (1s)"
    lines = [re.sub(r"^.*? estafeta/smtpd\[\d+\]: ", "", x) for x in maillog.read_text().splitlines()]
    want = ["connect from localhost[127.0.0.1]", "timeout after MAIL from localhost[127.0.0.1]",
            "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 commands=2"]
    assert lines == want, f"got {lines}, want {want}"
