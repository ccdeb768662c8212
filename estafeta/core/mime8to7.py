"""8-bit to 7-bit MIME downgrade for servers without 8BITMIME (RFC 6152 3, RFC 1652).

Pure: bytes in, bytes out, no IO. The smtp and lmtp clients call `downgrade` when the
message has 8-bit bytes, the server does not announce 8BITMIME and
disable_mime_output_conversion = no (Postfix's smtp(8) does the same).

What changes, and nothing else (every other byte is passed through as it was):
  * a leaf entity (text/plain, text/html, application/x, no Content-Type...) whose
    body holds 8-bit bytes and whose Content-Transfer-Encoding is absent, 7bit, 8bit
    or binary: its body becomes quoted-printable (RFC 2045 6.7: output lines of at
    most 76 characters, soft line breaks, =XX for 8-bit bytes, controls, "=" and
    whitespace at the end of a line) and its Content-Transfer-Encoding header(s) are
    replaced by "Content-Transfer-Encoding: quoted-printable" at the end of its header;
  * a multipart or message/rfc822 entity declared 8bit or binary whose whole content
    is 7-bit after the conversion of its parts: declared 7bit (RFC 2045 6.4: composite
    types may only have an identity encoding);
  * the top-level header gets "MIME-Version: 1.0" when something was converted and it
    had none, and a message without any Content-Type whose body was converted gets
    "Content-Type: text/plain; charset=utf-8" (when the body is valid UTF-8) or
    "charset=unknown-8bit" (RFC 1428), so that readers know what the bytes are.
Left alone: parts declared base64 or quoted-printable (already 7-bit, or broken beyond
repair), parts with another encoding (x-uuencode), message/partial and
message/external-body, multipart preambles and epilogues, nesting deeper than
MAX_DEPTH, and headers (8-bit headers cannot be downgraded: that is SMTPUTF8's
business; `header_8bit` lets the caller see them first).

How: one pass over the lines of the message (LF or CRLF endings, both kept as they
were), a small recursive descent over the MIME structure (boundaries matched as
Postfix's mime_state does: "--boundary" at the start of a line, for every enclosing
multipart). A leaf body is collected up to its closing boundary before it is
decided, so a part declared 8bit that holds only ASCII is not touched.
Next: delivery/smtp.py (when it is called).
"""
from __future__ import annotations

import re

MAX_DEPTH = 100          # Postfix's mime_nesting_limit
MAX_LINE = 76            # RFC 2045 6.7 (5)

_HEADER = re.compile(rb"^[!-9;-~]+[ \t]*:")
_HEX = b"0123456789ABCDEF"
_IDENTITY = {None, "7bit", "8bit", "binary"}
# byte -> its quoted-printable token, for bytes that stand for themselves or not
_QP = [bytes([b]) if (33 <= b <= 126 and b != 61) or b in (32, 9) else
       b"=" + bytes([_HEX[b >> 4], _HEX[b & 15]]) for b in range(256)]


def header_8bit(message: bytes) -> bool:
    """Does the top-level header hold 8-bit bytes (an SMTPUTF8 message)?"""
    end = message.find(b"\n\n")
    crlf = message.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        end = crlf
    head = message if end < 0 else message[:end]
    return not head.isascii()


def downgrade(message: bytes) -> bytes:
    """`message` with its 8-bit leaf bodies quoted-printable (see the module doc).
    Returns `message` itself when there is nothing to change (a 7-bit message, or
    one whose 8-bit bytes are all in places that cannot be downgraded)."""
    if message.isascii():
        return message
    lines = message.split(b"\n")       # the last item is b"" when the message ends in LF
    conv = _Converter(lines)
    out = conv.entity(0, (), top=True, default=("text", "plain"), depth=0)
    if not conv.changed:
        return message
    return b"\n".join(out)


def encode_qp_line(line: bytes) -> list[bytes]:
    """One body line (no line ending) as quoted-printable output lines: every one but
    the last ends in a soft line break "=", none is longer than 76 characters."""
    if not line:
        return [b""]
    tokens = [_QP[b] for b in line]
    last = line[-1]
    if last in (32, 9):                 # RFC 2045 6.7 (3): no whitespace at the end
        tokens[-1] = b"=20" if last == 32 else b"=09"
    out: list[bytes] = []
    cur = bytearray()
    n = len(tokens)
    for i, t in enumerate(tokens):
        room = MAX_LINE if i == n - 1 else MAX_LINE - 1   # keep room for a soft break
        if cur and len(cur) + len(t) > room:
            if cur[-1:] in (b" ", b"\t"):
                # whitespace before a soft break is legal, but a decoder may strip
                # it (RFC 2045 6.7 (3)); encode it instead when the line has room
                ws = cur[-1]
                del cur[-1]
                enc = b"=20" if ws == 32 else b"=09"
                if len(cur) + len(enc) <= MAX_LINE - 1:
                    cur += enc
                else:
                    out.append(bytes(cur) + b"=")
                    cur = bytearray(enc)
            out.append(bytes(cur) + b"=")
            cur = bytearray()
            if t == b"-":
                t = b"=2D"              # a continuation never starts like "--boundary"
        cur += t
    out.append(bytes(cur))
    return out


def _strip_cr(line: bytes) -> tuple[bytes, bytes]:
    return (line[:-1], b"\r") if line.endswith(b"\r") else (line, b"")


def _params(value: bytes) -> tuple[str, str, dict[str, str]]:
    """Content-Type value -> (type, subtype, parameters), names in lower case.
    Quoted strings (with backslash escapes) and comments as RFC 2045 5.1 and
    RFC 5322 3.2 have them; values are stripped of surrounding whitespace."""
    text = value.decode("ascii", "replace").replace("\r", "").replace("\n", " ")
    items: list[str] = []
    cur: list[str] = []
    quoted, comment, i = False, 0, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif comment:
            if ch == "\\":
                i += 1
            elif ch == "(":
                comment += 1
            elif ch == ")":
                comment -= 1
        elif ch == '"':
            quoted = True
        elif ch == "(":
            comment = 1
        elif ch == ";":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    mtype, _, sub = items[0].strip().partition("/")
    params: dict[str, str] = {}
    for it in items[1:]:
        name, eq, val = it.partition("=")
        if eq:
            params.setdefault(name.strip().lower(), val.strip())
    return mtype.strip().lower(), sub.strip().lower(), params


class _Converter:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.changed = False

    @staticmethod
    def _is_boundary(line: bytes, stops: tuple[bytes, ...]) -> bool:
        return line.startswith(b"--") and any(line.startswith(b"--" + b) for b in stops)

    def entity(self, i: int, stops: tuple[bytes, ...], *, top: bool, default: tuple[str, str],
               depth: int) -> list[bytes]:
        """Lines i.. up to (not including) the next boundary of `stops` or the end:
        one entity, header and body. Sets self.pos to where it ended."""
        lines = self.lines
        n = len(lines)
        # -- the header block: logical headers as lists of raw lines
        headers: list[list[bytes]] = []
        j = i
        blank = False
        while j < n:
            line = lines[j]
            if self._is_boundary(line, stops):
                break
            if line in (b"", b"\r"):
                if j == n - 1 and line == b"":
                    break                # the split's last item: no line at all
                blank = True
                j += 1
                break
            if line[:1] in (b" ", b"\t") and headers:
                headers[-1].append(line)
            elif _HEADER.match(line):
                headers.append([line])
            else:
                break                   # not a header: the body starts without a blank line
            j += 1
        head_end = j - 1 if blank else j          # index of the blank line (or body start)
        # new header lines end as the others do (CRLF stored as such: keep it)
        eol = b"\r" if (blank and lines[head_end] == b"\r") or any(h[0].endswith(b"\r") for h in headers) else b""
        ctype, sub, params, cte = default[0], default[1], {}, None
        seen_ctype = mime_version = False
        for h in headers:
            name, _, value = b"\n".join(h).partition(b":")
            name = name.strip().lower()
            if name == b"content-type":
                seen_ctype = True
                t, s, p = _params(value)
                if t and s:
                    ctype, sub, params = t, s, p
            elif name == b"content-transfer-encoding":
                cte = value.decode("ascii", "replace").split("(")[0].strip().lower() or None
            elif name == b"mime-version":
                mime_version = True
        # -- the body
        body_out: list[bytes]
        new_cte: bytes | None = None
        added: list[bytes] = []
        if ctype == "multipart" and params.get("boundary") and depth < MAX_DEPTH:
            boundary = params["boundary"].encode("ascii", "replace")
            body_out, end = self.multipart(j, boundary, stops, sub == "digest", depth)
            if cte in ("8bit", "binary") and all(x.isascii() for x in body_out):
                new_cte = b"7bit"
        elif ctype == "message" and sub in ("rfc822", "global") and depth < MAX_DEPTH and j < n:
            body_out = self.entity(j, stops, top=False, default=("text", "plain"), depth=depth + 1)
            end = self.pos
            if cte in ("8bit", "binary") and all(x.isascii() for x in body_out):
                new_cte = b"7bit"
        else:
            end = j
            while end < n and not self._is_boundary(lines[end], stops):
                end += 1
            if ctype in ("multipart", "message"):
                cte = "leave"           # no boundary, too deep, partial, external-body
            # Line structure is kept: the LF before a boundary (which belongs to the
            # boundary, RFC 2046 5.1.1) stays where it was, and so does a missing
            # LF at the end of the message.
            body = lines[j:end]
            if cte in _IDENTITY and any(not x.isascii() for x in body):
                body_out = []
                for line in body:
                    text, cr = _strip_cr(line)
                    enc = encode_qp_line(text)
                    body_out.extend(x + cr for x in enc)
                new_cte = b"quoted-printable"
                if top and not seen_ctype:
                    try:
                        b"\n".join(body).decode("utf-8")
                        charset = b"utf-8"
                    except UnicodeDecodeError:
                        charset = b"unknown-8bit"
                    added = [b"Content-Type: text/plain; charset=" + charset + eol]
            else:
                body_out = body
        self.pos = end
        if new_cte is not None:
            self.changed = True
        elif not (top and self.changed and not mime_version):
            return lines[i:j] + body_out
        # -- rewrite this entity's header: CTE replaced, MIME-Version added at the top
        head: list[bytes] = []
        for h in headers:
            if new_cte is None or h[0].split(b":", 1)[0].strip().lower() != b"content-transfer-encoding":
                head.extend(h)
        if top and not mime_version:
            head.append(b"MIME-Version: 1.0" + eol)
        head.extend(added)
        if new_cte is not None:
            head.append(b"Content-Transfer-Encoding: " + new_cte + eol)
        return head + lines[head_end:j] + body_out

    def multipart(self, j: int, boundary: bytes, stops: tuple[bytes, ...], digest: bool,
                  depth: int) -> tuple[list[bytes], int]:
        """The body of a multipart: preamble, parts, epilogue (up to an enclosing
        boundary or the end). Returns (output lines, index where it ended)."""
        lines = self.lines
        n = len(lines)
        inner = (boundary, *stops)
        out: list[bytes] = []
        # preamble
        while j < n and not self._is_boundary(lines[j], inner):
            out.append(lines[j])
            j += 1
        while j < n and lines[j].startswith(b"--" + boundary):
            delim = lines[j]
            out.append(delim)
            j += 1
            if delim[len(boundary) + 2:].startswith(b"--"):       # the close delimiter
                break
            out.extend(self.entity(j, inner, top=False, depth=depth + 1,
                                   default=("message", "rfc822") if digest else ("text", "plain")))
            j = self.pos
        # epilogue (or a truncated multipart): up to an enclosing boundary
        while j < n and not self._is_boundary(lines[j], stops):
            out.append(lines[j])
            j += 1
        return out, j
