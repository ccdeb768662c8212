"""SMTP dialog scripts: run a scripted client against a server, compare replies.

Owns the dialog file format and an in-memory peer (ServerConnection plus a
driver that accepts everything). The same script can later run against a real
listening socket by passing another peer factory to run_dialog(). Test-only
code: scripts are trusted, but the C! expressions are still evaluated by a tiny
whitelist (bytes literals, +, *), never by eval().

Format, one directive a line:
    # comment                     blank lines are ignored too
    @name = value                 option for the peer factory (ints if digits), before C/S lines
    C: MAIL FROM:<a@b>            client sends the text plus CRLF
    C! b"DATA\\r\\nx\\n" + b"y" * 3  client sends exactly these bytes, as one read
    S: 250 2.1.0 Ok               the next server reply line, exactly
    M! b"x\\n"                     content of the last accepted message (skipped if the
                                  peer cannot tell)
    CLOSED                        the server has closed the connection
At the end, reply lines nobody asked for are reported too.
Next: tests/dialogs/ (the scripts), estafeta/proto/smtp_server.py.
"""
from __future__ import annotations

import ast
from collections import deque
from typing import Any, Callable, Protocol

from estafeta.proto import replies as R
from estafeta.proto.events import (
    CLOSED, NEED_DATA, BadCommand, Data, Ehlo, EndOfData, Event, Helo, Help, Lhlo, MailFrom,
    MessageData, Noop, Quit, RcptTo, Rset, Vrfy,
)
from estafeta.proto.replies import Reply
from estafeta.proto import dsn
from estafeta.proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection

HOSTNAME = "mx.test"


class DialogPeer(Protocol):
    def send(self, data: bytes) -> None: ...
    def read_line(self) -> str | None: ...        # next reply line, no CRLF; None if none
    def is_closed(self) -> bool: ...
    def last_message(self) -> bytes | None: ...   # None: unknown to this peer
    def leftover(self) -> list[str]: ...          # reply lines not read yet


class AcceptAllDriver:
    """Says yes to everything; answers end of data with queued("TESTID")."""

    def __init__(self, conn: ServerConnection, ehlo_extra: tuple[str, ...] = ()) -> None:
        self.conn = conn
        self.ehlo_extra = ehlo_extra
        self.messages: list[bytes] = []
        self._current: list[bytes] = []

    def handle(self, ev: Event) -> Reply | None:
        if isinstance(ev, MessageData):
            self._current.append(ev.data)
            return None
        if isinstance(ev, EndOfData):
            data, self._current = b"".join(self._current), []
            if ev.error is not None:
                return ev.error
            self.messages.append(data)
            return R.queued("TESTID")
        if isinstance(ev, BadCommand):
            return ev.reply
        if isinstance(ev, Helo):
            return R.helo_reply(self.conn.hostname)
        if isinstance(ev, (Ehlo, Lhlo)):
            return self.conn.ehlo_reply(self.ehlo_extra)
        simple: dict[type, Reply] = {
            MailFrom: R.SENDER_OK, RcptTo: R.RECIPIENT_OK, Data: R.START_DATA,
            Rset: R.RSET, Noop: R.NOOP, Quit: R.BYE, Vrfy: R.VRFY_REPLY, Help: R.HELP,
        }
        return simple[type(ev)]


class InMemoryPeer:
    """A ServerConnection and an AcceptAllDriver, fed one receive_data per send()."""

    def __init__(self, **options: Any) -> None:
        extra: tuple[str, ...] = ()
        if options.pop("dsn", 0):       # "@dsn = 1": offer and accept RFC 3461 DSN, as smtpd does
            extra = ("DSN",)
            options["mail_params"] = DEFAULT_MAIL_PARAMS | dsn.MAIL_PARAMS
            options["rcpt_params"] = dsn.RCPT_PARAMS
        self.conn = ServerConnection(options.pop("hostname", HOSTNAME), **options)
        self.driver = AcceptAllDriver(self.conn, extra)
        self.events: list[Event] = []
        self._out = bytearray(self.conn.greeting())
        self._lines: deque[str] = deque()

    def send(self, data: bytes) -> None:
        if self.conn.state.name == "CLOSED":
            return
        self.conn.receive_data(data)
        while True:
            ev = self.conn.next_event()
            if ev is NEED_DATA or ev is CLOSED:
                return
            self.events.append(ev)
            reply = self.driver.handle(ev)
            if reply is not None:
                self._out += self.conn.send(reply)

    def read_line(self) -> str | None:
        self._split()
        return self._lines.popleft() if self._lines else None

    def is_closed(self) -> bool:
        return self.conn.state.name == "CLOSED"

    def last_message(self) -> bytes | None:
        return self.driver.messages[-1] if self.driver.messages else b""

    def leftover(self) -> list[str]:
        self._split()
        rest, self._lines = list(self._lines), deque()
        return rest

    def _split(self) -> None:
        while (i := self._out.find(b"\r\n")) >= 0:
            self._lines.append(self._out[:i].decode("utf-8", "surrogateescape"))
            del self._out[:i + 2]


def byte_expr(text: str) -> bytes:
    """Evaluate `b"..." + b"x" * 3`-style expressions: bytes literals, ints, + and *."""
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, int)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"not allowed in a byte expression: {ast.dump(node)}")
    value = ev(ast.parse(text.strip(), mode="eval").body)
    if not isinstance(value, bytes):
        raise ValueError(f"not bytes: {text!r}")
    return value


def parse_options(text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("@"):
            key, _, value = line[1:].partition("=")
            value = value.strip()
            options[key.strip()] = int(value) if value.isdigit() else value
    return options


def run_dialog(text: str, driver_factory: Callable[..., DialogPeer]) -> list[str]:
    """Run the script; return mismatches, each "line N: got X, want Y" ([] = pass).

    driver_factory(**options) starts one session (options from "@" lines) and
    returns its peer: InMemoryPeer here, a socket-backed peer for live tests.
    """
    peer = driver_factory(**parse_options(text))
    problems: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith(("#", "@")):
            continue
        tag, arg = line[:2], line[3:] if line[2:3] == " " else line[2:]
        if tag == "C:":
            peer.send(arg.encode("utf-8") + b"\r\n")
        elif tag == "C!":
            peer.send(byte_expr(arg))
        elif tag == "S:":
            got = peer.read_line()
            if got != arg:
                shown = "nothing" + (" (connection closed)" if peer.is_closed() else "")
                problems.append(f"line {n}: got {got!r}, want {arg!r}" if got is not None
                                else f"line {n}: got {shown}, want {arg!r}")
        elif tag == "M!":
            want, got_msg = byte_expr(arg), peer.last_message()
            if got_msg is not None and got_msg != want:
                problems.append(f"line {n}: got message {got_msg!r}, want {want!r}")
        elif line.strip() == "CLOSED":
            if not peer.is_closed():
                problems.append(f"line {n}: got an open connection, want it closed")
        else:
            raise ValueError(f"line {n}: unknown directive {line!r}")
    extra = peer.leftover()
    if extra:
        problems.append(f"end: got extra replies {extra!r}, want nothing")
    return problems
