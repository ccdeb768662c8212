"""Reading table source files the way Postfix's pattern tables read them.

Owns the logical-line rules shared by regexp:, pcre: and cidr: files and the
`name = value` parameter files of sqlite: and pgsql: (main.cf syntax):

  * empty lines, whitespace-only lines and lines whose first non-blank character
    is '#' are ignored;
  * a line that starts with whitespace continues the previous logical line; the
    pieces are joined as written (the newline goes, the indentation stays), which
    is what `postmap -q` shows for a multi-line result;
  * a logical line reports the number of its first physical line.

A file that changes is noticed by `FileWatch` (device, inode, size, mtime), so
tables reopen it on the next lookup. Trust boundary: these files belong to the
administrator; problems are ConfigError with the file and line.
Next: patterns.py (regexp/pcre rules), cidr.py, sql.py.
"""
from __future__ import annotations

import os

from ..core.errors import ConfigError


def logical_lines(text: str, path: str) -> list[tuple[int, str]]:
    """(first line number, joined text) for each logical line of `text`."""
    out: list[tuple[int, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace():
            if not out:
                raise ConfigError(path, n, f"logical line must not start with whitespace: {raw!r}")
            ln, prev = out[-1]
            out[-1] = (ln, prev + raw.rstrip())
        else:
            out.append((n, raw.rstrip()))
    return out


def inline_lines(body: str, name: str) -> list[tuple[int, str]]:
    """Postfix 3.7 inline form `type:{ {rule-1}, {rule-2} }`: one rule per item."""
    from . import _split_inline
    body = body.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ConfigError(name, 0, "inline table must be enclosed in {}")
    return [(i, item) for i, item in enumerate(_split_inline(body[1:-1]), 1)]


def read_parameters(path: str) -> dict[str, str]:
    """A main.cf-style file: `name = value` per logical line, names lowercased."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(path, 0, "table configuration file not found") from None
    params: dict[str, str] = {}
    for n, line in logical_lines(text, path):
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ConfigError(path, n, f"expected 'name = value', got {line!r}")
        params[name.strip().lower()] = " ".join(value.split())
    return params


class FileWatch:
    """Tells whether a file has changed since the last `mark()` (for reopen-on-change)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ident: tuple[int, int, int, int] | None = None

    @staticmethod
    def _ident(st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> str:
        """Read the file and remember its identity (as seen when opened)."""
        with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
            st = os.fstat(f.fileno())
            text = f.read()
        self.ident = self._ident(st)
        return text

    def changed(self) -> bool:
        return self._ident(os.stat(self.path)) != self.ident


class RuleFileTable:
    """What the rule-file tables (regexp, pcre, cidr) share: the source is either an
    inline `{ rule, rule }` list or a file watched for changes; the subclass parses the
    logical lines in `_build(lines, path)`."""

    name: str
    watch: "FileWatch | None"

    def _open_source(self, name: str) -> None:
        self.watch = None
        if name.lstrip().startswith("{"):
            self._build(inline_lines(name, self.name), self.name)
        else:
            self.watch = FileWatch(name)
            self._load()

    def _load(self) -> None:
        from . import TableTempError
        assert self.watch is not None
        try:
            text = self.watch.read()
        except FileNotFoundError:
            raise ConfigError(self.watch.path, 0, "table file not found") from None
        except OSError as e:
            raise TableTempError(f"{self.name}: {e}") from e
        self._build(logical_lines(text, self.watch.path), self.watch.path)

    def _fresh(self) -> None:
        """Reread a changed file before a lookup. Edited into a bad state while
        running: defer (TableTempError) rather than answer wrongly."""
        from . import TableTempError
        if self.watch is None:
            return
        try:
            if self.watch.changed():
                self._load()
        except (OSError, ConfigError) as e:
            raise TableTempError(f"{self.name}: {e}") from e

    def _build(self, lines: list[tuple[int, str]], path: str) -> None:
        raise NotImplementedError
