"""RFC 5321 paths and ESMTP parameters: the arguments of MAIL FROM and RCPT TO.

Owns turning the client's `<path> params` text into an address string and a
parameter dict, or a 5xx Reply (raised as AddressError). Input is untrusted
client text, already decoded from UTF-8; nothing here trusts its shape.
Rules (RFC 5321 4.1.2, 4.1.1.11; RFC 6531 for SMTPUTF8):
  * `<>` is the null reverse-path (MAIL only); source routes `<@a,@b:u@d>`
    are accepted and dropped (RFC 5321 4.1.1.3 / C.2 says they MAY be ignored);
  * quoted local parts `"a b"@x` and address literals `u@[192.0.2.1]` are
    accepted; the address is returned in its wire form, quotes kept;
  * like Postfix, a space after the colon and missing angle brackets are
    tolerated (not with strict=True: strict_rfc821_envelopes); anything else
    malformed is 501;
  * control characters anywhere are refused (CR/LF/NUL injection, the Exim
    "21Nails" class of bugs);
  * non-ASCII addresses need SMTPUTF8 on MAIL, else 553 5.6.7.
Next: smtp_server.py (calls this), replies.py.
"""
from __future__ import annotations

import ipaddress
import re

from estafeta.proto import replies as R
from estafeta.proto.replies import Reply

Params = dict[str, str | None]


class AddressError(ValueError):
    """A malformed path or parameter; `reply` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


_UTF8 = "\u0080-\U0010ffff"
# RFC 5321 4.1.2 Dot-string, loosened like Postfix: any run of atext and dots.
_LOCAL_DOT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.{_UTF8}-]+"
# Quoted-string: qtextSMTP / quoted-pairSMTP (RFC 5321 4.1.2, RFC 6531 3.3).
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LABEL = rf"[A-Za-z0-9_{_UTF8}-]+"        # underscores: seen in the wild
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # dtext; checked further below
_MAILBOX = rf"(?:{_LOCAL_DOT}|{_QUOTED})(?:@(?:{_DOMAIN}|{_LITERAL}))?"
_BRACKETED = re.compile(rf"<(@{_DOMAIN}(?:,@{_DOMAIN})*:)?({_MAILBOX})?>")
_BARE = re.compile(_MAILBOX)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")          # esmtp-keyword
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")       # esmtp-value (+ RFC 6531)


def parse_mail_from(arg: str, *, strict: bool = False) -> tuple[str, Params]:
    """`arg` is the text after "MAIL FROM:". Returns (address, params); "" is <>."""
    address, rest = _split_path(arg, R.BAD_SENDER_SYNTAX, allow_null=True, strict=strict)
    params = parse_params(rest)
    _check_utf8(address, rest, "SMTPUTF8" in params)
    return address, params


def parse_rcpt_to(arg: str, *, smtputf8: bool = False, strict: bool = False) -> tuple[str, Params]:
    """`arg` is the text after "RCPT TO:"; `smtputf8`: MAIL carried SMTPUTF8."""
    address, rest = _split_path(arg, R.BAD_RECIPIENT_SYNTAX, allow_null=False, strict=strict)
    params = parse_params(rest)
    _check_utf8(address, rest, smtputf8)
    return address, params


def parse_params(text: str) -> Params:
    """`KEY=VALUE` or `KEY` words separated by spaces (RFC 5321 4.1.2 Mail-parameters)."""
    params: Params = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if (not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value))
                or key.upper() in params):
            raise AddressError(R.BAD_PARAM_SYNTAX)
        params[key.upper()] = value if eq else None
    return params


def split_address(addr: str) -> tuple[str, str]:
    """(local part, domain); domain is "" for an unqualified address like `postmaster`."""
    if addr.endswith('"'):
        return addr, ""          # `"a@b"`: the @ is inside the quotes
    local, at, domain = addr.rpartition("@")
    return (local, domain) if at else (addr, "")


def domain_of(addr: str) -> str:
    return split_address(addr)[1].lower()


def _split_path(arg: str, bad: Reply, *, allow_null: bool, strict: bool = False) -> tuple[str, str]:
    if _CONTROL.search(arg):
        raise AddressError(bad)
    s = arg.lstrip(" ")
    if s.startswith("<"):
        m = _BRACKETED.match(s)
        if m is None:
            raise AddressError(bad)
        route, address = m.group(1), m.group(2) or ""
        rest = s[m.end():]
        if (route and not address) or (not address and not allow_null):
            raise AddressError(bad)
    elif strict:
        raise AddressError(bad)
    else:
        # Postfix tolerates a path without angle brackets: up to the first space.
        address, _, rest = s.partition(" ")
        rest = " " + rest
        if not _BARE.fullmatch(address):
            raise AddressError(bad)
    if rest and not rest.startswith(" "):
        raise AddressError(bad)
    if address.endswith("]") and not literal_ok(address[address.rfind("[") + 1:-1]):
        raise AddressError(bad)
    return address, rest


def literal_ok(literal: str) -> bool:
    """RFC 5321 4.1.3: IPv4 or "IPv6:" address literals; general ones are refused."""
    try:
        if literal[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(literal[5:])
        else:
            ipaddress.IPv4Address(literal)
    except ValueError:
        return False
    return True


def _check_utf8(address: str, rest: str, smtputf8: bool) -> None:
    if smtputf8:
        return
    if not address.isascii():
        raise AddressError(R.NEED_SMTPUTF8)
    if not rest.isascii():
        raise AddressError(R.BAD_PARAM_SYNTAX)
