"""Fuzz target: MAIL FROM / RCPT TO paths and parameters (estafeta/proto/address.py).

Input: one flags byte (bit 0: the transaction declared SMTPUTF8), then the text after
"MAIL FROM:" / "RCPT TO:" (UTF-8; invalid bytes become U+FFFD).

Expected: AddressError carrying a 5xx reply.
Bugs: any other exception; an address, parameter name or value holding a control
character; a parameter name not upper-cased or a value with a space or "="; an
accepted address that does not parse back to itself when written as <address> --
which is what the smtp client does when it relays the message (smtp_client.mail_from,
rcpt_to): the command it builds must give the next server's codec the same address.
"""
from __future__ import annotations

import re

import atheris

from fuzzlib import check, main

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.proto import events as ev
    from estafeta.proto import replies as R
    from estafeta.proto.address import AddressError, domain_of, parse_mail_from, parse_rcpt_to, split_address
    from estafeta.proto.smtp_client import mail_from, rcpt_to
    from estafeta.proto.smtp_server import MAX_COMMAND_LINE, ServerConnection

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
KEYWORD = re.compile(r"[A-Z0-9][A-Z0-9-]*")


def checked(kind: str, arg: str, utf8: bool) -> tuple[str, dict[str, str | None]] | None:
    try:
        addr, params = parse_mail_from(arg) if kind == "MAIL" else parse_rcpt_to(arg, smtputf8=utf8)
    except AddressError as e:
        check(500 <= e.reply.code <= 599, f"AddressError with reply {e.reply}")
        return None
    check(not CONTROL.search(addr), f"control character in address {addr!r} from {arg!r}")
    check(kind == "MAIL" or addr, f"empty recipient from {arg!r}")
    for k, v in params.items():
        check(KEYWORD.fullmatch(k), f"bad parameter name {k!r} from {arg!r}")
        check(v is None or (v and not CONTROL.search(v) and " " not in v and "=" not in v),
              f"bad parameter value {v!r} from {arg!r}")
    local, domain = split_address(addr)
    check(addr == (f"{local}@{domain}" if domain else local), f"split_address({addr!r}) = {local!r}, {domain!r}")
    check(domain_of(addr) == domain.lower(), "domain_of differs from split_address")
    return addr, params


def relayed(kind: str, addr: str, utf8: bool) -> None:
    """The address as our smtp client sends it on, read by our own server codec."""
    line = mail_from(addr, smtputf8=utf8) if kind == "MAIL" else rcpt_to(addr)
    verb = b"MAIL FROM:" if kind == "MAIL" else b"RCPT TO:"
    again = checked(kind, line[len(verb):-2].decode("utf-8", "surrogateescape"), utf8)
    check(again is not None and again[0] == addr, f"{addr!r} relayed as {line!r} parses as {again!r}")
    if len(line) > MAX_COMMAND_LINE:
        return
    conn = ServerConnection("mx.example")
    conn.greeting()
    setup = b"EHLO c\r\n" + (b"" if kind == "MAIL" else mail_from("a@b", smtputf8=utf8))
    conn.receive_data(setup + line)
    while True:
        e = conn.next_event()
        if isinstance(e, ev.MailFrom | ev.RcptTo) and (kind == "MAIL") == isinstance(e, ev.MailFrom):
            check(e.address == addr, f"{addr!r} sent as {line!r} arrives as {e.address!r}")
            return
        check(e is not ev.NEED_DATA and e is not ev.CLOSED and not isinstance(e, ev.BadCommand),
              f"{addr!r} sent as {line!r}: the server says {e!r}")
        conn.send(conn.ehlo_reply() if isinstance(e, ev.Ehlo) else R.OK)


def one_input(data: bytes) -> None:
    if not data:
        return
    utf8 = bool(data[0] & 1)
    arg = data[1:].decode("utf-8", "replace")
    for kind in ("MAIL", "RCPT"):
        got = checked(kind, arg, utf8)
        if got is None:
            continue
        addr = got[0]
        utf8_needed = utf8 or (kind == "MAIL" and "SMTPUTF8" in got[1])
        if addr or kind == "RCPT":
            relayed(kind, addr, utf8_needed)


if __name__ == "__main__":
    main(one_input)
