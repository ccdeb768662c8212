"""The aliases(5) file format: parsing the source and the right-hand sides.

Owns the syntax administrators know from /etc/aliases (SPEC S4, seed 9):

    # comment
    name: value, value, ...          a logical line; lines that start with
        value, ...                   whitespace continue it
    "name with space": value
    value = address | /file/name | "|command args" | :include:/file/name | \\user

Commands and file names that hold spaces or commas are quoted ("|cmd a, b").
`owner-name` entries are ordinary entries; the local agent gives them meaning.
Parse errors name the file and line (ConfigError). The same value syntax is used
in :include: files and .forward files (`parse_list`).

`build_database(spec)` writes the index a `hash:` alias table reads (newaliases).
Trust boundary: the source files are the administrator's (aliases, :include:
files) or the user's (.forward): parsed, never executed here; what the tokens
mean and with which rights they run is decided by delivery/local.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.errors import ConfigError

ADDRESS, FILE, COMMAND, INCLUDE = "address", "file", "command", "include"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str          # ADDRESS, FILE, COMMAND or INCLUDE
    value: str         # the address, the path or the command line (without "|")
    no_alias: bool = False   # "\user": the mailbox itself, no further expansion


def _split_items(text: str, where: str, line: int) -> list[str]:
    """Split on commas outside double quotes; quotes are kept for classify()."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quoted and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise ConfigError(where, line, "unbalanced double quote")
    items.append("".join(cur))
    return [s.strip() for s in items if s.strip()]


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        inner = s[1:-1]
        out, i = [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(inner[i])
                i += 1
        return "".join(out)
    return s


def classify(item: str) -> Token:
    raw = item.strip()
    s = _unquote(raw) if raw.startswith('"') else raw
    if s.startswith("|"):
        return Token(COMMAND, s[1:].strip())
    if s[:9].lower() == ":include:":
        return Token(INCLUDE, s[9:].strip())
    if s.startswith("/"):
        return Token(FILE, s)
    if s.startswith("\\"):
        return Token(ADDRESS, s[1:], no_alias=True)
    # "quoted local part"@domain keeps its quotes in the address text
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    return Token(ADDRESS, raw if raw.startswith('"') and "@" in raw else s)


def parse_list(text: str, where: str = "", line: int = 0) -> list[Token]:
    """One right-hand side (or a whole :include:/.forward file) into tokens."""
    tokens: list[Token] = []
    for n, raw in enumerate(text.splitlines() or [""], 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        for item in _split_items(s, where, line or n):
            tok = classify(item)
            if not tok.value:
                raise ConfigError(where, line or n, f"empty destination in {item!r}")
            tokens.append(tok)
    return tokens


def _split_name(text: str, where: str, line: int) -> tuple[str, str]:
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise ConfigError(where, line, "unbalanced double quote in alias name")
        name, rest = _unquote(text[:i + 1]), text[i + 1:].lstrip()
        if not name:            # as for an unquoted name: "": x is no alias
            raise ConfigError(where, line, "bad alias name ''")
        if not rest.startswith(":"):
            raise ConfigError(where, line, f"missing ':' after alias name {name!r}")
        return name, rest[1:]
    name, colon, rest = text.partition(":")
    if not colon:
        raise ConfigError(where, line, f"missing ':' in {text[:40]!r} (want name: value)")
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise ConfigError(where, line, f"bad alias name {name!r}")
    return name, rest


def parse_aliases(text: str, where: str) -> list[tuple[str, str, int]]:
    """Source text -> [(lowercased name, right-hand side, line)], values checked."""
    logical: list[tuple[int, list[str]]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace():
            if not logical:
                raise ConfigError(where, n, "continuation line before any alias")
            logical[-1][1].append(raw.strip())
        else:
            logical.append((n, [raw.strip()]))
    out: list[tuple[str, str, int]] = []
    for n, parts in logical:
        name, rhs = _split_name(" ".join(parts), where, n)
        items = _split_items(rhs.strip(), where, n)
        if not items:           # "name:" or "name: ," (stored as "", an alias to nobody)
            raise ConfigError(where, n, f"alias {name!r} has no value")
        for item in items:
            if not classify(item).value:
                raise ConfigError(where, n, f"empty destination in {item!r}")
        if items[0].startswith("#"):
            # The stored value is read back with parse_list, where a line starting
            # with "#" is a comment: write the address as <#...> (classify strips it).
            items[0] = f"<{items[0]}>"
        out.append((name.lower(), ", ".join(items), n))
    return out


def read_aliases(path: str) -> list[tuple[str, str, int]]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_aliases(f.read(), path)


def build_database(spec: str) -> int:
    """Rebuild the index of one alias_database entry (newaliases); returns the entry count.

    Only `hash:` tables have an index; others (texthash) are read as they are.
    """
    kind, _, path = spec.partition(":")
    if kind != "hash":
        return -1
    from . import hash as hash_table
    entries = read_aliases(path)
    seen: dict[str, int] = {}
    for name, _v, n in entries:
        if name in seen:
            # Postfix's postalias warns and keeps the first; so do we (the later is ignored).
            import sys
            print(f"newaliases: warning: {path}, line {n}: duplicate entry: \"{name}\" (first at line {seen[name]})",
                  file=sys.stderr)
        else:
            seen[name] = n
    firsts: dict[str, str] = {}
    for name, v, _n in entries:
        firsts.setdefault(name, v)
    return hash_table.build(path, firsts.items())


def aliases_table_owner(table: object) -> int | None:
    """uid owning an alias table's file, when the table is file-based."""
    path = getattr(table, "db_path", None) or getattr(table, "path", None)
    if not isinstance(path, str):
        return None
    try:
        return os.stat(path).st_uid
    except OSError:
        return None
