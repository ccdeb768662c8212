"""Fuzz target: the SMTP client's reply parser and DATA encoder (estafeta/proto/smtp_client.py).

Input: one flags byte, then the bytes a (hostile) server sends.
  flags bit 0  small limits (max_line 80, max_lines 5) instead of 4096 / 100
        bits 1-7 and the length: where the stream is cut into reads
The same bytes are also used as a stored message for message_wire_bytes.

Expected: ReplyError (garbage, limits exceeded, close in mid-reply).
Bugs: any other exception from the codec, parse_extensions, reply_text or reply_dsn;
a reply whose code is not 100-599, whose enhanced code is not of the reply's class,
with more lines than max_lines or a line longer than max_line; more than max_line
bytes buffered without a reply or an error (CVE-2020-8794 class); replies or the
error depending on how the stream is split into reads; and a message whose DATA
bytes hold an early end-of-data or are not read back, by the server-side
DataFramer, as the message itself (LF line endings, unstuffed).
"""
from __future__ import annotations

import re

import atheris

from fuzzlib import Invariant, check, main, splits

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.proto.framing import DataFramer
    from estafeta.proto.smtp_client import ClientCodec, ReplyError, message_wire_bytes, parse_extensions, \
        reply_dsn, reply_text

STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def replies(pieces: list[bytes], small: bool) -> tuple[list[object], str]:
    codec = ClientCodec(max_line=80, max_lines=5) if small else ClientCodec()
    out: list[object] = []
    try:
        for p in [*pieces, b""]:
            codec.receive_data(p)
            while (r := codec.next_reply()) is not None:
                check(100 <= r.code <= 599, f"reply code {r.code}")
                check(not r.enhanced or (STATUS.fullmatch(r.enhanced) and r.enhanced[0] == str(r.code)[0]),
                      f"enhanced status {r.enhanced!r} with reply code {r.code}")
                check(len(r.lines) + 1 <= codec.max_lines, f"{len(r.lines) + 1} lines in one reply")
                for line in (*r.lines, r.text):     # decoded with "replace": <= 1 character a byte
                    check(len(line) <= codec.max_line, f"reply line of {len(line)} characters")
                ext = parse_extensions(r)
                check(ext.size is None or ext.size >= 0, f"SIZE {ext.size}")
                check(STATUS.fullmatch(reply_dsn(r)), f"reply_dsn {reply_dsn(r)!r}")
                # A CR inside a line is kept (the smtp agent escapes reply text for logs
                # and notices, delivery/smtp.py); an LF always ends a line.
                check("\n" not in reply_text(r), "LF in reply_text")
                out.append(r)
            check(len(codec._buf) <= codec.max_line, f"{len(codec._buf)} bytes buffered without a reply")
    except ReplyError as e:
        return out, str(e)
    return out, ""


def wire_roundtrip(message: bytes) -> None:
    wire = message_wire_bytes(message)
    check(wire.endswith(b".\r\n") and (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3,
          f"end of data not (only) at the end: {wire[:200]!r}")
    framer = DataFramer()
    pos, content, done = 0, [], False
    while not done:
        pos, chunk, done = framer.step(wire, pos)
        content.append(chunk)
        check(done or chunk or pos == len(wire), "DataFramer made no progress")
        if not done and pos == len(wire):
            raise Invariant("DataFramer did not find the end of data")
    check(pos == len(wire), "bytes after the end of data")
    stored = message.replace(b"\r\n", b"\n")
    if stored and not stored.endswith(b"\n"):
        stored += b"\n"
    if b"\r" in stored:
        check(framer.error is not None, "bare CR passed through DATA")
    else:
        check(framer.error is None and b"".join(content) == stored,
              f"message changed in DATA: {stored[:100]!r} -> {b''.join(content)[:100]!r}")


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, stream = data[0], data[1:]
    whole = replies([stream], bool(flags & 1))
    split = replies(list(splits(stream, flags >> 1 ^ len(stream))), bool(flags & 1))
    check(whole == split, f"replies depend on how the input is split into reads: {whole!r} vs {split!r}")
    wire_roundtrip(stream)


if __name__ == "__main__":
    main(one_input)
