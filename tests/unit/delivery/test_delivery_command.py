"""How a delivery command's end is read (delivery/command.py), shared by the local and
pipe agents: Postfix's pipe_command(3) and sys_exits(3), case by case."""
from __future__ import annotations

import pytest

from estafeta.delivery import base
from estafeta.delivery.command import OUTPUT_LIMIT, SYSEXITS, clean_output, outcome

B, D, S = base.BOUNCED, base.DEFERRED, base.SENT


def check(got, want) -> None:
    assert got == want, f"got {got!r}, want {want!r}"


# Postfix global/sys_exits.c, one row per <sysexits.h> code.
@pytest.mark.parametrize("code, want", [
    (64, (B, "5.3.0", "command line usage error")),
    (65, (B, "5.6.0", "data format error")),
    (66, (B, "5.3.0", "cannot open input")),
    (67, (B, "5.1.1", "user unknown")),
    (68, (B, "5.1.2", "host name unknown")),
    (69, (B, "5.3.0", "service unavailable")),
    (70, (B, "5.3.0", "internal software error")),
    (71, (D, "4.3.0", "system resource problem")),
    (72, (B, "5.3.0", "critical OS file missing")),
    (73, (B, "5.2.0", "can't create user output file")),
    (74, (B, "5.3.0", "input/output error")),
    (75, (D, "4.3.0", "temporary failure")),
    (76, (B, "5.5.0", "remote error in protocol")),
    (77, (B, "5.7.0", "permission denied")),
    (78, (B, "5.3.5", "local configuration error")),
])
def test_sysexits(code, want) -> None:
    check(outcome(code, b"", "/bin/cmd"), want)
    status, dsn, text = want
    check(outcome(code, b"it broke\n", "/bin/cmd"), (status, dsn, f"{text}. Command output: it broke "))


def test_sysexits_table_is_64_to_78() -> None:
    check(sorted(SYSEXITS), list(range(64, 79)))


@pytest.mark.parametrize("rc, out, want", [
    (0, b"", (S, "2.0.0", "")),
    (0, b"4.2.2 said something\n", (S, "2.0.0", "")),                # exit 0 is success, whatever it says
    (1, b"", (B, "5.3.0", 'Command died with status 1: "/bin/cmd"')),
    (1, b"line one\nline two\n", (B, "5.3.0", 'Command died with status 1: "/bin/cmd". Command output: line one line two ')),
    (100, b"x", (B, "5.3.0", 'Command died with status 100: "/bin/cmd". Command output: x')),
    (111, b"", (B, "5.3.0", 'Command died with status 111: "/bin/cmd"')),   # qmail's "soft" code means nothing here
    (-9, b"", (D, "4.3.0", 'Command died with signal 9: "/bin/cmd"')),
    (-15, b"bye\n", (D, "4.3.0", 'Command died with signal 15: "/bin/cmd". Command output: bye ')),
    (None, b"", (B, "5.3.0", 'Command time limit exceeded: "/bin/cmd"')),
    (None, b"still working\n", (B, "5.3.0", 'Command time limit exceeded: "/bin/cmd". Command output: still working ')),
])
def test_status_signal_and_time_limit(rc, out, want) -> None:
    check(outcome(rc, out, "/bin/cmd"), want)


@pytest.mark.parametrize("rc, out, want", [
    (1, b"4.2.2 mailbox full\n", (D, "4.2.2", "mailbox full ")),
    (75, b"5.1.1 no such user\n", (B, "5.1.1", "no such user ")),       # the text decides before the status
    (67, b"4.7.1 later please", (D, "4.7.1", "later please")),
    (1, b"5.123.456   spaces  kept inside \n", (B, "5.123.456", "spaces  kept inside  ")),
    (1, b"5.1.1", (B, "5.1.1", "")),                                    # the code alone
    (1, b"2.0.0 fine, but failed\n", (B, "5.0.0", "fine, but failed ")),   # bounce_append: class 2 is 5.0.0
    (1, b"5.1.1\tx\n", (B, "5.1.1", "x ")),                            # a tab is a space by then
])
def test_dsn_text_decides(rc, out, want) -> None:
    check(outcome(rc, out, "/bin/cmd"), want)


@pytest.mark.parametrize("out", [
    b" 5.1.1 leading space\n", b"3.1.1 no such class\n", b"5.1.1x glued\n", b"5.1234.1 too long\n",
    b"5.1.1234 too long\n", b"5..1 empty\n", b"5.1 short\n", b"5.1.1\r\n", b"\xd9\xa5.1.1 not ascii digits\n",
])
def test_invalid_dsn_text_falls_back_to_the_status(out) -> None:
    status, dsn, reason = outcome(67, out, "/bin/cmd")
    check((status, dsn), (B, "5.1.1"))
    assert reason.startswith("user unknown. Command output: "), reason


def test_signal_comes_before_dsn_text() -> None:
    check(outcome(-9, b"5.1.1 x\n", "/bin/cmd"), (D, "4.3.0", 'Command died with signal 9: "/bin/cmd". Command output: 5.1.1 x '))


def test_clean_output() -> None:
    check(clean_output(b"a\tb\nc\r\n\x00\x1b[1m\x7f"), "a b c_ __[1m_")
    check(clean_output("caf\u00e9 \u2028x".encode()), "caf\u00e9 _x")     # UTF-8 kept, a line separator not
    check(clean_output(b"bad \xff byte"), "bad _ byte")
    check(clean_output(b"x" * (OUTPUT_LIMIT + 100)), "x" * OUTPUT_LIMIT)
    check(OUTPUT_LIMIT, 4096)
