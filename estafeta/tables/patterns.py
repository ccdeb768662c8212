"""regexp: and pcre: tables — an ordered list of patterns, first match wins.

Owns the file syntax of regexp_table(5) and pcre_table(5), shared by both:

    /pattern/flags result        result when the key matches
    !/pattern/flags result       result when it does not ($n not allowed)
    if /pattern/flags            the rules up to the matching endif apply only
    if !/pattern/flags           when the key matches (does not match); nests
    endif

Any non-alphanumeric, non-blank character may replace '/' as the delimiter; a
backslash before the delimiter keeps it in the pattern. `if`/`endif` are
case-insensitive. Results may use $1..$n, ${n} or $(n) for captured text (empty
when the group did not take part) and $$ for '$'. The key is matched whole and
as given (no lowercasing; the i flag makes the pattern caseless instead), as
bytes, like Postfix. The pattern dialects live in posix_re.py and pcre_re.py.

Deliberate difference from Postfix: a rule Postfix would skip with a warning
(bad pattern, unknown flag, bad $ syntax, $n out of range or in a negated rule,
unbalanced if/endif, text after if/endif) is a ConfigError naming file and line,
so a typo never silently drops a REJECT rule. A rule without a result gets ""
(with a warning), as in Postfix. A table whose file was edited into an error
while running answers with TableTempError (the caller defers) until fixed.
Next: source.py (logical lines, reopen-on-change), tables/__init__.py (registry).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..core.errors import ConfigError
from .pcre_re import translate_pcre
from .posix_re import RegexSyntaxError, translate_posix
from .source import RuleFileTable

_REF = re.compile(rb"\$(?:(\$)|\{([^}]*)\}|\(([^)]*)\)|([A-Za-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class Rule:
    line: int
    kind: str                       # "match", "if", "endif"
    negate: bool
    regex: re.Pattern[bytes] | None
    anchored: bool                  # pcre A flag: match only at the start
    result: tuple[bytes | int, ...] = ()    # literal pieces and group numbers
    source: str = ""
    skip_to: int = 0                # for "if": index of the matching endif


def _parse_result(text: str, groups: int, negate: bool) -> tuple[bytes | int, ...]:
    raw = text.encode("utf-8", "surrogateescape")
    pieces: list[bytes | int] = []
    pos = 0
    while (d := raw.find(b"$", pos)) >= 0:
        m = _REF.match(raw, d)
        if not m:
            raise RegexSyntaxError(f"bad replacement syntax in {text!r}: '$' must be followed by a group number or '$'")
        if d > pos:
            pieces.append(raw[pos:d])
        pos = m.end()
        if m.group(1):
            pieces.append(b"$")
            continue
        name = (m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None
                else m.group(4)).decode("utf-8", "surrogateescape")     # the file may hold any bytes
        if not (name.isascii() and name.isdigit()):       # not "²": int() refuses it
            raise RegexSyntaxError(f"non-numeric replacement index {name!r}")
        n = int(name)
        if negate:
            raise RegexSyntaxError("$number found in negative match replacement text")
        if n < 1 or n > groups:
            raise RegexSyntaxError(f"out of range replacement index {name!r} (the pattern has {groups} groups)")
        pieces.append(n)
    if pos < len(raw):
        pieces.append(raw[pos:])
    return tuple(pieces)


class PatternTable(RuleFileTable):
    """Base of RegexpTable and PcreTable: parsing, if/endif, reopen-on-change."""

    kind = ""
    DEFAULT_FLAGS = ""              # flags that are on before the rule's toggles
    KNOWN_FLAGS = ""
    IGNORED_FLAGS = ""              # accepted with a warning (pcre X: obsolete)

    def __init__(self, name: str) -> None:
        self.name = f"{self.kind}:{name}"
        self.warnings: list[str] = []
        self.rules: list[Rule] = []
        self._open_source(name)

    def _build(self, lines: list[tuple[int, str]], path: str) -> None:
        rules: list[Rule] = []
        warnings: list[str] = []
        open_ifs: list[int] = []
        for n, line in lines:
            try:
                rule = self._parse_line(line, n, warnings, path)
            except RegexSyntaxError as e:
                raise ConfigError(path, n, str(e)) from None
            if rule.kind == "if":
                open_ifs.append(len(rules))
            elif rule.kind == "endif":
                if not open_ifs:
                    raise ConfigError(path, n, "endif without matching if")
                start = open_ifs.pop()
                r = rules[start]
                rules[start] = Rule(r.line, r.kind, r.negate, r.regex, r.anchored, r.result, r.source, len(rules))
            rules.append(rule)
        if open_ifs:
            raise ConfigError(path, rules[open_ifs[-1]].line, "if has no matching endif")
        self.rules, self.warnings = rules, [f"{path}, line {w}" for w in warnings]

    def _parse_line(self, line: str, n: int, warnings: list[str], path: str) -> Rule:
        word = re.match(r"(if|endif)(?![A-Za-z0-9])", line, re.IGNORECASE)
        if word and word.group(1).lower() == "endif":
            if line[word.end():].strip():
                raise RegexSyntaxError(f"text after endif: {line[word.end():].strip()!r}")
            return Rule(n, "endif", False, None, False, source=line)
        rest = line[word.end():].lstrip() if word else line
        negate = rest.startswith("!")
        if negate:
            rest = rest[1:].lstrip()
        if not rest or rest[0].isalnum() or rest[0].isspace():
            raise RegexSyntaxError(f"unrecognized line {line!r}: expected /pattern/flags result, if or endif")
        delim = rest[0]
        i = 1
        while i < len(rest) and rest[i] != delim:
            i += 2 if rest[i] == "\\" else 1
        if i >= len(rest):
            raise RegexSyntaxError(f"missing closing delimiter {delim!r} in {line!r}")
        pattern = rest[1:i]
        m = re.compile(r"\S*").match(rest, i + 1)
        assert m is not None
        flags, result = m.group(0), rest[m.end():].strip()
        regex, anchored = self._compile(pattern, flags, n, warnings)
        if word:
            if result:
                raise RegexSyntaxError(f"text after the if pattern: {result!r}"
                                       " (rules inside if..endif go on their own unindented lines)")
            return Rule(n, "if", negate, regex, anchored, source=line)
        if not result:
            warnings.append(f"{n}: no replacement text: using empty string")
        return Rule(n, "match", negate, regex, anchored, _parse_result(result, regex.groups, negate), line)

    def _flags(self, flags: str, n: int, warnings: list[str]) -> set[str]:
        on = set(self.DEFAULT_FLAGS)
        for f in flags:
            if f in self.IGNORED_FLAGS:
                warnings.append(f"{n}: ignoring obsolete regexp option {f!r}")
            elif f not in self.KNOWN_FLAGS:
                raise RegexSyntaxError(f"unknown regexp option {f!r}")
            else:
                on ^= {f}
        return on

    def _compile(self, pattern: str, flags: str, n: int, warnings: list[str]) -> tuple[re.Pattern[bytes], bool]:
        raise NotImplementedError

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, key: str) -> str | None:
        self._fresh()
        k = key.encode("utf-8", "surrogateescape")
        rules, i = self.rules, 0
        while i < len(rules):
            r = rules[i]
            if r.kind == "endif":
                i += 1
                continue
            assert r.regex is not None
            m = r.regex.match(k) if r.anchored else r.regex.search(k)
            if r.kind == "if":
                i = i + 1 if (m is None) == r.negate else r.skip_to + 1
                continue
            if (m is None) == r.negate:
                out = b"".join(p if isinstance(p, bytes) else (m.group(p) or b"") for p in r.result) \
                    if m is not None else b"".join(p for p in r.result if isinstance(p, bytes))
                return out.decode("utf-8", "surrogateescape")
            i += 1
        return None

    def items(self) -> list[tuple[str, str]]:
        """The rules as written (for `estafeta map -s`): pattern part, result part."""
        self._fresh()
        out = []
        for r in self.rules:
            head, _, tail = r.source.partition(" ")
            out.append((head, tail.strip()))
        return out


def _translated(translate: Callable[[], str], pattern: str) -> str:
    try:
        return translate()
    except RegexSyntaxError as e:
        raise RegexSyntaxError(f"bad regular expression {pattern!r}: {e}") from None


class RegexpTable(PatternTable):
    """regexp:/path — POSIX extended regular expressions (regexp_table(5))."""

    kind = "regexp"
    DEFAULT_FLAGS = "ix"
    KNOWN_FLAGS = "ixm"

    def _compile(self, pattern: str, flags: str, n: int, warnings: list[str]) -> tuple[re.Pattern[bytes], bool]:
        on = self._flags(flags, n, warnings)
        py = _translated(lambda: translate_posix(pattern, extended="x" in on, newline="m" in on), pattern)
        pyflags = re.ASCII | (re.IGNORECASE if "i" in on else 0) | (re.MULTILINE if "m" in on else re.DOTALL)
        try:
            return re.compile(py.encode("utf-8", "surrogateescape"), pyflags), False
        except (re.error, OverflowError) as e:      # OverflowError: a{99999999999}
            raise RegexSyntaxError(f"bad regular expression {pattern!r}: {e}") from None


class PcreTable(PatternTable):
    """pcre:/path — Perl-compatible regular expressions (pcre_table(5)), see pcre_re.py."""

    kind = "pcre"
    DEFAULT_FLAGS = "is"
    KNOWN_FLAGS = "imsxAEU"
    IGNORED_FLAGS = "X"

    def _compile(self, pattern: str, flags: str, n: int, warnings: list[str]) -> tuple[re.Pattern[bytes], bool]:
        on = self._flags(flags, n, warnings)
        py = _translated(lambda: translate_pcre(pattern, extended="x" in on, ungreedy="U" in on,
                            dollar_endonly="E" in on, multiline="m" in on), pattern)
        pyflags = re.ASCII | (re.IGNORECASE if "i" in on else 0) | (re.MULTILINE if "m" in on else 0) \
            | (re.DOTALL if "s" in on else 0)
        try:
            return re.compile(py.encode("utf-8", "surrogateescape"), pyflags), "A" in on
        except (re.error, OverflowError) as e:      # OverflowError: a{99999999999}
            raise RegexSyntaxError(f"bad regular expression {pattern!r}: {e}") from None
