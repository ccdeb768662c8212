"""Message-content framing for SMTP DATA: end of data, dot-unstuffing, bare LF/CR.

Owns the byte-level rules between the 354 reply and the final CRLF.CRLF. Input
is raw client bytes, fully untrusted. The rules, and why they are strict:

* Only CRLF "." CRLF ends the data (RFC 5321 4.1.1.4). "\\n.\\n", "\\r.\\r",
  "\\n.\\r\\n" and friends do not: a server that accepts them while the relay in
  front of it does not lets a client hide a second message inside the first
  (SMTP smuggling, CVE-2023-51764 and kin).
* A line starting with "." loses that first dot (RFC 5321 4.5.2).
* Any LF not preceded by CR, or CR not followed by LF, marks the message bad
  (like Postfix's smtpd_forbid_bare_newline). We still read up to the real
  CRLF.CRLF so the session stays in step, then refuse via EndOfData(error).
* Over the size limit: keep reading to the end, then refuse (RFC 1870 6.3).

`size` is also Postfix's act_size, the N of "lost connection after DATA (N bytes)":
the complete lines received, unstuffed, each with a 2-octet line end. Like
Postfix's it stops at the last whole line within message_size_limit (Postfix
stops counting once its size error is set), and it goes on through a message
refused for a bare LF, counting a line ended by a bare LF as Postfix's smtp_get
reads it (size_with adds such lines still held when the client leaves). That
counting is done only on the refused path (_count_refused), once per chunk, and
for the log line: the accepted path adds no work.

Work is done in bulk with bytes.find/count/replace; there is no per-byte or,
in the common case, per-line Python loop.
Next: smtp_server.py (drives DataFramer), events.MessageData / EndOfData.
"""
from __future__ import annotations

from estafeta.proto.replies import BARE_LF_DATA, MESSAGE_TOO_BIG, Reply

END = b"\r\n.\r\n"
# A line with no CRLF in sight is handed on in pieces once this much is held,
# so a peer cannot make us buffer an endless line.
MAX_HELD = 65536


class DataFramer:
    """Stateful reader of one message's content.

    The caller owns the buffer: step(buf, pos) looks at buf[pos:], which must
    start where the previous step stopped (the caller may append to or rebase
    the buffer between calls, keeping the unconsumed bytes first).
    """

    __slots__ = ("size_limit", "size", "error", "_bol", "_clean", "_frozen")

    def __init__(self, size_limit: int = 0) -> None:
        self.size_limit = size_limit   # 0: no limit
        self.size = 0                  # message octets, CRLF line endings, unstuffed (RFC 1870)
        self.error: Reply | None = None
        self._bol = True               # buf[pos] is at the start of a line
        self._clean = 0                # bytes after pos already searched without a CRLF
        self._frozen = False           # size is final: the message went over size_limit

    def step(self, buf: bytes, pos: int) -> tuple[int, bytes, bool]:
        """Consume what can be consumed. Returns (new pos, content chunk, done).

        The chunk (maybe b"") holds complete lines, or part of an over-long line;
        it is unstuffed and uses b"\\n" line endings. After an error, chunks are
        b"": the message is going to be refused anyway.
        """
        end = len(buf)
        if self._bol and buf.startswith(b".\r\n", pos):
            return pos + 3, b"", True   # "." alone right after a line end (or DATA\r\n)
        # No CRLF lies in the first _clean bytes, so the terminator cannot start
        # before their last byte.
        start = pos + max(self._clean - 1, 0)
        idx = buf.find(END, start)
        if idx >= 0:
            return idx + 5, self._content(buf[pos:idx + 2]), True
        cut = buf.rfind(b"\r\n", start)
        if cut >= 0:
            chunk = self._content(buf[pos:cut + 2])
            self._bol, self._clean = True, 0
            return cut + 2, chunk, False
        if end - pos <= MAX_HELD:
            self._clean = end - pos   # wait for the line's end (or the rest of ".\r\n")
            return pos, b"", False
        # An over-long line: pass on all but its last byte, which may be the CR
        # of the CRLF still to come. The rest is mid-line: no dot rules apply.
        chunk = self._content(buf[pos:end - 1])
        self._bol, self._clean = False, 1
        return end - 1, chunk, False

    def _content(self, raw: bytes) -> bytes:
        bol, self._bol = self._bol, True
        if not raw:
            return b""
        if self.error is not None:
            self._count_refused(raw, bol)
            return b""
        crlf = raw.count(b"\r\n")
        # A CR or LF that is not part of a CRLF pair is bare. A split line ends
        # with the byte before a held one, which never completes a pair (see step).
        if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
            self.error = BARE_LF_DATA
            self._count_refused(raw, bol)
            return b""
        # RFC 5321 4.5.2: drop the first "." of every line.
        if bol and raw[:1] == b".":
            raw = raw[1:]
        if b"\r\n." in raw:
            raw = raw.replace(b"\r\n.", b"\r\n")
        self.size += len(raw)
        if self.size_limit and self.size > self.size_limit:
            self.error = MESSAGE_TOO_BIG
            self._freeze(raw, self.size - len(raw))
            return b""
        return raw.replace(b"\r\n", b"\n") if crlf else raw

    def size_with(self, held: bytes) -> int:
        """`size` counting also the lines that end with a bare LF in `held`, the bytes
        the caller still holds (after the last CRLF): Postfix counts those lines as
        it reads them. For the log line only, when the client is gone or silent."""
        cut = held.rfind(b"\n")
        if cut < 0 or self._frozen:
            return self.size
        return self._postfix_count(held[:cut + 1], self._bol)[0]

    def _count_refused(self, raw: bytes, bol: bool) -> None:
        if not self._frozen:
            self.size, self._frozen = self._postfix_count(raw, bol)

    def _postfix_count(self, raw: bytes, bol: bool) -> tuple[int, bool]:
        """(size, frozen) after `raw` (whole lines or a piece of one), counted as
        Postfix's act_size: a line ends at LF, with or without its CR (smtp_get), and
        counts 2 for its end; past size_limit, only the whole lines that fit."""
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if bol and raw[:1] == b".":
            raw = raw[1:]
        raw = raw.replace(b"\r\n.", b"\r\n")
        size = self.size + len(raw)
        if self.size_limit and size > self.size_limit:
            return self._fit(raw, self.size), True
        return size, False

    def _freeze(self, raw: bytes, before: int) -> None:
        self.size, self._frozen = self._fit(raw, before), True

    def _fit(self, raw: bytes, before: int) -> int:
        """`raw` (unstuffed, CRLF line ends), counted on top of `before`, went over the
        limit: the size with only its whole lines that fit. Postfix refuses a line
        when limit - act_size < len + 2, and counts no more from there."""
        return before + raw.rfind(b"\n", 0, self.size_limit - before) + 1
