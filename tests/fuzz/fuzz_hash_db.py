"""Fuzz target: hash: tables, estafeta's constant database (estafeta/tables/hash.py).

Input, either
  a .db image (it starts with the magic "ESTHASH1"): the reader on a damaged or
      hostile file, looked up with a few keys and listed with items(); or
  anything else: "key value" lines, built with build_image and read back.

Expected: ConfigError, TableTempError (the docstring: a malformed .db is a temporary
error for lookups, never "not found").
Bugs: any other exception (struct.error, IndexError, ValueError, OverflowError ...);
a lookup that does not end (a full slot table is probed once around, at most); and a
built table that does not give back, for every key (lower-cased), the last value
given for it, or whose items() differ from the pairs.
"""
from __future__ import annotations

import os

import atheris

from fuzzlib import check, main, scratch, text

# The table kinds that tables/__init__.py imports but this target does not use stay
# uninstrumented: a faster start and a coverage signal about the code under test.
with atheris.instrument_imports(include=["estafeta"], exclude=[
        "estafeta.tables.sql", "estafeta.tables.patterns", "estafeta.tables.pcre_re",
        "estafeta.tables.posix_re", "estafeta.tables.cidr"]):
    from estafeta.core.errors import ConfigError
    from estafeta.tables import TableTempError
    from estafeta.tables.hash import MAGIC, HashTable, build_image

TMP = scratch("hash")
PATH = os.path.join(TMP, "table")
COUNTER = [0]


def write(image: bytes) -> None:
    # A new file each time: the reader reopens on a change of inode, size or mtime,
    # and two images of one size written within the mtime granularity look alike.
    COUNTER[0] += 1
    tmp = f"{PATH}.{COUNTER[0]}"
    with open(tmp, "wb") as f:
        f.write(image)
    os.replace(tmp, PATH + ".db")


def read_damaged(image: bytes) -> None:
    write(image)
    try:
        table = HashTable(PATH)
    except (ConfigError, TableTempError):
        return
    for key in ("", "a", "postmaster", "Root", image[8:16].decode("latin-1")):
        try:
            v = table.lookup(key)
        except TableTempError:
            continue
        check(v is None or isinstance(v, str), f"lookup({key!r}) gave {v!r}")
    try:
        for k, v in table.items():
            check(isinstance(k, str) and isinstance(v, str), "items()")
    except TableTempError:
        pass


def roundtrip(src: str) -> None:
    pairs = []
    for line in src.splitlines():
        k, _, v = line.partition(" ")
        pairs.append((k, v))
    write(build_image(pairs))
    table = HashTable(PATH)
    want = {}
    for k, v in pairs:
        want[k.lower()] = v
    for k, v in pairs:
        got = table.lookup(k)
        check(got == want[k.lower()], f"lookup({k!r}) = {got!r}, want {want[k.lower()]!r}")
    check(dict(table.items()) == want and len(table.items()) == len(want), "items() differ from the pairs")


def one_input(data: bytes) -> None:
    if data.startswith(MAGIC):
        read_damaged(data)
    else:
        roundtrip(text(data))


if __name__ == "__main__":
    main(one_input)
