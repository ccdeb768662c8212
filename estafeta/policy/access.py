"""Access-table results as actions: Postfix's access(5) and Sendmail's access verbs.

Owns one pure function, `parse_action(value) -> Action`, which reads the right-hand
side of an access table entry (what `check_*_access` found) into a typed action. The
restriction evaluator (restrictions.py) decides what each action does at each SMTP
stage; nothing here does IO or knows the session.

Postfix actions (access(5) ACCEPT, REJECT and OTHER ACTIONS; case-insensitive):
  OK, all-numerical (treated as OK), REJECT [text], DEFER [text], DEFER_IF_REJECT
  [text], DEFER_IF_PERMIT [text], 4NN/5NN [D.D.D] text, DISCARD [text], HOLD [text],
  REDIRECT user@domain, BCC user@domain, FILTER transport:destination, PREPEND
  name: value, WARN [text], INFO [text], DUNNO; anything else is a list of
  restriction names (permit, reject_unauth_destination, ...).
Sendmail verbs (cf/README, "The access database"), so that /etc/mail/access works
as written:
  RELAY (OK, and the client, sender or recipient may relay), OK, REJECT, DISCARD,
  SKIP (as DUNNO: stop the search, default action), ERROR:"NNN text",
  ERROR:NNN text, ERROR:D.S.N:NNN text, the deprecated quoted "NNN text", and
  QUARANTINE:reason (as HOLD: the message waits in the hold queue).
Trust boundary: values come from the administrator's tables; a malformed one raises
AccessSyntaxError, which the evaluator answers with 451 4.3.5 (never an accept).
Next: restrictions.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds of action.
OK, RELAY, REJECT, DEFER, DEFER_IF_REJECT, DEFER_IF_PERMIT = (
    "ok", "relay", "reject", "defer", "defer_if_reject", "defer_if_permit")
CODE, DISCARD, HOLD, REDIRECT, BCC, FILTER, PREPEND, WARN, INFO, DUNNO, RESTRICTIONS = (
    "code", "discard", "hold", "redirect", "bcc", "filter", "prepend", "warn", "info", "dunno",
    "restrictions")


class AccessSyntaxError(ValueError):
    """An access table answered something that is no valid action."""


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    text: str = ""                         # optional text, address, header or transport:dest
    code: int = 0                          # CODE: the SMTP reply code (4NN/5NN)
    enhanced: str = ""                     # CODE: the RFC 3463 status given in the table, if any
    restrictions: tuple[str, ...] = ()     # RESTRICTIONS: the names (and their table arguments)


_CODE_RE = re.compile(r"([45]\d\d)(?:\s+(.*))?\Z", re.S)
_ENHANCED_RE = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+(.*))?\Z", re.S)
_SENDMAIL_ERROR_RE = re.compile(r"(?:([245]\.\d{1,3}\.\d{1,3}):)?([45]\d\d)(?:[\s:]+(.*))?\Z", re.S)
_HEADER_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+:")       # RFC 5322 2.2 field name, then ':'

# Words followed by optional text, and the kind they make.
_TEXT_ACTIONS = {"REJECT": REJECT, "DEFER": DEFER, "DEFER_IF_REJECT": DEFER_IF_REJECT,
                 "DEFER_IF_PERMIT": DEFER_IF_PERMIT, "DISCARD": DISCARD, "HOLD": HOLD,
                 "WARN": WARN, "INFO": INFO}


def parse_action(value: str) -> Action:
    """The action an access table result asks for (see the module docstring)."""
    value = value.strip()
    if not value:
        raise AccessSyntaxError("empty access table result")
    word, _, rest = value.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + (" " + rest if rest else "")
    rest = rest.strip()
    upper = word.upper()
    if value.isascii() and value.isdigit():
        return Action(OK)                              # access(5): all-numerical is OK
    if upper.startswith("ERROR:"):
        return _sendmail_error(value[6:])
    if upper.startswith("QUARANTINE:"):
        return Action(HOLD, value[11:].strip().strip('"'))
    if value.startswith('"') and value[1:2].isdigit():
        return _code(value.strip('"'), value)          # Sendmail's deprecated "NNN text"
    if word[:1].isdigit():
        return _code(value, value)
    if upper in ("OK", "RELAY", "DUNNO", "SKIP"):
        if rest:
            raise AccessSyntaxError(f"{word} takes no text: {value!r}")
        return Action({"OK": OK, "RELAY": RELAY}.get(upper, DUNNO))
    if upper in _TEXT_ACTIONS:
        return Action(_TEXT_ACTIONS[upper], rest)
    if upper in ("REDIRECT", "BCC"):
        if "@" not in rest or len(rest.split()) != 1:
            raise AccessSyntaxError(f"{word} needs one user@domain address: {value!r}")
        return Action(REDIRECT if upper == "REDIRECT" else BCC, rest)
    if upper == "FILTER":
        if ":" not in rest or len(rest.split()) != 1 or rest.startswith(":"):
            raise AccessSyntaxError(f"FILTER needs transport:destination: {value!r}")
        return Action(FILTER, rest)
    if upper == "PREPEND":
        if not _HEADER_RE.match(rest):
            raise AccessSyntaxError(f"PREPEND needs a header 'name: value': {value!r}")
        return Action(PREPEND, rest)
    names = tuple(t for t in re.split(r"[\s,]+", value) if t)
    return Action(RESTRICTIONS, restrictions=names)


def _code(text: str, original: str) -> Action:
    m = _CODE_RE.match(text)
    if not m:
        raise AccessSyntaxError(f"bad SMTP reply in access table result: {original!r}")
    code, rest = int(m.group(1)), (m.group(2) or "").strip()
    enhanced = ""
    e = _ENHANCED_RE.match(rest)
    if e and e.group(1)[0] == str(code)[0]:
        enhanced, rest = e.group(1), (e.group(2) or "").strip()
    return Action(CODE, rest, code=code, enhanced=enhanced)


def _sendmail_error(spec: str) -> Action:
    """ERROR:"550 text", ERROR:550 text, ERROR:5.7.1:550 text (Sendmail cf/README)."""
    body = spec.strip()
    if len(body) >= 2 and body[0] == '"' and body[-1] == '"':
        body = body[1:-1].strip()
    m = _SENDMAIL_ERROR_RE.match(body)
    if not m:
        raise AccessSyntaxError(f"bad ERROR: result (want ERROR:\"NNN text\"): ERROR:{spec!r}")
    enhanced, code, text = m.group(1) or "", int(m.group(2)), (m.group(3) or "").strip().strip('"')
    if enhanced and enhanced[0] != str(code)[0]:
        enhanced = ""
    if not enhanced:
        e = _ENHANCED_RE.match(text)
        if e and e.group(1)[0] == str(code)[0]:
            enhanced, text = e.group(1), (e.group(2) or "").strip()
    return Action(CODE, text, code=code, enhanced=enhanced)
