"""Fuzz target: table results read as actions: access(5) (estafeta/policy/access.py) and
header/body checks (estafeta/core/content_checks.py).

Input: the right-hand side of a table entry (UTF-8; invalid bytes become U+FFFD).

Expected: AccessSyntaxError (the restriction evaluator answers 451 4.3.5 for it).
Bugs: any other exception; an action of an unknown kind; a CODE action whose code is
not 4xx/5xx or whose enhanced status is of another class; REDIRECT/BCC without
exactly one address, FILTER without transport:destination, PREPEND that is no
header line; a content-check action of an empty kind.
"""
from __future__ import annotations

import re

import atheris

from fuzzlib import check, main

# The table kinds that tables/__init__.py imports but this target does not use stay
# uninstrumented: a faster start and a coverage signal about the code under test.
with atheris.instrument_imports(include=["estafeta"], exclude=[
        "estafeta.tables.sql", "estafeta.tables.patterns", "estafeta.tables.pcre_re",
        "estafeta.tables.posix_re", "estafeta.tables.cidr"]):
    from estafeta.core import content_checks
    from estafeta.policy import access

KINDS = {access.OK, access.RELAY, access.REJECT, access.DEFER, access.DEFER_IF_REJECT, access.DEFER_IF_PERMIT,
         access.CODE, access.DISCARD, access.HOLD, access.REDIRECT, access.BCC, access.FILTER, access.PREPEND,
         access.WARN, access.INFO, access.DUNNO, access.RESTRICTIONS}
STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def one_input(data: bytes) -> None:
    value = data.decode("utf-8", "replace")
    c = content_checks.parse_action(value)
    check(isinstance(c.kind, str) and isinstance(c.text, str), f"content action {c!r}")
    check(c.kind or not value.strip(), f"content action without a kind from {value!r}")
    try:
        a = access.parse_action(value)
    except access.AccessSyntaxError:
        return
    check(a.kind in KINDS, f"unknown kind {a.kind!r}")
    if a.kind == access.CODE:
        check(400 <= a.code <= 599, f"code {a.code} from {value!r}")
        check(not a.enhanced or (STATUS.fullmatch(a.enhanced) and a.enhanced[0] == str(a.code)[0]),
              f"enhanced {a.enhanced!r} with code {a.code} from {value!r}")
    elif a.kind in (access.REDIRECT, access.BCC):
        check("@" in a.text and len(a.text.split()) == 1, f"{a.kind} to {a.text!r}")
    elif a.kind == access.FILTER:
        check(":" in a.text and not a.text.startswith(":") and len(a.text.split()) == 1, f"FILTER {a.text!r}")
    elif a.kind == access.PREPEND:
        check(re.match(r"[\x21-\x39\x3b-\x7e]+:", a.text), f"PREPEND {a.text!r}")
    elif a.kind == access.RESTRICTIONS:
        # "," is an empty list (no decision, as DUNNO); names never hold separators.
        check(all(n and not re.search(r"[\s,]", n) for n in a.restrictions),
              f"restrictions {a.restrictions!r} from {value!r}")


if __name__ == "__main__":
    main(one_input)
