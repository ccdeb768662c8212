"""header_checks and body_checks: what a matching line does to the message (header_checks(5)).

Owns the actions and their effect on one message, as pure rules over a
`Verdict` that cleanup carries through the message:

  REJECT [text]      refuse the message (default "5.7.1 message content rejected";
                     text without an enhanced code gets 5.7.1); stop inspecting
  DISCARD [text]     claim delivery, queue nothing; stop inspecting
  HOLD [text]        queue the message in hold/
  REDIRECT addr      replace all recipients by addr (last one wins; beats FILTER)
  FILTER t:dest      send the whole message through transport t (last one wins)
  WARN/INFO [text]   log only
  PREPEND text       a new line before this one (not inspected, not rewritten)
  REPLACE text       this line becomes text
  IGNORE             drop this line; STRIP: the same, logged
  PASS [text]        stop inspecting
  DUNNO, OK          as if nothing matched (later tables are not asked)

Tables are asked in order with the whole logical header (continuation lines joined
by "\\n") or one body line; empty lines are never looked up. A table that cannot
answer raises TableTempError: the message is deferred, never passed unchecked.
Next: daemons/cleanup.py (where lines come from, where the Verdict is honoured).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..tables import Table

DEFAULT_REJECT = "5.7.1 message content rejected"
_DSN = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(\s|$)")
_HEADER_LABEL = re.compile(r"^[\x21-\x39\x3b-\x7e]+:")
KNOWN = {"REJECT", "DISCARD", "HOLD", "REDIRECT", "FILTER", "WARN", "INFO", "PREPEND", "REPLACE",
         "IGNORE", "STRIP", "PASS", "DUNNO", "OK", "BCC"}


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    text: str = ""


def parse_action(value: str) -> Action:
    word, _, rest = value.strip().partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + (" " + rest if rest else "")
    kind = word.upper()
    if kind == "OK":
        kind = "DUNNO"
    return Action(kind, rest.strip())


@dataclass(slots=True)
class Verdict:
    """What the checks decided for the whole message."""
    reject: str = ""          # "5.7.1 text"
    discard: str = ""
    hold: str = ""
    redirect: str = ""
    filter: str = ""
    bcc: list[str] = field(default_factory=list)
    done: bool = False        # no more inspection (REJECT, DISCARD, PASS)

    @property
    def rejected(self) -> bool:
        return bool(self.reject)


def reject_text(text: str) -> str:
    if not text:
        return DEFAULT_REJECT
    return text if _DSN.match(text) else f"5.7.1 {text}"


def lookup(tables: Sequence[Table], line: str) -> Action | None:
    if not line:
        return None          # header_checks(5) BUGS: empty lines never match
    for t in tables:
        v = t.lookup(line)
        if v is not None:
            a = parse_action(v)
            return None if a.kind == "DUNNO" else a
    return None


LogFn = Callable[[str, str, str, str], None]     # (action word, where, line, text)


def apply(tables: Sequence[Table], line: str, where: str, verdict: Verdict, log: LogFn) -> list[str]:
    """Inspect one line ('header' or 'body'); return what replaces it (possibly [],
    one line, or a prepended line and the line)."""
    if verdict.done:
        return [line]
    a = lookup(tables, line)
    if a is None:
        return [line]
    k = a.kind
    if k == "REJECT":
        verdict.reject = reject_text(a.text)
        verdict.done = True
        log("reject", where, line, verdict.reject)
    elif k == "DISCARD":
        verdict.discard = a.text or "discarded"
        verdict.done = True
        log("discard", where, line, a.text)
    elif k == "HOLD":
        verdict.hold = a.text or "held"
        log("hold", where, line, a.text)
    elif k == "REDIRECT":
        if "@" not in a.text:
            log("warning", where, line, f"REDIRECT needs user@domain, got {a.text!r}: ignored")
        else:
            verdict.redirect = a.text.split()[0]
            log("redirect", where, line, verdict.redirect)
    elif k == "BCC":
        if "@" in a.text:
            verdict.bcc.append(a.text.split()[0])
    elif k == "FILTER":
        if ":" not in a.text:
            log("warning", where, line, f"FILTER needs transport:destination, got {a.text!r}: ignored")
        else:
            verdict.filter = a.text.split()[0]
            log("filter", where, line, verdict.filter)
    elif k == "WARN":
        log("warning", where, line, a.text)
    elif k == "INFO":
        log("info", where, line, a.text)
    elif k == "PASS":
        verdict.done = True
        log("pass", where, line, a.text)
    elif k == "PREPEND":
        if not a.text or (where == "header" and not _HEADER_LABEL.match(a.text)):
            log("warning", where, line, f"PREPEND needs a header label: {a.text!r}: ignored")
            return [line]
        log("prepend", where, line, a.text)
        return [a.text, line]
    elif k == "REPLACE":
        if where == "header" and not _HEADER_LABEL.match(a.text):
            log("warning", where, line, f"REPLACE needs a header label: {a.text!r}: ignored")
            return [line]
        log("replace", where, line, a.text)
        return [a.text]
    elif k == "IGNORE":
        return []
    elif k == "STRIP":
        log("strip", where, line, a.text)
        return []
    else:
        log("warning", where, line, f"unknown action {a.kind!r}: ignored")
    return [line]
