"""Fuzz target: DSN parameters (estafeta/proto/dsn.py) and the notices that carry them
(estafeta/core/dsn.py), parsed back with the email package.

Input: NUL-separated fields: flags, NOTIFY, ORCPT, RET, ENVID, the remote server's
reply text (the reason), then the original message. flags bits 0-1: the notice kind
(failure, delay, success), bits 2-3: 0-3 more recipients, bit 4: a double bounce.

Expected: DsnSyntaxError from the parameter parsers (the codec turns it into 501).
Bugs: any other exception; a decoded value holding a control character, a tab or a
non-ASCII character (it goes into a queue file record); xtext that does not survive
encode_xtext/decode_xtext; a canonical NOTIFY or RET that does not parse to itself;
an ORCPT that the smtp agent passes on (delivery/smtp.py) and the next hop would
read differently; and a notice that the email package does not read as
multipart/report with three parts, with one Final-Recipient per recipient, without
any header line but the notice's own (remote text must not inject headers or MIME
boundaries), and with the returned message intact.
"""
from __future__ import annotations

import email
import email.policy
import re

import atheris

from fuzzlib import check, main

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.core import dsn as notices
    from estafeta.proto import dsn
    from estafeta.queue.qfile import encode_value

PRINTABLE = re.compile(r"[\x20-\x7e]*")
HEADERS = {"From", "Subject", "To", "Date", "Auto-Submitted", "MIME-Version", "Content-Type",
           "Content-Transfer-Encoding"}


def param(parse, value: str | None) -> str | None:
    try:
        out = parse(value)
    except dsn.DsnSyntaxError:
        return None
    check(PRINTABLE.fullmatch(out), f"{parse.__name__}({value!r}) = {out!r}: not printable ASCII")
    encode_value(out)           # a queue file record value: raises ValueError on CR/LF/NUL/TAB
    return out


def parameters(notify: str, orcpt: str, ret: str, envid: str) -> tuple[str, str, str, str]:
    n = param(dsn.parse_notify, notify)
    if n is not None:
        check(dsn.parse_notify(n) == n, f"NOTIFY {notify!r} -> {n!r} is not canonical")
        check(dsn.notify_of({dsn.NOTIFY: n}, {}) == frozenset(n.split(",")), "notify_of")
    check(isinstance(dsn.notify_of({dsn.NOTIFY: notify}, {dsn.NOTIFY: ret}), frozenset), "notify_of")
    r = param(dsn.parse_ret, ret)
    if r is not None:
        check(dsn.parse_ret(r) == r, f"RET {r!r} not canonical")
    e = param(dsn.parse_envid, envid)
    if e is not None:
        again = dsn.encode_xtext(e)
        check(len(again) > dsn.ENVID_MAX or dsn.parse_envid(again) == e, f"ENVID {e!r} does not survive xtext")
    o = param(dsn.parse_orcpt, orcpt)
    if o is not None:
        atype, _, addr = o.partition(";")
        sent = f"{atype};{dsn.encode_xtext(addr)}"           # what delivery/smtp.py sends on
        if addr.isascii() and len(sent) <= dsn.ORCPT_MAX:
            check(dsn.parse_orcpt(sent) == o, f"ORCPT {o!r} passed on as {sent!r} reads differently")
    x = param(dsn.decode_xtext, orcpt)
    if x is not None:
        check(dsn.decode_xtext(dsn.encode_xtext(x)) == x, f"xtext {x!r} does not round-trip")
    for key, value in (("RET", ret), ("ENVID", envid), ("X", envid)):
        bad = dsn.check_mail_param(key, value)
        if bad is None:
            dsn.mail_attrs({key: value})
    for key, value in (("NOTIFY", notify), ("ORCPT", orcpt)):
        bad = dsn.check_rcpt_param(key, value)
        if bad is None:
            dsn.rcpt_params({key: value})
    return n or "", o or "", r or "", e or ""


def notice(flags: int, orcpt: str, ret: str, envid: str, reason: str, original: bytes) -> None:
    kind = (notices.FAILURE, notices.DELAY, notices.SUCCESS, notices.FAILURE)[flags & 3]
    action = {notices.FAILURE: "failed", notices.DELAY: "delayed", notices.SUCCESS: "delivered"}[kind]
    n = 1 + (flags >> 2 & 3)
    rcpts = tuple(notices.RecipientReport(f"user{i}@example.org" if i else reason[:40] or "x@y", action,
                                          "5.1.1" if kind == notices.FAILURE else "4.4.1",
                                          reason, orcpt if i == 0 else "", "mx.example.net[192.0.2.7]:25",
                                          1700000100.0)
                  for i in range(n))
    raw = notices.build(notices.Notice(kind, "mx.example", "4ABCDEF", reason[:60], reason[:60] or "a@b",
                                       1700000000.0, 1700003600.0, rcpts, original, ret=ret, envid=envid,
                                       size_limit=2000, retry_until=1700432000.0,
                                       postmaster_copy=bool(flags & 16), boundary=""))
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    check(set(msg.keys()) == HEADERS, f"notice headers {msg.keys()!r}")
    check(msg.get_content_type() == "multipart/report" and not msg.defects,
          f"notice is {msg.get_content_type()} with defects {msg.defects}")
    parts = msg.get_payload()
    check(isinstance(parts, list) and len(parts) == 3, f"{len(parts)} parts in the notice")
    status = parts[1].get_payload()
    blocks = status if isinstance(status, list) else []
    check(len(blocks) == n + 1, f"{len(blocks)} blocks in the delivery-status part for {n} recipients")
    check(all(b.get_all("Final-Recipient") and len(b.get_all("Final-Recipient")) == 1 for b in blocks[1:]),
          "Final-Recipient per recipient block")
    check(set(blocks[0].keys()) <= {"Reporting-MTA", "X-Estafeta-Queue-ID", "X-Estafeta-Sender",
                                    "Original-Envelope-Id", "Arrival-Date"}, f"per-message fields {blocks[0].keys()}")
    # The same sender as above: a postmaster copy (sender set) returns headers only, a
    # double bounce (null sender) the whole message.
    _ctype, returned = notices.returned_part(notices.Notice(kind, "mx.example", "4ABCDEF", reason[:60], "a@b", 0.0, 0.0,
                                                            rcpts, original, ret=ret, size_limit=2000,
                                                            postmaster_copy=bool(flags & 16)))
    check(b"\n\n" + returned + b"\n--" in raw, "the returned message is not in the notice intact")


def one_input(data: bytes) -> None:
    fields = data.split(b"\0", 6)
    if len(fields) < 7:
        return
    flags = fields[0][0] if fields[0] else 0
    notify, orcpt, ret, envid, reason = (f.decode("utf-8", "replace") for f in fields[1:6])
    _n, o, r, e = parameters(notify, orcpt, ret, envid)
    notice(flags, o, r, e, reason, fields[6])


if __name__ == "__main__":
    main(one_input)
