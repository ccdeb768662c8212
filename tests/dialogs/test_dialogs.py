"""Runs every tests/dialogs/*.dialog against the in-memory server, plus
generated dialogs (CRLF.CRLF split at every point between two reads)."""
from __future__ import annotations

from pathlib import Path

import pytest

from estafeta.testing.dialog import InMemoryPeer, run_dialog

DIALOGS = sorted(Path(__file__).parent.glob("*.dialog"))


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_dialog(path: Path) -> None:
    problems = run_dialog(path.read_text(encoding="utf-8"), InMemoryPeer)
    assert not problems, "\n".join(problems)


ENVELOPE = """\
S: 220 mx.test ESMTP
C: HELO client.example
S: 250 mx.test
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: RCPT TO:<b@example.net>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
"""

BODY = b"line\r\n..dot\r\nlast\r\n.\r\nNOOP\r\n"


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_end_of_data_split_anywhere(cut: int) -> None:
    script = ENVELOPE + (
        f"C! {BODY[:cut]!r}\n"
        f"C! {BODY[cut:]!r}\n"
        "S: 250 2.0.0 Ok: queued as TESTID\n"
        "S: 250 2.0.0 Ok\n"
        'M! b"line\\n.dot\\nlast\\n"\n'
    )
    problems = run_dialog(script, InMemoryPeer)
    assert not problems, "\n".join(problems)


def test_runner_reports_mismatch() -> None:
    problems = run_dialog("S: 220 mx.test ESMTP\nC: NOOP\nS: 250 2.0.0 Fine\n", InMemoryPeer)
    assert problems == ["line 3: got '250 2.0.0 Ok', want '250 2.0.0 Fine'"]


def test_runner_reports_extra_replies() -> None:
    problems = run_dialog("S: 220 mx.test ESMTP\nC: NOOP\n", InMemoryPeer)
    assert problems == ["end: got extra replies ['250 2.0.0 Ok'], want nothing"]
