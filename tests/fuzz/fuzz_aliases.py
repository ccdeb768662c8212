"""Fuzz target: aliases(5) files, :include: and .forward lists (estafeta/tables/aliases.py).

Input: the text of an aliases file (UTF-8, surrogateescape, as read_aliases reads it);
the same text is also parsed as a .forward / :include: list.

Expected: ConfigError.
Bugs: any other exception; an entry with an empty or upper-case name, without any
destination, or with a token with an empty value; and an entry whose stored right-hand side (what newaliases writes to
the .db) does not parse, with parse_list as the local agent reads it at delivery,
into the same tokens as the source said: a command, file or :include: must never turn
into something else, nor an address into a command, between the two.
"""
from __future__ import annotations


import atheris

from fuzzlib import Invariant, check, main, text

# The table kinds that tables/__init__.py imports but this target does not use stay
# uninstrumented: a faster start and a coverage signal about the code under test.
with atheris.instrument_imports(include=["estafeta"], exclude=[
        "estafeta.tables.sql", "estafeta.tables.patterns", "estafeta.tables.pcre_re",
        "estafeta.tables.posix_re", "estafeta.tables.cidr"]):
    from estafeta.core.errors import ConfigError
    from estafeta.tables.aliases import _split_items, classify, parse_aliases, parse_list
    from estafeta.tables.hash import build_image


def one_input(data: bytes) -> None:
    src = text(data)
    try:
        tokens = parse_list(src, ".forward")
        check(all(t.value for t in tokens), f"empty token in {tokens!r}")
    except ConfigError:
        pass
    try:
        entries = parse_aliases(src, "aliases")
    except ConfigError:
        return
    for name, rhs, line in entries:
        check(name and name == name.lower() and line >= 1, f"entry {name!r} at line {line}")
        want = [classify(item) for item in _split_items(rhs, "aliases", line)]
        try:
            got = parse_list(rhs, "aliases", line)
        except ConfigError as e:
            raise Invariant(f"stored value of {name!r} ({rhs!r}) does not parse: {e}") from None
        check(got == want, f"{name!r}: {rhs!r} reads as {got!r} at delivery, {want!r} in the source")
        check(got and all(t.value for t in got), f"no or empty token for {name!r}: {got!r}")
    build_image((n, v) for n, v, _ in entries)


if __name__ == "__main__":
    main(one_input)
