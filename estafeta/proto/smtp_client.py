"""The client side of SMTP (RFC 5321) and LMTP (RFC 2033), sans-IO.

Owns reply parsing, EHLO keyword parsing, command building and the conversion of
a stored message (LF line endings, not dot-stuffed) into DATA wire bytes. It takes
raw server bytes -- untrusted: the far end may be hostile -- and gives Reply
objects; it takes envelope values and gives command bytes. No IO, no clock.

    codec = ClientCodec()
    codec.receive_data(chunk)          # b"" when the server closed
    reply = codec.next_reply()         # a Reply, or None: feed more bytes

A server controls how much it sends. A reply line longer than `max_line` or a
reply with more than `max_lines` lines is a ReplyError, not a bigger buffer:
the OpenSMTPD CVE-2020-8794 class (a client that kept reading continuation
lines) must not exist here.
Next: delivery/smtp.py (the driver: sockets, timeouts, MX order), replies.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from estafeta.proto.replies import Reply

__all__ = ["ClientCodec", "ReplyError", "Extensions", "parse_extensions", "command",
           "ehlo", "helo", "lhlo", "mail_from", "rcpt_to", "DATA", "RSET", "QUIT", "STARTTLS",
           "NOOP", "message_wire_bytes", "reply_dsn", "reply_text"]

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Real
# servers exceed that a little (long EHLO lists, wrapped texts); allow some room.
MAX_REPLY_LINE = 4096
# RFC 5321 does not bound the number of lines; EHLO answers have a few dozen.
MAX_REPLY_LINES = 100

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyError(Exception):
    """The server sent something that is not an SMTP reply (or too much of one)."""


class ClientCodec:
    """Splits server bytes into replies, one Reply per complete (multi-line) reply."""

    __slots__ = ("max_line", "max_lines", "_buf", "_lines", "_code", "closed")

    def __init__(self, *, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self._buf = bytearray()
        self._lines: list[str] = []       # continuation lines of the reply in progress
        self._code = 0
        self.closed = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.closed = True
            return
        self._buf += data

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more bytes are needed.

        Raises ReplyError on garbage, on limits exceeded, and when the server
        closed the connection in the middle of a reply.
        """
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line:
                    raise ReplyError(f"reply line longer than {self.max_line} bytes")
                if self.closed and (self._buf or self._lines):
                    raise ReplyError("connection closed in the middle of a reply")
                return None
            if nl + 1 > self.max_line:
                raise ReplyError(f"reply line longer than {self.max_line} bytes")
            raw = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = raw.decode("utf-8", "replace")
            # isascii: str.isdigit() is also true for "²" and "١", which int() refuses or reads.
            if len(line) < 3 or not line[:3].isascii() or not line[:3].isdigit() or line[0] not in "12345" \
                    or (len(line) > 3 and line[3] not in " -"):
                raise ReplyError(f"malformed reply line: {line[:80]!r}")
            code = int(line[:3])
            if self._lines and code != self._code:
                raise ReplyError(f"reply code changed within a multi-line reply: {line[:80]!r}")
            self._code = code
            self._lines.append(line[4:])
            if len(self._lines) > self.max_lines:
                raise ReplyError(f"reply with more than {self.max_lines} lines")
            if len(line) > 3 and line[3] == "-":
                continue
            lines, self._lines = self._lines, []
            return _make_reply(code, lines)


def _make_reply(code: int, lines: list[str]) -> Reply:
    """RFC 2034 3: when the first line has an enhanced code of the reply's class,
    every line carries one; strip it from each line that has it."""
    m = _ENHANCED.match(lines[0])
    enhanced = ""
    if m and m.group(1) == str(code)[0]:
        enhanced = m.group(0).rstrip()
        prefix = enhanced + " "
        lines = [ln[len(prefix):] if ln.startswith(prefix) else (ln[len(enhanced):] if ln == enhanced else ln)
                 for ln in lines]
    return Reply(code, enhanced, lines[-1], tuple(lines[:-1]))


def reply_text(reply: Reply) -> str:
    """One-line form for logs and notices, as Postfix writes remote replies."""
    prefix = f"{reply.code} {reply.enhanced + ' ' if reply.enhanced else ''}"
    return prefix + " ".join(x for x in (*reply.lines, reply.text) if x)


def reply_dsn(reply: Reply) -> str:
    """The enhanced status of a reply, or its class with .0.0 when it gave none (RFC 3463)."""
    if reply.enhanced:
        return reply.enhanced
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(reply.code // 100, "4.0.0" if reply.code < 500 else "5.0.0")


# --------------------------------------------------------------------------
# EHLO keywords (RFC 5321 4.1.1.1: the first line is the server's name, every
# later line one "keyword [params]").
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Extensions:
    esmtp: bool = False
    pipelining: bool = False          # RFC 2920
    size: int | None = None           # RFC 1870: None = not offered; 0 = no fixed limit
    eightbitmime: bool = False        # RFC 6152
    smtputf8: bool = False            # RFC 6531
    starttls: bool = False            # RFC 3207
    dsn: bool = False                 # RFC 3461
    enhancedstatuscodes: bool = False  # RFC 2034
    chunking: bool = False            # RFC 3030
    keywords: dict[str, str] = field(default_factory=dict)   # every keyword: its parameters


def parse_extensions(reply: Reply) -> Extensions:
    """Extensions announced in a positive EHLO/LHLO reply; unknown keywords are kept."""
    if reply.code != 250:
        return Extensions()
    kw: dict[str, str] = {}
    for line in (*reply.lines, reply.text)[1:]:
        name, _, params = line.strip().partition(" ")
        if name:
            kw.setdefault(name.upper(), params.strip())
    size: int | None = None
    if "SIZE" in kw:
        v = kw["SIZE"].split()[0] if kw["SIZE"].split() else "0"
        size = int(v) if v.isascii() and v.isdigit() and len(v) < 19 else 0
    return Extensions(
        esmtp=True, pipelining="PIPELINING" in kw, size=size, eightbitmime="8BITMIME" in kw,
        smtputf8="SMTPUTF8" in kw, starttls="STARTTLS" in kw, dsn="DSN" in kw,
        enhancedstatuscodes="ENHANCEDSTATUSCODES" in kw, chunking="CHUNKING" in kw, keywords=kw)


# --------------------------------------------------------------------------
# Commands. Arguments must not carry CR or LF: a recipient "a@b>\r\nRCPT TO:<c"
# would otherwise inject commands.
# --------------------------------------------------------------------------

def command(verb: str, arg: str = "") -> bytes:
    text = f"{verb} {arg}" if arg else verb
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"CR, LF or NUL in SMTP command argument: {text[:80]!r}")
    return text.encode("utf-8", "surrogateescape") + b"\r\n"


def ehlo(name: str) -> bytes:
    return command("EHLO", name)


def helo(name: str) -> bytes:
    return command("HELO", name)


def lhlo(name: str) -> bytes:
    return command("LHLO", name)


def mail_from(sender: str, *, size: int | None = None, body: str = "", smtputf8: bool = False,
              extra: tuple[str, ...] = ()) -> bytes:
    """MAIL FROM:<sender> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8] (RFC 1870, 6152, 6531)."""
    params = []
    if size is not None:
        params.append(f"SIZE={size}")
    if body:
        params.append(f"BODY={body}")
    if smtputf8:
        params.append("SMTPUTF8")
    params.extend(extra)
    return command("MAIL", " ".join([f"FROM:<{sender}>", *params]))


def rcpt_to(recipient: str, extra: tuple[str, ...] = ()) -> bytes:
    return command("RCPT", " ".join([f"TO:<{recipient}>", *extra]))


DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
QUIT = b"QUIT\r\n"
NOOP = b"NOOP\r\n"
STARTTLS = b"STARTTLS\r\n"


def message_wire_bytes(message: bytes) -> bytes:
    """Stored message (LF endings, not stuffed) -> DATA content with the final ".".

    RFC 5321 4.5.2: a line starting with "." gets another. RFC 5321 2.3.8: lines
    end in CRLF. Done with bytes.replace on the whole message: no per-line loop.
    A CRLF already in the store is kept as one line ending, not doubled.
    """
    if b"\r\n" in message:
        message = message.replace(b"\r\n", b"\n")
    if message and not message.endswith(b"\n"):
        message += b"\n"
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\n", b"\r\n") + b".\r\n"
