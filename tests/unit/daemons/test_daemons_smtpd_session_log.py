"""smtpd's session log lines, as Postfix 3.7's (compared with a real Postfix in
tests/interop/test_disconnect_postfix.py): "lost connection after CMD" when the
client leaves without QUIT (not after a message's end), "timeout after CMD",
"too many errors after CMD", each before the disconnect line. A real event loop and
a fake transport; commands that need no restriction lists."""
from __future__ import annotations

import asyncio
import time

from smtpd_fakes import FakeConfig, FakeTransport

from estafeta.core import maillog
from estafeta.daemons import smtpd
from estafeta.daemons.smtpd import Session
from estafeta.proto import events as ev
from estafeta.proto import replies as R

CLIENT = "unknown[192.0.2.1]"


def session(sc: FakeConfig, commands: bytes, end: str) -> None:
    """Run one session; `end`: "eof" (the client closes), "server" (it closed already:
    the transport is closed, the loop reports the loss), "timeout"."""
    async def run() -> None:
        t = FakeTransport()
        s = Session(sc)
        s.connection_made(t)
        if commands:
            s.data_received(commands)
        if end == "eof":
            s.eof_received()
        elif end == "timeout":
            s.last = time.monotonic() - sc.timeout - 1
            s._check_timeout()
            assert t.out.decode().splitlines()[-1] == "421 4.4.2 mx.example.org Error: timeout exceeded"
        s.timer.cancel()
        s.connection_lost(None)
    asyncio.run(run())


def test_lost_connection_names_the_last_command(logged) -> None:
    cases = {
        b"": f"lost connection after CONNECT from {CLIENT}",
        b"EHLO c\r\nNOOP\r\n": f"lost connection after NOOP from {CLIENT}",
        b"EHLO c\r\nFOO\r\n": f"lost connection after UNKNOWN from {CLIENT}",
        b"EHLO c\r\n\r\n": f"lost connection after EHLO from {CLIENT}",
        b"EHLO c\r\nMAIL FROM:<a@example.org> xyz=1\r\n": f"lost connection after MAIL from {CLIENT}",
    }
    for commands, want in cases.items():
        logged.clear()
        session(FakeConfig(), commands, "eof")
        assert logged[-2] == want, f"{commands!r}: got {logged}, want {want!r} before the disconnect line"
        assert logged[-1].startswith(f"disconnect from {CLIENT}"), f"got {logged}"


def test_no_lost_connection_after_quit_or_a_closing_reply(logged) -> None:
    session(FakeConfig(), b"EHLO c\r\nQUIT\r\n", "eof")
    assert logged == ["connect from " + CLIENT, f"disconnect from {CLIENT} ehlo=1 quit=1 commands=2"], f"got {logged}"


def test_timeout_names_the_last_command(logged) -> None:
    session(FakeConfig(), b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n", "timeout")
    want = ["connect from " + CLIENT, f"timeout after MAIL from {CLIENT}",
            f"disconnect from {CLIENT} ehlo=1 mail=1 commands=2"]
    assert logged == want, f"got {logged}, want {want}"


def test_too_many_errors_names_the_last_command(logged) -> None:
    session(FakeConfig("smtpd_hard_error_limit = 2\n"), b"EHLO c\r\nFOO\r\nMAIL FROM:<a@example.org> x=1\r\nNOOP\r\n",
            "server")
    want = ["connect from " + CLIENT, f"too many errors after MAIL from {CLIENT}",
            f"disconnect from {CLIENT} ehlo=1 mail=0/1 unknown=0/1 commands=1/3"]
    assert logged == want, f"got {logged}, want {want}"


class AcceptingSession(Session):
    """A session whose restriction lists accept every recipient (a fake policy)."""

    def check_recipient(self, rcpt: str) -> R.Reply | None:
        return None


def test_recipient_limit_zero_is_no_limit(logged) -> None:
    # smtpd_recipient_limit = 0: no limit (Postfix's code path `if (var_smtpd_rcpt_limit
    # && ...)`; Postfix 3.7 itself refuses the value 0 at start-up). A limit of 2 for
    # contrast: the recipients past it get 452 and, within the overshoot limit, are
    # not failed commands (rcpt=5, as Postfix: test_disconnect_postfix.py "overshoot").
    dialog = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n" + b"RCPT TO:<r@example.org>\r\n" * 5 + b"QUIT\r\n"
    ok, too_many = "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients"
    for limit, want in (("0", [ok] * 5), ("2", [ok] * 2 + [too_many] * 3)):
        sc = FakeConfig(f"smtpd_recipient_limit = {limit}\n")
        sc.rcpt_limit = sc.smtp.rcpt_limit
        logged.clear()

        async def run() -> bytes:
            t = FakeTransport()
            s = AcceptingSession(sc)
            s.connection_made(t)
            s.data_received(dialog)
            s.timer.cancel()
            s.connection_lost(None)
            return bytes(t.out)
        got = asyncio.run(run()).decode().split("\r\n")
        rcpts = [line for line in got if line.startswith(("250 2.1.5", "452"))]
        assert rcpts == want, f"smtpd_recipient_limit = {limit}: got {rcpts}, want {want}"
        line = f"disconnect from {CLIENT} ehlo=1 mail=1 rcpt=5 quit=1 commands=8"
        assert logged[-1] == line, f"smtpd_recipient_limit = {limit}: got {logged[-1]!r}, want {line!r}"


def test_an_unexpected_error_is_a_421_and_a_traceback_not_a_silent_close(logged, monkeypatch) -> None:
    """STYLE 5: an exception in the codec or a handler ends the session with a
    temporary reply and a logged traceback; the client is never just cut off."""
    tracebacks: list[str] = []
    monkeypatch.setattr(maillog.log, "exception", lambda m: tracebacks.append(m))

    def broken_noop(session, e):
        raise RuntimeError("a bug")
    monkeypatch.setitem(smtpd.DISPATCH, ev.Noop, ("noop", broken_noop))

    async def run() -> FakeTransport:
        t = FakeTransport()
        s = Session(FakeConfig())
        s.connection_made(t)
        s.data_received(b"EHLO c\r\nNOOP\r\nNOOP\r\n")
        s.timer.cancel()
        s.connection_lost(None)
        return t
    t = asyncio.run(run())
    got = t.out.decode().split("\r\n")
    assert got[-2] == "421 4.3.0 Error: internal error" and t.closed, f"got {got}"
    assert tracebacks == [f"NOQUEUE: unexpected error in session with {CLIENT}"], f"got {tracebacks}"
    assert not any(x.startswith("lost connection") for x in logged), f"got {logged}"
