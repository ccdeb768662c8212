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
from estafeta.proto.vrfy import address_ok as vrfy_address_ok, words as vrfy_words
from estafeta.proto import replies as R
from estafeta.proto.address import AddressError, parse_mail_from, parse_rcpt_to
from estafeta.proto.events import (
    CLOSED, NEED_DATA, BadCommand, Data, Ehlo, EndOfData, Event, Helo, Help, Lhlo, MailFrom,
    MessageData, NextEvent, Noop, Quit, RcptTo, Rset, Vrfy,
)
from estafeta.proto.framing import DataFramer
from estafeta.proto.replies import Reply, ehlo_reply
from estafeta.proto.states import State, next_state, refusal

__all__ = ["ServerConnection", "ehlo_reply", "MAX_COMMAND_LINE", "DEFAULT_MAIL_PARAMS", "COUNTERS", "SMTP_COUNTER", "disconnect_counts"]

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
                 max_errors: int = 20, max_junk: int = 100, max_overshoot: int = 1000,
                 mail_params: frozenset[str] = DEFAULT_MAIL_PARAMS,
                 rcpt_params: frozenset[str] = frozenset(), strict_envelopes: bool = False,
                 refused_params: Mapping[str, Reply] | None = None, vrfy: bool = True,
                 vrfy_resolve: bool = True) -> None:
        self.hostname = hostname
        self.max_line = max_line
        self.message_size_limit = message_size_limit
        self.lmtp = lmtp
        self.max_errors = max_errors
        self.max_junk = max_junk
        self.max_overshoot = max_overshoot   # smtpd_recipient_overshoot_limit
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.strict = strict_envelopes     # strict_rfc821_envelopes: <path> required
        # MAIL/RCPT parameters refused with a reply of their own rather than 555 (the
        # DSN ones when smtpd_discard_ehlo_keywords has dsn, as Postfix does).
        self.refused_params: Mapping[str, Reply] = refused_params or {}
        # VRFY: False for disable_vrfy_command (502 before any syntax check, as Postfix);
        # vrfy_resolve: check the address's domain too (not in sendmail -bs, as
        # Postfix's smtpd -S). vrfy_refused: the argument of the last VRFY refused
        # BAD_VRFY_ADDRESS, for the driver's warning.
        self.vrfy_enabled = vrfy
        self.vrfy_resolve = vrfy_resolve
        self.vrfy_refused = ""
        self.state = State.CONNECTED
        self.errors = 0            # 4xx/5xx replies since the last accepted message
        self.junk = 0              # NOOP/VRFY/RSET since then (smtpd_junk_command_limit)
        self.recipients = 0        # accepted RCPTs in this transaction
        self.overshoot = 0         # RCPTs refused TOO_MANY_RECIPIENTS in this transaction
        # Postfix's state->where, for "lost connection/timeout/too many errors after
        # WHERE": the counter of the last command (a string the verb table already
        # holds), AFTER_CONNECT or AFTER_EOM; turned into text only by where_text().
        self.where = AFTER_CONNECT
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
            return self._expect(BadCommand(R.TOO_MANY_ERRORS, ""))     # before any command
        return self._next_command()

    def where_text(self) -> str:
        """Postfix's name for where the session is, for the log lines "lost connection
        after X", "timeout after X", "too many errors after X": CONNECT before any
        command, the last command's verb (UNKNOWN for one not known; an empty line
        changes nothing), "DATA (N bytes)" inside a message, END-OF-MESSAGE after
        one. N counts the complete lines received, unstuffed, with CRLF (Postfix's
        act_size: a last line without its end is not counted; past
        message_size_limit it stays at the last whole line that fit; after a bare LF
        it goes on counting: framing.py)."""
        if self._framer is not None:       # in a message (also once the client left)
            return f"DATA ({self._framer.size_with(self._buf[self._pos:])} bytes)"
        return self.where.upper()

    def error_counted(self, reply: Reply) -> bool:
        """Whether `reply`, sent now for the pending command, is a failed command (the
        hard error limit, the disconnect line's ok/total). Postfix: any 4xx/5xx but a
        RCPT past smtpd_recipient_limit, until smtpd_recipient_overshoot_limit such
        refusals in the transaction."""
        return reply.code >= 400 and (reply is not R.TOO_MANY_RECIPIENTS or self.overshoot >= self.max_overshoot)

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
            if reply is R.TOO_MANY_RECIPIENTS:
                self.overshoot += 1
                if self.overshoot > self.max_overshoot:
                    self.errors += 1
            else:
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
            self.recipients, self.smtputf8, self.overshoot = 0, False, 0
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
            self.where = AFTER_EOM
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
            self.where = "unknown"
            if buf[nl - 1] != 0x0D:
                return self._expect(BadCommand(R.BARE_LF_COMMAND))
            return self._expect(BadCommand(R.LINE_TOO_LONG))
        if nl == pos or buf[nl - 1] != 0x0D:
            self.where = "unknown"
            return self._expect(BadCommand(R.BARE_LF_COMMAND))
        if nl + 1 - pos > MAX_COMMAND_LINE:
            self.where = "unknown"
            return self._expect(BadCommand(R.LINE_TOO_LONG))
        return self._expect(self._parse(buf[pos:nl - 1]))

    def _parse(self, raw: bytes) -> Event:
        # A refused command is counted under its verb, as Postfix counts it (the
        # disconnect line's "mail=0/1"): the BadCommand carries the verb's counter.
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.where = self._counter(raw)
            return BadCommand(R.BAD_UTF8, self.where)
        verb, _, arg = line.partition(" ")
        entry = self._verbs.get(verb.upper())
        if entry is None:
            if line.strip():
                self.where = "unknown"  # Postfix: not for an empty line
            if _CONTROL.search(line):
                return BadCommand(R.CONTROL_CHARACTERS)
            # An empty line is no command: Postfix does not count it.
            return BadCommand(R.BAD_SYNTAX, "") if not line.strip() else BadCommand(R.UNKNOWN_COMMAND)
        kind, parse, name = entry
        self.where = name
        if _CONTROL.search(line):       # bare CR, NUL, ESC...: never in a command
            return BadCommand(R.CONTROL_CHARACTERS, name)
        if kind is not None:
            refused = refusal(self.state, kind)
            if refused is not None:
                return BadCommand(R.SEND_LHLO if self.lmtp and refused is R.SEND_HELO else refused, name)
        ev = parse(self, arg)
        return ev if type(ev) is not Reply else BadCommand(ev, name)

    def _counter(self, raw: bytes) -> str:
        """The counter of a line that is not UTF-8: its verb's, if it has a known one."""
        entry = self._verbs.get(raw.split(b" ", 1)[0].decode("ascii", "replace").upper())
        return entry[2] if entry is not None else "unknown"

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
            return e.reply if arg[5:].strip() else R.SYNTAX_MAIL
        for key, value in params.items():
            if key in self.refused_params:
                return self.refused_params[key]
            # Postfix: 555 naming the parameter for one it does not take, for a
            # keyword without its value (SIZE, RET) and for BODY=X or SMTPUTF8=x.
            if (key not in self.mail_params or (value is None and key in _NEEDS_VALUE)
                    or (key == "BODY" and (value or "").upper() not in _BODY_TYPES)
                    or (key == "SMTPUTF8" and value is not None)):
                return R.bad_param(_as_written(arg, key))
            if key == "SIZE":
                # RFC 1870 6: SIZE=<digits>; refuse early what would not fit.
                if not value or not value.isdigit() or not value.isascii():
                    return R.BAD_SIZE_SYNTAX
                if self.message_size_limit and int(value) > self.message_size_limit:
                    return R.SIZE_EXCEEDED_MAIL
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
            return e.reply if arg[3:].strip() else R.SYNTAX_RCPT
        for key, value in params.items():
            if key in self.refused_params:
                return self.refused_params[key]
            if key not in self.rcpt_params or (value is None and key in _NEEDS_VALUE):
                return R.bad_param(_as_written(arg, key))
        for key, value in params.items():
            if (bad := dsn.check_rcpt_param(key, value)) is not None:      # NOTIFY, ORCPT
                return bad
        return RcptTo(address, params)

    def _data(self, arg: str) -> Event | Reply:
        return R.SYNTAX_DATA if arg.strip() else Data()

    def _rset(self, arg: str) -> Event | Reply:
        return R.SYNTAX_RSET if arg.strip() else Rset()

    def _quit(self, arg: str) -> Event | Reply:
        return Quit()      # Postfix ignores what follows QUIT

    def _noop(self, arg: str) -> Event | Reply:
        return Noop()      # RFC 5321 4.1.1.9: a parameter string is allowed and ignored

    # Postfix's vrfy_cmd: disabled first; a last word SMTPUTF8 is the RFC 6531 3.7.4.2
    # option (when offered); the other words, joined with one space, must be one
    # address (vrfy.py). Vrfy.arg is that joined text.
    def _vrfy(self, arg: str) -> Event | Reply:
        if not self.vrfy_enabled:
            return R.VRFY_DISABLED
        words = vrfy_words(arg)
        utf8 = "SMTPUTF8" in self.mail_params
        smtputf8 = utf8 and bool(words) and words[-1].upper() == "SMTPUTF8"
        if smtputf8:
            words.pop()
        if not words:
            return R.SYNTAX_VRFY_UTF8 if utf8 else R.SYNTAX_VRFY
        text = " ".join(words)
        if not vrfy_address_ok(text, smtputf8=smtputf8, resolve=self.vrfy_resolve):
            self.vrfy_refused = text
            return R.BAD_VRFY_ADDRESS
        return Vrfy(text)

    def _help(self, arg: str) -> Event | Reply:
        return Help(arg.strip())

    # Verbs Postfix knows and the codec does not implement: refused with Postfix's
    # reply for the feature turned off, and counted under their own name.
    def _starttls(self, arg: str) -> Event | Reply:
        return R.SYNTAX_STARTTLS if arg.strip() else R.STARTTLS_NOT_IMPLEMENTED

    def _auth(self, arg: str) -> Event | Reply:
        if self.state is State.CONNECTED:
            return R.SEND_LHLO if self.lmtp else R.SEND_HELO
        return R.AUTH_NOT_ENABLED

    def _bdat(self, arg: str) -> Event | Reply:
        return R.BDAT_NOT_IMPLEMENTED

    def _etrn(self, arg: str) -> Event | Reply:
        if self.state is State.CONNECTED:
            return R.ETRN_SEND_HELO
        if self.state is not State.READY:
            return R.ETRN_MAIL_IN_PROGRESS
        words = arg.split()
        return R.etrn_unavailable(words[0]) if len(words) == 1 else R.SYNTAX_ETRN

    def _xclient(self, arg: str) -> Event | Reply:       # and XFORWARD
        return R.MAIL_IN_PROGRESS if self.state in (State.IN_TXN, State.HAVE_RCPT) else R.NOT_AUTHORIZED


def _as_written(arg: str, key: str) -> str:
    """The MAIL/RCPT parameter `key` as the client wrote it ("xyz=1"), for the reply
    that names it. Parameters follow the address: looked for from the end."""
    for word in reversed(arg.split(" ")):
        if word.partition("=")[0].upper() == key:
            return word
    return key


# RFC 1870 SIZE, RFC 3461 RET, ENVID, NOTIFY, ORCPT: "KEY" alone is not the keyword.
_NEEDS_VALUE = frozenset({"SIZE", "RET", "ENVID", "NOTIFY", "ORCPT"})
_JUNK = frozenset({Noop, Vrfy, Rset})       # Postfix's SMTPD_CMD_FLAG_LIMIT (ETRN too)
# Postfix's state->where before any command and after a message's end (smtpd.h).
AFTER_CONNECT = "CONNECT"
AFTER_EOM = "END-OF-MESSAGE"

# verb -> (event type, or None for a verb refused whatever the state; parser; the
# counter it goes to in the disconnect line, COUNTERS).
_COMMON: dict[str, tuple[type | None, _Parser, str]] = {
    "MAIL": (MailFrom, ServerConnection._mail, "mail"),
    "RCPT": (RcptTo, ServerConnection._rcpt, "rcpt"),
    "DATA": (Data, ServerConnection._data, "data"),
    "RSET": (Rset, ServerConnection._rset, "rset"),
    "NOOP": (Noop, ServerConnection._noop, "noop"),
    "QUIT": (Quit, ServerConnection._quit, "quit"),
    "VRFY": (Vrfy, ServerConnection._vrfy, "vrfy"),
    "HELP": (Help, ServerConnection._help, "help"),
    "STARTTLS": (None, ServerConnection._starttls, "starttls"),
    "AUTH": (None, ServerConnection._auth, "auth"),
    "BDAT": (None, ServerConnection._bdat, "bdat"),
    "ETRN": (None, ServerConnection._etrn, "etrn"),
    "XCLIENT": (None, ServerConnection._xclient, "xclient"),
    "XFORWARD": (None, ServerConnection._xclient, "xforward"),
}
_SMTP_VERBS = {**_COMMON, "HELO": (Helo, ServerConnection._helo, "helo"),
               "EHLO": (Ehlo, ServerConnection._ehlo, "ehlo")}
# RFC 2033 4.1: LMTP has LHLO and no HELO/EHLO.
_LMTP_VERBS = {**_COMMON, "LHLO": (Lhlo, ServerConnection._lhlo, "lhlo")}
# The disconnect line's counters, in Postfix 3.7's command-table order (smtpd.c);
# HELP, which Postfix does not know, next to VRFY as in sendmail -bs; LHLO first.
COUNTERS = ("lhlo", "helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data",
            "bdat", "rset", "noop", "vrfy", "help", "etrn", "quit", "unknown")

# An SMTP verb's counter (sendmail -bs names its commands from the line it read).
SMTP_COUNTER = {verb: counter for verb, (_, _, counter) in _SMTP_VERBS.items()}


def disconnect_counts(counts: dict[str, int], fails: dict[str, int]) -> str:
    """Postfix's tail of the disconnect line: " ehlo=1 mail=1 rcpt=0/1 commands=2/3",
    each command as ok/total when some failed, in Postfix's order (COUNTERS)."""
    out, ok_sum, total_sum = [], 0, 0
    for name in COUNTERS:
        total = counts.get(name)
        if total:
            ok = total - fails.get(name, 0)
            out.append(f" {name}={ok}" if ok == total else f" {name}={ok}/{total}")
            ok_sum += ok
            total_sum += total
    # Postfix writes "commands=0/0" for a session without a command, N alone when all succeeded.
    out.append(f" commands={ok_sum}" if ok_sum == total_sum and total_sum else f" commands={ok_sum}/{total_sum}")
    return "".join(out)

