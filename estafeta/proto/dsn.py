"""The DSN SMTP extension's parameters (RFC 3461): RET, ENVID, NOTIFY, ORCPT.

Owns their syntax on the wire and their stored form. Input is untrusted client
text (already through address.parse_params); what comes out is safe to store in a
queue file record (printable ASCII, no tab): xtext is decoded here and a decoded
value holding control characters is refused, so a client cannot smuggle CR/LF
into the queue file or into a delivery status notice.

    MAIL FROM:<a@b> RET=HDRS ENVID=QQ314159     -> attrs  dsn_ret=HDRS dsn_envid=QQ314159
    RCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d
                                                -> params dsn_notify=SUCCESS,FAILURE dsn_orcpt=rfc822;c@d

The stored names are those `sendmail -N/-R/-V` already writes (cli/sendmail.py):
dsn_notify there is an envelope attribute for every recipient, here a recipient
parameter; readers look at the recipient first (`notify_of`).
Next: smtp_server.py (validates with `check_mail_param`/`check_rcpt_param`),
core/dsn.py (the notices), delivery/smtp.py (passes them on).
"""
from __future__ import annotations

import re
from typing import Callable

from estafeta.proto import replies as R
from estafeta.proto.replies import Reply

MAIL_PARAMS = frozenset({"RET", "ENVID"})
RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})

# Stored names: envelope attributes (MAIL) and recipient parameters (RCPT).
RET, ENVID, NOTIFY, ORCPT = "dsn_ret", "dsn_envid", "dsn_notify", "dsn_orcpt"

NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
ENVID_MAX = 100        # RFC 3461 4.4: at most 100 characters
ORCPT_MAX = 500        # RFC 3461 4.2: at most 500 characters

# RFC 3461 4: xchar is "!".."~" except "+" and "="; hexchar is "+" and two
# upper-case hex digits.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")     # RFC 5322 atext
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class DsnSyntaxError(ValueError):
    pass


def decode_xtext(text: str) -> str:
    """xtext -> text; DsnSyntaxError when malformed or decoding to a control character."""
    if not _XTEXT.fullmatch(text):
        raise DsnSyntaxError(f"bad xtext: {text[:60]!r}")
    out = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    if not _PRINTABLE.fullmatch(out):
        raise DsnSyntaxError("xtext decodes to a control or non-ASCII character")
    return out


def encode_xtext(text: str) -> str:
    """text -> xtext: "+", "=", space, controls and non-ASCII octets as +XX."""
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        out.append(chr(b) if 0x21 <= b <= 0x7e and b not in (0x2b, 0x3d) else f"+{b:02X}")
    return "".join(out)


def parse_notify(value: str | None) -> str:
    """NOTIFY value -> "NEVER" or a comma list in canonical order (RFC 3461 4.1)."""
    if not value:
        raise DsnSyntaxError("empty NOTIFY")
    words = [w.upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in NOTIFY_WORDS for w in words) or len(set(words)) != len(words):
        raise DsnSyntaxError(f"bad NOTIFY: {value[:60]!r}")
    return ",".join(w for w in ("SUCCESS", "FAILURE", "DELAY") if w in words)


def parse_orcpt(value: str | None) -> str:
    """ORCPT=addr-type;xtext -> "addr-type;decoded" (addr-type lower-cased)."""
    if not value or len(value) > ORCPT_MAX:
        raise DsnSyntaxError("bad ORCPT length")
    atype, semi, addr = value.partition(";")
    if not semi or not _ATOM.fullmatch(atype) or not addr:
        raise DsnSyntaxError(f"bad ORCPT: {value[:60]!r}")
    return f"{atype.lower()};{decode_xtext(addr)}"


def parse_ret(value: str | None) -> str:
    v = (value or "").upper()
    if v not in ("FULL", "HDRS"):
        raise DsnSyntaxError(f"bad RET: {value!r}")
    return v


def parse_envid(value: str | None) -> str:
    if not value or len(value) > ENVID_MAX:
        raise DsnSyntaxError("bad ENVID length")
    return decode_xtext(value)


_Table = dict[str, tuple[Callable[[str | None], str], str, Reply]]

_MAIL: _Table = {"RET": (parse_ret, RET, R.BAD_RET), "ENVID": (parse_envid, ENVID, R.BAD_ENVID)}
_RCPT: _Table = {"NOTIFY": (parse_notify, NOTIFY, R.BAD_NOTIFY), "ORCPT": (parse_orcpt, ORCPT, R.BAD_ORCPT)}


def check_mail_param(key: str, value: str | None) -> Reply | None:
    """The codec's check of a DSN MAIL parameter: None when fine, else the 501."""
    return _check(_MAIL, key, value)


def check_rcpt_param(key: str, value: str | None) -> Reply | None:
    return _check(_RCPT, key, value)


def _check(table: _Table, key: str, value: str | None) -> Reply | None:
    entry = table.get(key)
    if entry is None:
        return None
    try:
        entry[0](value)
    except DsnSyntaxError:
        return entry[2]
    return None


def mail_attrs(params: dict[str, str | None]) -> dict[str, str]:
    """Stored envelope attributes for a MAIL command's (already checked) parameters."""
    return {entry[1]: entry[0](params[k]) for k, entry in _MAIL.items() if k in params}


def rcpt_params(params: dict[str, str | None]) -> dict[str, str]:
    """Stored recipient parameters for a RCPT command's (already checked) parameters."""
    return {entry[1]: entry[0](params[k]) for k, entry in _RCPT.items() if k in params}


def notify_of(rcpt_params: dict[str, str], attrs: dict[str, str]) -> frozenset[str]:
    """The NOTIFY words in force for one recipient; empty = not given (the default:
    failure and delay notices, RFC 3461 4.1). A malformed stored value (sendmail -N
    is not checked at submission) counts as not given."""
    raw = rcpt_params.get(NOTIFY) or attrs.get(NOTIFY) or ""
    try:
        return frozenset(parse_notify(raw).split(",")) if raw else frozenset()
    except DsnSyntaxError:
        return frozenset()


def wants(notify: frozenset[str], word: str) -> bool:
    """Does a recipient with these NOTIFY words want a `word` notice?"""
    if not notify:
        return word in ("FAILURE", "DELAY")
    return word in notify
