"""Fuzz target: the queue file reader (estafeta/queue/qfile.py) and pickup's check of
maildrop files (estafeta/queue/maildrop.py), which any local user can write.

Input: the bytes of a queue file (the seeds are files written by qfile.encode_envelope
and by maildrop.submit).

Expected: CorruptQueueFile from parse_envelope (qmgr moves the file to corrupt/);
BadSubmission from maildrop.load.
Bugs: any other exception; a message offset past the data or before the M record;
a recipient whose status offset does not point at its status byte in the file
(mark_done would write the D elsewhere); parsed values that encode_envelope accepts
but that do not read back the same (a queue file rewritten by cleanup or postsuper
would change); a submission that pickup accepts with a control character, an
over-long address, an address starting with "-" or a record a user may not set.
"""
from __future__ import annotations

import os

import atheris

from fuzzlib import check, main, scratch

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.queue import maildrop, qfile

TMP = scratch("qfile")
PATH = os.path.join(TMP, "0123456789abcdef0123456789abcdef")


def parse(data: bytes) -> None:
    try:
        env = qfile.parse_envelope("4ABCDEF", data, len(data))
    except qfile.CorruptQueueFile:
        return
    check(len(qfile.MAGIC) < env.message_offset <= len(data) and data[env.message_offset - 3:env.message_offset]
          == b"\nM\n", f"message offset {env.message_offset}")
    check(env.recipients, "no recipients")
    for r in env.recipients:
        check(data[r.offset] == r.status and data[r.offset - 1:r.offset] == b"R" and r.status in (qfile.PENDING, qfile.DONE),
              f"status offset {r.offset} of {r.address!r} does not point at its status byte")
        check("\n" not in r.address and "\t" not in r.address, f"recipient {r.address!r}")
    try:
        again = qfile.encode_envelope(env.arrival, env.sender, [(r.address, r.params) for r in env.recipients],
                                      env.attrs)
    except ValueError:
        return
    env2 = qfile.parse_envelope("4ABCDEF", again, len(again))
    check((env2.sender, env2.attrs, [(r.address, r.params) for r in env2.recipients])
          == (env.sender, env.attrs, [(r.address, r.params) for r in env.recipients]),
          f"queue file does not read back after rewriting: {again!r}")
    check(abs(env2.arrival - env.arrival) <= 1e-6 * max(1.0, abs(env.arrival)) or env.arrival > 1e15,
          f"arrival {env.arrival} -> {env2.arrival}")


def pickup(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        sub = maildrop.load(PATH, os.path.basename(PATH), 10240000)
    except maildrop.BadSubmission:
        return
    for a in (sub.sender, *sub.recipients):
        check(len(a) <= maildrop.MAX_ADDRESS and not a.startswith("-")
              and not any(ord(c) < 32 or ord(c) == 127 for c in a), f"pickup accepts address {a!r}")
    check(set(sub.attrs) <= maildrop.USER_ATTRS, f"pickup keeps attributes {sub.attrs}")
    check(sub.recipients, "a submission without recipients")


def one_input(data: bytes) -> None:
    parse(data)
    pickup(data)


if __name__ == "__main__":
    main(one_input)
