"""POSIX regular expressions (regexp: tables) translated to Python `re` syntax.

Postfix compiles regexp: patterns with the C library's regcomp(): extended syntax
(ERE) by default, basic syntax (BRE) when the `x` flag is toggled off, and
REG_NEWLINE with the `m` flag. This module owns the translation of that syntax
(GNU C library dialect, as on Debian) into a Python pattern; the caller compiles
it as bytes with re.ASCII semantics, matching the C library in the byte-wise "C"
locale postmap runs in. Input is the administrator's table file.

Translated: bracket expressions ([[:alpha:]], a leading ']', backslash literal
inside brackets, [=x=] and [.x.]), intervals {m,n} and {,n}, stacked quantifiers
(ERE `a+?` is (a+)? and never lazy), `*` with nothing to repeat (a literal), GNU
escapes \\w \\W \\s \\S \\b \\B \\< \\> \\` \\', back-references \\1-\\9, `$` (end of
string only, unless `m`), and in BRE the \\( \\) \\{ \\} \\| \\+ \\? forms.
Known difference: POSIX picks the leftmost-LONGEST match, Python the leftmost-first
alternative. Whether a key matches is the same; what $1 captures can differ for
alternations whose earlier branch is a prefix of a later one (`(a|ab)c`).
Next: patterns.py (the table file), pcre_re.py (the PCRE dialect).
"""
from __future__ import annotations

import re

POSIX_CLASSES = {
    "alpha": "A-Za-z", "digit": "0-9", "alnum": "0-9A-Za-z", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "print": r"\x20-\x7e", "graph": r"\x21-\x7e", "cntrl": r"\x00-\x1f\x7f", "xdigit": "0-9A-Fa-f",
}
_INTERVAL = re.compile(r"(\d*)(,(\d*))?")


class RegexSyntaxError(ValueError):
    pass


def class_char(c: str) -> str:
    """One character, safe inside a Python character class."""
    return "\\" + c if c in "\\]^-[&~|" else c


def translate_posix(pattern: str, extended: bool = True, newline: bool = False) -> str:
    return _Posix(pattern, extended, newline).run()


class _Posix:
    def __init__(self, p: str, extended: bool, newline: bool) -> None:
        self.p, self.i, self.ere, self.nl = p, 0, extended, newline
        self.groups = 0

    def run(self) -> str:
        out = self.alternation(top=True)
        if self.i < len(self.p):
            raise RegexSyntaxError("Unmatched ) or \\)")
        return out

    # -- structure ---------------------------------------------------------------------
    def _at_alt(self) -> bool:
        p, i = self.p, self.i
        return p.startswith("|", i) if self.ere else p.startswith("\\|", i)

    def _at_close(self) -> bool:
        p, i = self.p, self.i
        return p.startswith(")", i) if self.ere else p.startswith("\\)", i)

    def alternation(self, top: bool) -> str:
        branches = [self.sequence()]
        while self._at_alt():
            self.i += 1 if self.ere else 2
            branches.append(self.sequence())
        if not top and not self._at_close():
            raise RegexSyntaxError("Unmatched ( or \\(")
        if top and self.i < len(self.p) and self._at_close() and not self.ere:
            raise RegexSyntaxError("Unmatched ) or \\)")
        return "|".join(branches)

    def sequence(self) -> str:
        pieces: list[str] = []
        start = True
        while self.i < len(self.p) and not self._at_alt():
            if self._at_close():
                if self.ere and self.groups == 0:   # a stray ')' in ERE is an error in glibc
                    raise RegexSyntaxError("Unmatched ) or \\)")
                break
            atom = self.atom(start)
            start = False
            quantified = atom.startswith(("^", "$", "\\b", "\\B", "\\A", "\\Z"))
            while (q := self.quantifier()) is not None:
                # ERE `a+?` is (a+)?, never Python's lazy `+?`; anchors need a group too.
                atom = f"(?:{atom}){q}" if quantified else atom + q
                quantified = True
            pieces.append(atom)
        return "".join(pieces)

    def quantifier(self) -> str | None:
        p, i = self.p, self.i
        if i >= len(p):
            return None
        c = p[i]
        if c == "*" or (self.ere and c in "+?"):
            self.i += 1
            return c
        if not self.ere and p.startswith(("\\+", "\\?"), i):
            self.i += 2
            return p[i + 1]
        if (self.ere and c == "{") or (not self.ere and p.startswith("\\{", i)):
            j = i + (1 if self.ere else 2)
            m = _INTERVAL.match(p, j)
            assert m is not None
            end = m.end()
            close = "}" if self.ere else "\\}"
            if p.startswith(close, end) and (m.group(1) or m.group(3)):
                lo, hi = m.group(1) or "0", m.group(3)
                if m.group(2) and hi and int(hi) < int(lo):
                    raise RegexSyntaxError("Invalid content of \\{\\}")
                self.i = end + len(close)
                return "{%s}" % (lo if not m.group(2) else f"{lo},{hi or ''}")
            if self.ere:
                return None                     # glibc: a '{' that starts no interval is literal
            raise RegexSyntaxError("Invalid preceding regular expression")
        return None

    def atom(self, at_start: bool) -> str:
        p = self.p
        c = p[self.i]
        self.i += 1
        if self.ere:
            if c == "(":
                self.groups += 1
                inner = self.alternation(top=False)
                self.i += 1
                self.groups -= 1
                return f"({inner})"
            if c in "*+?" or (c == "{" and at_start):
                return re.escape(c)             # nothing to repeat: a literal
            if c == "^":
                return "^"
            if c == "$":
                return "$" if self.nl else r"\Z"
        else:
            if c == "*" and at_start:
                return r"\*"
            if c == "^" and at_start:
                return "^"
            if c == "$" and (self.i == len(p) or self._at_close() or self._at_alt()):
                return "$" if self.nl else r"\Z"
            if c == "\\" and self.i < len(p) and p[self.i] == "(":
                self.i += 1
                self.groups += 1
                inner = self.alternation(top=False)
                self.i += 2
                self.groups -= 1
                return f"({inner})"
        if c == ".":
            return r"[^\n]" if self.nl else "."
        if c == "[":
            return self.bracket()
        if c == "\\":
            return self.escape()
        return re.escape(c)

    def escape(self) -> str:
        p = self.p
        if self.i >= len(p):
            raise RegexSyntaxError("Trailing backslash")
        c = p[self.i]
        self.i += 1
        if c in "wWsSbB":
            return "\\" + c
        if c == "<":
            return r"\b(?=\w)"
        if c == ">":
            return r"\b(?<=\w)"
        if c == "`":
            return r"\A"
        if c == "'":
            return r"\Z"
        if c in "123456789":
            return f"(?:\\{c})"
        return re.escape(c)

    def bracket(self) -> str:
        p = self.p
        self._items: list[str] = []
        negate = p.startswith("^", self.i)
        if negate:
            self.i += 1
        first = True
        while True:
            if self.i >= len(p):
                raise RegexSyntaxError("Unmatched [, [^, [:, [., or [=")
            if p[self.i] == "]" and not first:
                self.i += 1
                break
            first = False
            lo = self._bracket_element()
            if lo is None:
                continue                        # a [:class:] went straight into _items
            if p.startswith("-", self.i) and self.i + 1 < len(p) and p[self.i + 1] != "]":
                self.i += 1
                hi = self._bracket_element()
                if hi is None or ord(hi) < ord(lo):
                    raise RegexSyntaxError("Invalid range end")
                self._items.append(f"{class_char(lo)}-{class_char(hi)}")
            else:
                self._items.append(class_char(lo))
        body = "".join(self._items)
        if negate:
            # REG_NEWLINE: a non-matching list never matches a newline.
            return f"[^{body}{chr(92) + 'n' if self.nl else ''}]"
        return f"[{body}]"

    def _bracket_element(self) -> str | None:
        """One bracket element: a character, or None after a [:class:] was added."""
        p = self.p
        if p.startswith("[:", self.i):
            end = p.find(":]", self.i + 2)
            if end < 0:
                raise RegexSyntaxError("Unmatched [, [^, [:, [., or [=")
            name = p[self.i + 2:end]
            if name not in POSIX_CLASSES:
                raise RegexSyntaxError(f"Invalid character class name {name!r}")
            self.i = end + 2
            self._items.append(POSIX_CLASSES[name])
            return None
        if p.startswith(("[=", "[."), self.i):
            close = p[self.i + 1] + "]"
            end = p.find(close, self.i + 2)
            if end < 0 or end - self.i - 2 != 1:
                raise RegexSyntaxError("Invalid collation character")
            ch = p[self.i + 2]
            self.i = end + 2
            return ch
        self.i += 1
        return p[self.i - 1]
