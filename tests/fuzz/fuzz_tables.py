"""Fuzz target: lookup table sources: regexp: and pcre: (estafeta/tables/patterns.py with
the POSIX and PCRE dialect translators posix_re.py, pcre_re.py), cidr:, texthash:,
inline: and static: (estafeta/tables/).

Input: one byte choosing the kind (value % 6: regexp, pcre, cidr, texthash, inline,
static), the lookup key up to the first LF (at most 16 characters are used, so a
pathological pattern cannot make a lookup take exponential time), then the table
source: a file for regexp/pcre/cidr/texthash, the text between the braces for
inline, the name for static.

Expected: ConfigError (a bad table; the file and line named), TableTempError.
Bugs: any other exception (re.error, ValueError, IndexError, RecursionError ...) from
opening the table, a lookup or items(); a lookup that returns something other than
a string or None; a rule that matches differently after the table is read again.
"""
from __future__ import annotations

import os

import atheris

from fuzzlib import check, main, scratch, text

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.core.errors import ConfigError
    from estafeta.tables import TableTempError, open_table

KINDS = ("regexp", "pcre", "cidr", "texthash", "inline", "static")
TMP = scratch("tables")
PATH = os.path.join(TMP, "table")


def one_input(data: bytes) -> None:
    if not data:
        return
    kind = KINDS[data[0] % len(KINDS)]
    key_raw, _, body = data[1:].partition(b"\n")
    key = text(key_raw)[:16]
    src = text(body)
    if kind in ("inline", "static"):
        spec = f"{kind}:{{{src}}}"
    else:
        with open(PATH, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(src)
        spec = f"{kind}:{PATH}"
    try:
        table = open_table(spec)
    except (ConfigError, TableTempError):
        return
    results = []
    for k in (key, key.upper(), "", "192.0.2.1", "2001:db8::1"):
        try:
            v = table.lookup(k)
        except TableTempError:
            v = TableTempError
        check(v is None or v is TableTempError or isinstance(v, str), f"lookup({k!r}) returned {v!r}")
        results.append(v)
    if hasattr(table, "items"):
        for k, v in table.items():
            check(isinstance(k, str) and isinstance(v, str), f"items() gave {k!r}, {v!r}")
    if kind in ("regexp", "pcre", "cidr"):
        again = open_table(spec)       # the same source must build the same table
        check([again.lookup(k) for k in (key, key.upper(), "", "192.0.2.1", "2001:db8::1")] == results,
              "a table reads differently the second time")


if __name__ == "__main__":
    main(one_input)
