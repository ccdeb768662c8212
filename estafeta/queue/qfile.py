"""The queue file format, version 1: envelope records, then the message.

A queue file is written once by cleanup and then only changed in place, one byte
per recipient, when that recipient is done (as Postfix marks recipient records).
It is text up to the message, so `postcat` and people can read it:

    EQF 1                         magic and format version (first line)
    T 1764309001.123456           arrival time, epoch seconds
    S alice@example.org           envelope sender ("" is the null sender <>)
    A client_address=127.0.0.1    attributes: client, helo, protocol, ...
    R- bob@example.org<TAB>o=bob@example.org
    RD carol@example.org          'D': done (delivered, or bounced and notified)
    M                             the message follows, LF line endings, to EOF

Record values never hold LF, CR or NUL: the SMTP codec refuses them in envelopes
(the Exim 21Nails class) and `encode_value` refuses them again here. A reader meets
an unknown record type only in a newer format; it refuses the file (the caller moves
it to `corrupt`) rather than guess. Next: store.py (where files live, atomic writes).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

MAGIC = b"EQF 1\n"
PENDING = ord("-")
DONE = ord("D")


class CorruptQueueFile(Exception):
    pass


@dataclass(slots=True)
class Recipient:
    address: str
    status: int = PENDING          # PENDING or DONE
    offset: int = -1               # file offset of the status byte
    params: dict[str, str] = field(default_factory=dict)   # o= original recipient, later DSN

    @property
    def done(self) -> bool:
        return self.status == DONE

    @property
    def original(self) -> str:
        return self.params.get("o", self.address)


@dataclass(slots=True)
class Envelope:
    queue_id: str
    arrival: float
    sender: str
    recipients: list[Recipient]
    attrs: dict[str, str] = field(default_factory=dict)
    message_offset: int = 0
    file_size: int = 0

    @property
    def message_size(self) -> int:
        return self.file_size - self.message_offset

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == PENDING]


def encode_value(value: str) -> bytes:
    b = value.encode("utf-8", "surrogateescape")
    if b"\n" in b or b"\r" in b or b"\0" in b or b"\t" in b:
        raise ValueError(f"control character in queue record value: {value!r}")
    return b


def _encode_key(key: str) -> bytes:
    # The reader splits "key=value" at the first "=": a key holding one would come
    # back as a different key and value.
    if "=" in key:
        raise ValueError(f"'=' in queue record key: {key!r}")
    return encode_value(key)


def encode_envelope(arrival: float, sender: str, recipients: list[tuple[str, dict[str, str]]],
                    attrs: dict[str, str]) -> bytes:
    """Everything before the message, ending with the M record."""
    out = [MAGIC, b"T %.6f\n" % arrival, b"S " + encode_value(sender) + b"\n"]
    for k, v in attrs.items():
        out.append(b"A " + _encode_key(k) + b"=" + encode_value(v) + b"\n")
    for addr, params in recipients:
        line = b"R- " + encode_value(addr)
        for k, v in params.items():
            line += b"\t" + _encode_key(k) + b"=" + encode_value(v)
        out.append(line + b"\n")
    out.append(b"M\n")
    return b"".join(out)


def parse_envelope(queue_id: str, data: bytes, file_size: int) -> Envelope:
    """Parse the records at the start of a queue file (`data` holds at least them)."""
    if not data.startswith(MAGIC):
        raise CorruptQueueFile(f"{queue_id}: bad magic or unknown format version")
    pos = len(MAGIC)
    arrival = -1.0
    sender: str | None = None
    attrs: dict[str, str] = {}
    rcpts: list[Recipient] = []
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise CorruptQueueFile(f"{queue_id}: truncated envelope")
        rec = data[pos:end]
        kind = rec[:1]
        if kind == b"M" and len(rec) == 1:
            pos = end + 1
            break
        if kind == b"R" and len(rec) >= 3 and rec[2:3] == b" ":
            fields = rec[3:].decode("utf-8", "surrogateescape").split("\t")
            params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
            if rec[1] not in (PENDING, DONE):
                raise CorruptQueueFile(f"{queue_id}: bad recipient status {rec[1:2]!r}")
            rcpts.append(Recipient(fields[0], rec[1], pos + 1, params))
        elif kind == b"T" and rec[1:2] == b" ":
            try:
                arrival = float(rec[2:])
            except ValueError:
                arrival = math.nan
            if not math.isfinite(arrival):
                raise CorruptQueueFile(f"{queue_id}: bad arrival time {rec[2:22]!r}")
        elif kind == b"S" and rec[1:2] == b" ":
            sender = rec[2:].decode("utf-8", "surrogateescape")
        elif kind == b"A" and rec[1:2] == b" ":
            k, _, v = rec[2:].decode("utf-8", "surrogateescape").partition("=")
            attrs[k] = v
        else:
            raise CorruptQueueFile(f"{queue_id}: unknown record {rec[:20]!r} at offset {pos}")
        pos = end + 1
    if arrival < 0 or sender is None or not rcpts:
        raise CorruptQueueFile(f"{queue_id}: envelope lacks arrival time, sender or recipients")
    return Envelope(queue_id, arrival, sender, rcpts, attrs, pos, file_size)


def read_envelope(path: str, queue_id: str) -> Envelope:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(65536)
        while b"\nM\n" not in data:
            more = f.read(65536)
            if not more:
                break
            data += more
    return parse_envelope(queue_id, data, size)


def mark_done(path: str, offsets: list[int], sync: bool = True) -> None:
    """Mark recipients done in place, durably: one byte each, then fsync."""
    if not offsets:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for off in offsets:
            os.pwrite(fd, b"D", off)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_message(path: str, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()
