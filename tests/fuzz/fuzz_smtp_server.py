"""Fuzz target: the SMTP/LMTP server codec (estafeta/proto/smtp_server.py, framing.py).

Input: one flags byte, then the bytes a client sends.
  flags bit 0  LMTP (one reply per accepted recipient at the end of data)
        bit 1  DSN offered (RET/ENVID on MAIL, NOTIFY/ORCPT on RCPT), as smtpd does
        bit 2  message_size_limit 300 (else smtpd's default 10240000)
        bit 3  max_errors 3 (else 20)
        bit 4  pad: the next 4 bytes are offset (2), count (1), byte (1): count KB of
               that byte are inserted at that offset (over-long command and data lines)
        bits 5-7 and the length: where the stream is cut into reads
A driver answers every event as smtpd would, by rule: addresses holding "reject" or
"defer" get 5xx/4xx, "close" a 421 that closes, LMTP recipients alternate 250/550.

Expected: nothing. The codec answers bad input with replies; it raises nothing.
Bugs: any exception; a reply that is not CRLF-terminated lines of at most 512 octets
with a 3-digit code; a BadCommand that is not 4xx/5xx; CR, LF or NUL in an event's
address or parameters; MessageData holding a CR (content lines end in LF); an
accepted transaction whose envelope (sender, recipients with their DSN parameters,
helo name, RET/ENVID) cannot be written to a queue file and read back unchanged; an
event out of sequence (DATA without an accepted RCPT, ...); unconsumed input growing
past the codec's limits; and any difference -- in replies, events or message
content -- between reading the stream in one piece and in many small reads (the
framing must not depend on TCP segment boundaries: the SMTP smuggling class). Only
which of the two content errors refuses a message (bare CR/LF, size) may differ.
"""
from __future__ import annotations

import atheris

from fuzzlib import Invariant, check, main, splits

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.proto import dsn
    from estafeta.proto import events as ev
    from estafeta.proto import replies as R
    from estafeta.proto.framing import MAX_HELD
    from estafeta.proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection
    from estafeta.queue import qfile

BAD_CHARS = ("\r", "\n", "\0")
CONTENT_ERROR = R.BARE_LF_DATA      # stands for either content error in comparisons


def _check_wire(out: bytes, what: object, slack: int = 0) -> None:
    """RFC 5321 4.2, 4.5.3.1.5. `slack`: client text the driver quoted in the reply
    (smtpd's "<address>: Recipient address rejected"), not counted against 512."""
    check(out.endswith(b"\r\n"), f"reply to {what!r} does not end in CRLF: {out!r}")
    lines = out[:-2].split(b"\r\n")
    for i, line in enumerate(lines):
        check(len(line) + 2 <= 512 + slack, f"reply line longer than 512 octets: {line[:80]!r}...")
        check(b"\r" not in line and b"\n" not in line, f"bare CR/LF inside a reply line: {line!r}")
        check(len(line) >= 4 and line[:3].isdigit() and line[:3] == lines[0][:3],
              f"reply line without its code: {line!r}")
        check(line[3:4] == (b"-" if i < len(lines) - 1 else b" "), f"bad continuation mark: {out!r}")


class Session:
    """A ServerConnection and a deterministic stand-in for smtpd's policy."""

    def __init__(self, flags: int) -> None:
        self.lmtp = bool(flags & 1)
        self.dsn = bool(flags & 2)
        extra = {"mail_params": DEFAULT_MAIL_PARAMS | dsn.MAIL_PARAMS, "rcpt_params": dsn.RCPT_PARAMS} \
            if self.dsn else {}
        self.conn = ServerConnection("mx.example", lmtp=self.lmtp,
                                     message_size_limit=300 if flags & 4 else 10240000,
                                     max_errors=3 if flags & 8 else 20, **extra)
        self.wire = [self.conn.greeting()]
        self.log: list[object] = []          # events, MessageData merged per message
        self.helo = ""
        self.sender: str | None = None
        self.attrs: dict[str, str] = {}
        self.rcpts: list[tuple[str, dict[str, str]]] = []
        self.content: list[bytes] = []
        self.messages = 0

    def feed(self, data: bytes) -> None:
        conn = self.conn
        if conn.state.name == "CLOSED":
            return
        conn.receive_data(data)
        for _ in range(100_000):
            e = conn.next_event()
            if e is ev.CLOSED:
                return
            if e is ev.NEED_DATA:
                held = len(conn._buf) - conn._pos
                check(held <= max(conn.max_line, MAX_HELD) + 8,
                      f"{held} bytes of unconsumed input held after NEED_DATA")
                return
            if isinstance(e, ev.MessageData):
                check(b"\r" not in e.data, f"CR in message content: {e.data[:80]!r}")
                check(e.data, "empty MessageData")
                self.content.append(e.data)
                continue
            # Which content error refuses a message that is both too big and holds a
            # bare CR/LF can depend on the reads (the framer stops looking after the
            # first); that it is refused, and where it ends, must not.
            self.log.append(ev.EndOfData(CONTENT_ERROR) if isinstance(e, ev.EndOfData) and e.error else e)
            for reply in self.answer(e):
                out = conn.send(reply)
                quoted = e.address.encode("utf-8", "surrogateescape") if isinstance(e, ev.MailFrom | ev.RcptTo) else b""
                _check_wire(out, e, len(quoted) if reply.code >= 400 else 0)
                self.wire.append(out)
        raise Invariant("100,000 events from one read")

    def answer(self, e: object) -> list[R.Reply]:
        conn = self.conn
        if isinstance(e, ev.BadCommand):
            check(400 <= e.reply.code <= 599, f"BadCommand with reply {e.reply}")
            return [e.reply]
        if isinstance(e, ev.Helo | ev.Ehlo | ev.Lhlo):
            check(e.name and e.name == e.name.strip() and not any(c in e.name for c in BAD_CHARS),
                  f"bad greeting name {e.name!r}")
            check(isinstance(e, ev.Lhlo) == self.lmtp, f"{e!r} in {'LMTP' if self.lmtp else 'SMTP'} mode")
            self.helo, self.sender, self.rcpts = e.name, None, []
            if isinstance(e, ev.Helo):
                return [R.helo_reply(conn.hostname)]
            return [conn.ehlo_reply(("DSN",) if self.dsn else ())]
        if isinstance(e, ev.MailFrom):
            self._check_path(e)
            check(self.helo and self.sender is None, f"{e!r} without HELO or inside a transaction")
            reply = self._policy(e.address, sender=True)
            if reply.is_positive:
                self.sender, self.rcpts = e.address, []
                self.attrs = dsn.mail_attrs(e.params)     # smtpd stores these: must not raise
            return [reply]
        if isinstance(e, ev.RcptTo):
            self._check_path(e)
            check(self.sender is not None, f"{e!r} before MAIL")
            reply = self._policy(e.address, sender=False)
            if reply.is_positive:
                self.rcpts.append((e.address, dsn.rcpt_params(e.params)))
            return [reply]
        if isinstance(e, ev.Data):
            check(self.sender is not None and self.rcpts, "DATA accepted without MAIL and RCPT")
            check(len(self.rcpts) == conn.recipients, f"codec counts {conn.recipients} recipients,"
                  f" the driver accepted {len(self.rcpts)}")
            self._queue_file()
            self.content = []
            return [R.START_DATA]
        if isinstance(e, ev.EndOfData):
            n = len(self.rcpts) if self.lmtp else 1
            check(n >= 1, "end of data without recipients")
            # A refused message's content is dropped: how much of it came out before
            # the codec saw the error may depend on the reads, and is never stored.
            self.log.append(b"".join(self.content) if e.error is None else b"(refused)")
            if e.error is not None:
                replies = [e.error] * n
            elif self.lmtp:
                replies = [R.queued("4ABCDEF") if i % 2 == 0 else R.UNKNOWN_USER for i in range(n)]
            else:
                replies = [R.queued("4ABCDEF")]
            if e.error is None:
                self.messages += 1
            self.sender, self.rcpts = None, []
            return replies
        if isinstance(e, ev.Rset):
            self.sender, self.rcpts = None, []
            return [R.RSET]
        if isinstance(e, ev.Quit):
            return [R.BYE]
        if isinstance(e, ev.Vrfy):
            return [R.VRFY_REPLY]
        if isinstance(e, ev.Help):
            return [R.HELP]
        if isinstance(e, ev.Noop):
            return [R.NOOP]
        raise Invariant(f"unknown event {e!r}")

    def _check_path(self, e: ev.MailFrom | ev.RcptTo) -> None:
        for v in (e.address, *e.params, *(x for x in e.params.values() if x is not None)):
            check(not any(c in v for c in BAD_CHARS), f"control character in {e!r}")
        check(all(k == k.upper() for k in e.params), f"parameter names not upper-cased: {e!r}")

    def _policy(self, address: str, *, sender: bool) -> R.Reply:
        a = address.lower()
        what = "Sender" if sender else "Recipient"
        if "close" in a:
            return R.Reply(421, "4.7.0", f"<{address}>: {what} address rejected: Come back later", close=True)
        if "reject" in a:
            return R.Reply(553 if sender else 550, "5.7.1", f"<{address}>: {what} address rejected: Access denied")
        if "defer" in a:
            return R.Reply(450, "4.7.1", f"<{address}>: {what} address rejected: Try again later")
        return R.SENDER_OK if sender else R.RECIPIENT_OK

    def _queue_file(self) -> None:
        """What smtpd hands cleanup at DATA must make a queue file that reads back the same."""
        attrs = {"client_name": "client.example", "client_address": "192.0.2.1", "helo_name": self.helo,
                 "protocol": "ESMTP", **self.attrs}
        check(self.sender is not None, "DATA without a sender")
        try:
            data = qfile.encode_envelope(1700000000.25, self.sender, self.rcpts, attrs)
        except ValueError as err:
            raise Invariant(f"accepted envelope cannot be queued: {err}") from err
        env = qfile.parse_envelope("4ABCDEF", data, len(data))
        check(env.sender == self.sender and env.attrs == attrs
              and [(r.address, r.params) for r in env.recipients] == self.rcpts,
              f"queue file does not read back: {data!r}")


def _same_errors(wire: list[bytes]) -> list[bytes]:
    return [CONTENT_ERROR.to_bytes() if w == R.MESSAGE_TOO_BIG.to_bytes() else w for w in wire]


def _pad(flags: int, stream: bytes) -> bytes:
    if not flags & 16 or len(stream) < 4:
        return stream
    at, count, fill = int.from_bytes(stream[:2], "little"), stream[2], stream[3:4]
    stream = stream[4:]
    at %= len(stream) + 1
    return stream[:at] + fill * (1024 * count) + stream[at:]


def run(flags: int, pieces: list[bytes]) -> Session:
    s = Session(flags)
    for p in pieces:
        s.feed(p)
    s.feed(b"")
    if s.conn.state.name != "CLOSED":
        check(s.conn.next_event() is ev.CLOSED, "the codec does not close after end of input")
    return s


def one_input(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    stream = _pad(flags, data[1:])
    whole = run(flags, [stream])
    split = run(flags, list(splits(stream, flags >> 5 ^ len(stream))))
    if _same_errors(whole.wire) != _same_errors(split.wire) or whole.log != split.log:
        for i, (a, b) in enumerate(zip(whole.wire + [b""], split.wire + [b""])):
            if a != b:
                break
        raise Invariant(f"replies or events depend on how the input is split into reads: "
                        f"reply {i}: {a!r} in one read, {b!r} in pieces; "
                        f"events {whole.log[:20]!r} vs {split.log[:20]!r}")


if __name__ == "__main__":
    main(one_input)
