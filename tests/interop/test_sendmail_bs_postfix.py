"""`sendmail -bs` log lines: estafeta's and a private Postfix's (Debian's 3.7, whose
`sendmail -bs` runs `smtpd -S`) for the same sessions and settings.

Each case runs the same dialog on both commands (stdin a pipe; for the timeout case
it stays open and silent) and compares the smtpd lines each wrote to its maillog,
with program names, pids and queue ids taken out: connect, `ID: client=`, the
discard line at EHLO, smtpd_discard_ehlo_keyword_address_maps looked up for
127.0.0.1 (a result, no result, a missing table), lost connection, timeout, too
many errors, and the disconnect counters (an empty or blank line counts nowhere,
as in the network smtpd). Only the wording of the table-problem
warnings differs (each system names its own error); those are compared up to the
looked-up key. Recipe for the private Postfix: ../shared/PEERS.md section 7
(tests/interop/postfix_private.py). The same lines are pinned without Postfix in
tests/unit/cli/test_cli_sendmail_bs.py.
"""
import concurrent.futures
import os
import re
import subprocess
import sys
import threading

import pytest
from postfix_private import REQUIRES, base_main, private_postfix

from estafeta.queue.store import QueueStore
from estafeta.testing.instance import free_port, wait_for
from estafeta.testing.postfix import MASTER_CF

pytestmark = REQUIRES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENDMAIL = "/usr/sbin/sendmail"
MSG = b"HELO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<u@example.net>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n"

# name: (main.cf lines for both, dialog, leave stdin open at the end)
CASES = {
    "counters": ("", b"NOOP\r\nEHLO me\r\nRCPT TO:<a@b>\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bad addr\r\n"
                     b"RCPT TO:<u@example.net>\r\nRSET\r\nVRFY root\r\nFOO\r\nHELO x\r\nQUIT\r\n", False),
    "two_messages_lf": ("smtpd_recipient_limit = 1\n",
                        b"HELO x\nMAIL FROM:<s@example.org>\nRCPT TO:<u@example.net>\nRCPT TO:<v@example.net>\n"
                        b"DATA\nSubject: x\n\nhi\n.\nMAIL FROM:<>\nRCPT TO:<u@example.net>\nDATA\n.\nQUIT\n", False),
    "empty_lines": ("", b"\r\n   \r\nHELO x\r\n\r\nNOOP\r\n\nQUIT\r\n", False),
    "lost_after_empty_line": ("", b"HELO x\r\n\r\n", False),
    "eof_at_connect": ("", b"", False),
    "eof_in_data": ("", MSG, False),
    "eof_after_message": ("", MSG + b".\r\n", False),
    "too_many_errors": ("smtpd_hard_error_limit = 2\n", b"FOO\r\nBAR\r\nBAZ\r\nQUIT\r\n", False),
    "discard_global": ("smtpd_discard_ehlo_keywords = pipelining, dsn, 8bitmime\n",
                       b"HELO a\r\nEHLO b\r\nEHLO c\r\nQUIT\r\n", False),
    "discard_maps": ("smtpd_discard_ehlo_keywords = pipelining\n"
                     "smtpd_discard_ehlo_keyword_address_maps = cidr:{d}/ehlo.cidr\n",
                     b"EHLO b\r\nQUIT\r\n", False),
    "discard_maps_no_result": ("smtpd_discard_ehlo_keywords = vrfy\n"
                               "smtpd_discard_ehlo_keyword_address_maps = inline:{{127.0.0.2=size}}\n",
                               b"EHLO b\r\nQUIT\r\n", False),
    "discard_maps_missing": ("smtpd_discard_ehlo_keyword_address_maps = cidr:{d}/missing.cidr\n",
                             b"EHLO b\r\nQUIT\r\n", False),
    "timeout": ("", b"EHLO me\r\nMAIL FROM:<s@example.org>\r\n", True),
    "timeout_in_data": ("", b"HELO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<u@example.net>\r\nDATA\r\n"
                            b"Subject: x\r\n", True),
}
CIDR = "127.0.0.2 vrfy\n127.0.0.0/8 size, 8bitmime\n"
COMMON = "myhostname = mx.test\nsmtpd_timeout = 1s\n"

# Postfix's lines that are no part of the session: its smtpd opening Debian's
# default alias_maps and NIS, and the dict open error before connect.
NOISE = re.compile(r"^(error: open |warning: dict_nis_init)")
QID = re.compile(r"^[0-9A-F]{10,21}(?=: )")


def run(argv: list[str], dialog: bytes, stay_open: bool) -> bytes:
    p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(60, p.kill)
    watchdog.start()
    try:
        p.stdin.write(dialog)
        p.stdin.flush()
        if not stay_open:
            p.stdin.close()
        out = p.stdout.read()
        if stay_open:
            p.stdin.close()
        p.wait(10)
    finally:
        watchdog.cancel()
    return out


def smtpd_lines(log: str, table_dir: str) -> list[str]:
    """The smtpd lines of one session, normalized for comparison."""
    out = []
    for line in log.splitlines():
        m = re.match(r"^.*? \S+/smtpd\[\d+\]: (.*)$", line)
        if not m or NOISE.match(m.group(1)):
            continue
        text = QID.sub("QID", m.group(1)).replace(table_dir, "DIR")
        if " is unavailable" in text:
            continue            # wording and place differ; the lookup error below is compared
        if " lookup error for " in text:
            text = text[:text.index(" lookup error for ")] + ' lookup error for "127.0.0.1"'
        out.append(text)
    return out


def test_sendmail_bs_logs_as_postfix(tmp_path) -> None:
    est = tmp_path / "estafeta"
    est.mkdir()
    QueueStore(str(est / "q")).create_dirs()
    (est / "maillog").write_text("")
    port = free_port()
    problems = []
    with private_postfix("pf-bs-") as pf:
        pf.write(base_main(pf.dir) + COMMON + "mydestination =\ndefault_transport = discard\n",
                 MASTER_CF.format(port=port))
        pf.start([port])
        # The start-up probe of the port is a session too: let its lines pass first.
        wait_for(lambda: "disconnect from" in pf.maillog(), 10, what="the port probe's disconnect line")
        for d in (pf.etc, str(est)):
            with open(os.path.join(d, "ehlo.cidr"), "w") as f:
                f.write(CIDR)
        for name, (main, dialog, stay_open) in CASES.items():
            with open(pf.path("etc", "main.cf"), "w") as f:
                f.write(base_main(pf.dir) + COMMON + "mydestination =\ndefault_transport = discard\n"
                        + main.format(d=pf.etc))
            mark = len(pf.maillog())
            (est / "main.cf").write_text(f"queue_directory = {est}/q\nmaillog_file = {est}/maillog\n"
                                         + COMMON + main.format(d=est))
            (est / "maillog").write_text("")
            code = "import sys; from estafeta.cli.sendmail import sendmail_main as m; sys.exit(m())"
            # The two sessions are independent (own configuration, own log): run ours
            # while Postfix's runs, so each case costs one timeout, not two.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                ours = pool.submit(run, [sys.executable, "-c", code, "-C", str(est), "-bs"], dialog, stay_open)
                pf_out = run([SENDMAIL, "-C", pf.etc, "-bs"], dialog, stay_open)
                est_out = ours.result()
            # Postfix writes through postlogd: wait for its disconnect line.
            wait_for(lambda: "disconnect from" in pf.maillog()[mark:], 10, what=f"{name}: Postfix's disconnect line")
            want = smtpd_lines(pf.maillog()[mark:], pf.etc)
            got = smtpd_lines((est / "maillog").read_text(), str(est))
            if got != want:
                problems.append(f"{name}: got {got}\n  want {want}")
            # The client sees the same end of session (421s with the host name).
            last = [o.rstrip(b"\r\n").split(b"\r\n")[-1] for o in (est_out, pf_out)]
            if last[1].startswith(b"421") and last[0] != last[1]:
                problems.append(f"{name}: last reply got {last[0]!r}, want {last[1]!r}")
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
