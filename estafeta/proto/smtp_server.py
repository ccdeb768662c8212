"""The server side of SMTP (RFC 5321) and LMTP (RFC 2033), sans-IO.

Owns command-line framing, command syntax and sequence checks, the DATA phase
(via framing.DataFramer) and the session state (via states.py tables). It takes
raw client bytes -- untrusted -- and gives events; it takes Replies and gives
wire bytes. It never decides policy (relay, unknown users, rate limits): those
replies come from the driver. It does no IO and keeps no clock.

    conn = ServerConnection("mx.example.org")
    transport.write(conn.greeting())
    conn.receive_data(chunk)                # b"" when the peer closed
    while (ev := conn.next_event()) not in (NEED_DATA, CLOSED):
        if not isinstance(ev, MessageData):  # MessageData needs no reply
            transport.write(conn.send(reply_for(ev)))

Every event except MessageData must be answered with send() before the next
next_event() call: the state after a pipelined command (RFC 2920) depends on
the reply to the one before it. In LMTP mode EndOfData takes one reply per
accepted recipient (RFC 2033 4.2).
Next: states.py (the rules), framing.py (DATA), address.py (MAIL/RCPT).
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

from estafeta.proto import dsn
from estafeta.proto import replies as R
from estafeta.proto.address import AddressError, parse_mail_from, parse_rcpt_to
from estafeta.proto.events import (
    CLOSED, NEED_DATA, BadCommand, Data, Ehlo, EndOfData, Event, Helo, Help, Lhlo, MailFrom,
    MessageData, NextEvent, Noop, Quit, RcptTo, Rset, Vrfy,
)
from estafeta.proto.framing import DataFramer
from estafeta.proto.replies import Reply, ehlo_reply
from estafeta.proto.states import State, next_state, refusal

__all__ = ["ServerConnection", "ehlo_reply", "MAX_COMMAND_LINE", "DEFAULT_MAIL_PARAMS"]

# RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
# Extensions that need more (AUTH, RFC 4954 4) will raise this per command.
MAX_COMMAND_LINE = 512
# MAIL parameters the codec understands itself; the driver adds others
# (RET, ENVID, AUTH...) through mail_params= when it announces them. The DSN ones
# (RFC 3461) are checked here when accepted: see dsn.py.
DEFAULT_MAIL_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8"})
_BODY_TYPES = frozenset({"7BIT", "8BITMIME"})          # RFC 6152 2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")      # TAB tolerated, like Postfix

_Parser = Callable[["ServerConnection", str], "Event | Reply"]


class ServerConnection:
    def __init__(self, hostname: str, *, max_line: int = 2048,
                 message_size_limit: int = 10240000, lmtp: bool = False,
                 max_errors: int = 20, max_junk: int = 100,
                 mail_params: frozenset[str] = DEFAULT_MAIL_PARAMS,
                 rcpt_params: frozenset[str] = frozenset(), strict_envelopes: bool = False,
                 refused_params: Mapping[str, Reply] | None = None) -> None:
        self.hostname = hostname
        self.max_line = max_line
        self.message_size_limit = message_size_limit
        self.lmtp = lmtp
        self.max_errors = max_errors
        self.max_junk = max_junk
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.strict = strict_envelopes     # strict_rfc821_envelopes: <path> required
        # MAIL/RCPT parameters refused with a reply of their own rather than 555 (the
        # DSN ones when smtpd_discard_ehlo_keywords has dsn, as Postfix does).
        self.refused_params: Mapping[str, Reply] = refused_params or {}
        self.state = State.CONNECTED
        self.errors = 0            # 4xx/5xx replies since the last accepted message
        self.junk = 0              # NOOP/VRFY/RSET since then (smtpd_junk_command_limit)
        self.recipients = 0        # accepted RCPTs in this transaction
        self.smtputf8 = False      # this transaction's MAIL carried SMTPUTF8
        self._buf = b""
        self._pos = 0              # self._buf[self._pos:] is unconsumed
        self._scanned = 0          # bytes after _pos known to hold no LF
        self._eof = False
        self._discarding = False   # inside an over-long command line
        self._pending: Event | None = None   # awaiting send()
        self._replies_due = 0      # LMTP: replies still owed to EndOfData
        self._end: EndOfData | None = None   # EndOfData to hand out after a last chunk
        self._framer: DataFramer | None = None
        self._verbs = _LMTP_VERBS if lmtp else _SMTP_VERBS

    # ---------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; b"" means the client closed."""
        if not data:
            self._eof = True
        elif self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf, self._pos = self._buf[self._pos:] + data, 0

    def next_event(self) -> NextEvent:
        if self.state is State.CLOSED:
            return CLOSED
        if self._pending is not None:
            raise RuntimeError(f"send a reply to {self._pending!r} first")
        if self._end is not None:
            ev: Event = self._end
            self._end = None
            return self._expect(ev)
        if self.state is State.IN_DATA:
            return self._next_data()
        if self.errors >= self.max_errors:
            return self._expect(BadCommand(R.TOO_MANY_ERRORS))
        return self._next_command()

    # --------------------------------------------------------------- output

    def greeting(self) -> bytes:
        return self.send(R.greeting(self.hostname))

    def ehlo_reply(self, extra: tuple[str, ...] = ()) -> Reply:
        return ehlo_reply(self.hostname, self.message_size_limit, extra)

    def send(self, reply: Reply) -> bytes:
        """Serialize `reply` and move the state as the reply to the pending event.

        With no event pending (banner, shutdown, timeout) only close=True matters.
        """
        if self.state is State.CLOSED:
            raise RuntimeError("connection is closed")
        ev, old = self._pending, self.state
        if ev is None:
            if reply.close:
                self.state = State.CLOSED
            return reply.to_bytes()
        # Postfix counts a command that failed (4xx or 5xx) as an error, and each junk
        # command past smtpd_junk_command_limit too, so that a client cannot stay for
        # ever on NOOPs sent just inside smtpd_timeout.
        if reply.code >= 400:
            self.errors += 1
        if type(ev) in _JUNK:
            self.junk += 1
            if self.junk > self.max_junk:
                self.errors += 1
        if isinstance(ev, EndOfData):
            self._replies_due -= 1
            if reply.is_positive:
                # Postfix: both limits count "without delivering mail".
                self.errors = self.junk = 0
            if self._replies_due > 0 and not reply.close:
                return reply.to_bytes()    # LMTP: more recipients to answer
        self._pending = None
        new = next_state(old, type(ev), reply)
        self.state = new
        if new in (State.READY, State.CONNECTED):     # no transaction open
            self.recipients, self.smtputf8 = 0, False
        if reply.is_positive:
            if isinstance(ev, MailFrom):
                self.smtputf8 = "SMTPUTF8" in ev.params
            elif isinstance(ev, RcptTo):
                self.recipients += 1
        if new is State.IN_DATA and old is not State.IN_DATA:
            self._framer = DataFramer(self.message_size_limit)
        return reply.to_bytes()

    # ------------------------------------------------------------ internals

    def _expect(self, ev: Event) -> Event:
        self._pending = ev
        if isinstance(ev, EndOfData):
            self._replies_due = self.recipients if self.lmtp and self.recipients else 1
        return ev

    def _no_event(self) -> NextEvent:
        if self._eof:
            self.state = State.CLOSED
            return CLOSED
        return NEED_DATA

    def _next_data(self) -> NextEvent:
        framer = self._framer
        assert framer is not None
        self._pos, chunk, done = framer.step(self._buf, self._pos)
        if done:
            self._framer = None
            end = EndOfData(framer.error)
            if chunk:
                self._end = end
                return MessageData(chunk)
            return self._expect(end)
        if chunk:
            return MessageData(chunk)
        # Peer gone mid-message: CLOSED; the driver drops the partial message.
        return self._no_event()

    def _next_command(self) -> NextEvent:
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos + self._scanned)
        if nl < 0:
            held = len(buf) - pos
            if self._discarding or held > self.max_line:
                # Do not buffer unbounded input: drop it, answer once the line ends.
                # Keep the last byte: it may be the CR of the line's CRLF, and a
                # bare LF must close the session however the line arrived.
                self._discarding = True
                self._pos, self._scanned = len(buf) - 1, 1
            else:
                self._scanned = held
            return self._no_event()
        self._pos, self._scanned = nl + 1, 0
        if self._discarding:
            self._discarding = False
            if buf[nl - 1] != 0x0D:
                return self._expect(BadCommand(R.BARE_LF_COMMAND))
            return self._expect(BadCommand(R.LINE_TOO_LONG))
        if nl == pos or buf[nl - 1] != 0x0D:
            return self._expect(BadCommand(R.BARE_LF_COMMAND))
        if nl + 1 - pos > MAX_COMMAND_LINE:
            return self._expect(BadCommand(R.LINE_TOO_LONG))
        ev = self._parse(buf[pos:nl - 1])
        return self._expect(ev if not isinstance(ev, Reply) else BadCommand(ev))

    def _parse(self, raw: bytes) -> Event | Reply:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return R.BAD_UTF8
        if _CONTROL.search(line):       # bare CR, NUL, ESC...: never in a command
            return R.CONTROL_CHARACTERS
        verb, _, arg = line.partition(" ")
        entry = self._verbs.get(verb.upper())
        if entry is None:
            return R.BAD_SYNTAX if not line.strip() else R.UNKNOWN_COMMAND
        kind, parse = entry
        refused = refusal(self.state, kind)
        if refused is not None:
            return R.SEND_LHLO if self.lmtp and refused is R.SEND_HELO else refused
        return parse(self, arg)

    # Command parsers: text after the verb -> event, or the reply refusing it.

    # The name's words are joined with one space, as Postfix's smtpd does: a TAB
    # (allowed in command lines) must not reach the helo_name queue file record.
    def _helo(self, arg: str) -> Event | Reply:
        name = " ".join(arg.split())
        return Helo(name) if name else R.SYNTAX_HELO

    def _ehlo(self, arg: str) -> Event | Reply:
        name = " ".join(arg.split())
        return Ehlo(name) if name else R.SYNTAX_EHLO

    def _lhlo(self, arg: str) -> Event | Reply:
        name = " ".join(arg.split())
        return Lhlo(name) if name else R.SYNTAX_LHLO

    def _mail(self, arg: str) -> Event | Reply:
        arg = arg.lstrip(" ")
        if arg[:5].upper() != "FROM:":
            return R.SYNTAX_MAIL
        try:
            address, params = parse_mail_from(arg[5:], strict=self.strict)
        except AddressError as e:
            return e.reply
        for key, value in params.items():
            if key in self.refused_params:
                return self.refused_params[key]
            if key not in self.mail_params:
                return R.BAD_PARAM
            if key == "SIZE":
                # RFC 1870 6: SIZE=<digits>; refuse early what would not fit.
                if value is None or not value.isdigit() or not value.isascii():
                    return R.BAD_SIZE_SYNTAX
                if self.message_size_limit and int(value) > self.message_size_limit:
                    return R.SIZE_EXCEEDED_MAIL
            elif key == "BODY" and (value is None or value.upper() not in _BODY_TYPES):
                return R.BAD_BODY
            elif key == "SMTPUTF8" and value is not None:
                return R.BAD_PARAM_SYNTAX
            elif (bad := dsn.check_mail_param(key, value)) is not None:     # RET, ENVID
                return bad
        return MailFrom(address, params)

    def _rcpt(self, arg: str) -> Event | Reply:
        arg = arg.lstrip(" ")
        if arg[:3].upper() != "TO:":
            return R.SYNTAX_RCPT
        try:
            address, params = parse_rcpt_to(arg[3:], smtputf8=self.smtputf8, strict=self.strict)
        except AddressError as e:
            return e.reply
        for key in params:
            if key in self.refused_params:
                return self.refused_params[key]
            if key not in self.rcpt_params:
                return R.BAD_PARAM
        for key, value in params.items():
            if (bad := dsn.check_rcpt_param(key, value)) is not None:      # NOTIFY, ORCPT
                return bad
        return RcptTo(address, params)

    def _data(self, arg: str) -> Event | Reply:
        return R.SYNTAX_DATA if arg.strip() else Data()

    def _rset(self, arg: str) -> Event | Reply:
        return R.SYNTAX_RSET if arg.strip() else Rset()

    def _quit(self, arg: str) -> Event | Reply:
        return R.SYNTAX_QUIT if arg.strip() else Quit()

    def _noop(self, arg: str) -> Event | Reply:
        return Noop()      # RFC 5321 4.1.1.9: a parameter string is allowed and ignored

    def _vrfy(self, arg: str) -> Event | Reply:
        arg = arg.strip()
        return Vrfy(arg) if arg else R.SYNTAX_VRFY

    def _help(self, arg: str) -> Event | Reply:
        return Help(arg.strip())


_JUNK = frozenset({Noop, Vrfy, Rset})       # Postfix's SMTPD_CMD_FLAG_LIMIT (ETRN too)

_COMMON: dict[str, tuple[type, _Parser]] = {
    "MAIL": (MailFrom, ServerConnection._mail),
    "RCPT": (RcptTo, ServerConnection._rcpt),
    "DATA": (Data, ServerConnection._data),
    "RSET": (Rset, ServerConnection._rset),
    "NOOP": (Noop, ServerConnection._noop),
    "QUIT": (Quit, ServerConnection._quit),
    "VRFY": (Vrfy, ServerConnection._vrfy),
    "HELP": (Help, ServerConnection._help),
}
_SMTP_VERBS = {**_COMMON, "HELO": (Helo, ServerConnection._helo),
               "EHLO": (Ehlo, ServerConnection._ehlo)}
# RFC 2033 4.1: LMTP has LHLO and no HELO/EHLO.
_LMTP_VERBS = {**_COMMON, "LHLO": (Lhlo, ServerConnection._lhlo)}
