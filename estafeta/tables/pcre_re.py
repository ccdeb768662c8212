"""PCRE patterns (pcre: tables) translated to Python `re` syntax.

Postfix hands pcre: patterns to PCRE2, byte-wise (no UTF mode: `É` does not match
/é/i and \\w is ASCII), with the table flags i (caseless, on), s (dotall, on),
m, x, A (anchored), E (dollar end-only), U (ungreedy). Python's `re` covers most
of PCRE, including possessive quantifiers and atomic groups (Python 3.11). This
module owns the rest, rewritten into equivalent Python syntax:

  PCRE                         Python
  (?<name>..) (?'name'..)      (?P<name>..)
  \\k<n> \\k'n' \\k{n} \\g{n}     (?P=n) or a numbered back-reference; \\g{-1} relative
  \\Q...\\E                      the text escaped
  \\x{hh} \\o{oo} \\e \\cX         the character
  \\h \\H \\v \\V \\R \\N            horizontal / vertical space classes, newline sequence, non-newline
  \\z \\Z \\G                      \\Z, (?=\\n?\\Z), \\A (one match per lookup)
  [[:alpha:]] [[:^digit:]]     ASCII ranges inside the class
  (?i) mid-pattern             a scoped (?i:...) to the end of the group, reopened after each |
  x{,3}                        literal "x{,3}" (PCRE2 10.42 has no {,n} quantifier)
  flag x, (?x)                 whitespace and #comments removed here
  flag U                       every quantifier's greediness inverted
  flag E                       $ becomes \\Z
Refused with an error naming the construct: recursion and subroutine calls
((?R), (?1), (?&n), (?P>n)), branch reset (?|, backtracking verbs (*...),
callouts (?C, \\K, \\X, \\p{..}/\\P{..} (byte-wise PCRE has no use for them here),
the J/n/U inline flags. Input is the administrator's table file.
Next: patterns.py (the table file), posix_re.py (the regexp: dialect).
"""
from __future__ import annotations

import re

from .posix_re import POSIX_CLASSES, RegexSyntaxError, class_char

_HSPACE = r"\t \xa0"
_VSPACE = r"\n\x0b\f\r\x85"
_QUANT = re.compile(r"[*+?]|\{(\d+)(,(\d*))?\}")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def translate_pcre(pattern: str, extended: bool = False, ungreedy: bool = False,
                   dollar_endonly: bool = False, multiline: bool = False) -> str:
    return _Pcre(pattern, extended, ungreedy, dollar_endonly and not multiline).run()


class _Pcre:
    def __init__(self, p: str, extended: bool, ungreedy: bool, dollar_endonly: bool) -> None:
        self.p, self.i = p, 0
        self.ungreedy, self.dollar_endonly = ungreedy, dollar_endonly
        self.out: list[str] = []
        self.ngroups = 0
        self.frames: list[_Frame] = [_Frame(extended)]

    def emit(self, s: str) -> None:
        self.out.append(s)

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            self.step()
        if len(self.frames) != 1:
            raise RegexSyntaxError("missing closing parenthesis")
        self._close_scopes(self.frames[-1])
        return "".join(self.out)

    def _close_scopes(self, frame: _Frame) -> None:
        self.emit(")" * frame.open)
        frame.open = 0

    def step(self) -> None:
        p, i = self.p, self.i
        c = p[i]
        frame = self.frames[-1]
        if frame.x and c in " \t\n\r\f\v":
            self.i += 1
            return
        if frame.x and c == "#":
            end = p.find("\n", i)
            self.i = len(p) if end < 0 else end + 1
            return
        if c == "\\":
            self.emit(self.escape(in_class=False))
            self.quantifier()
            return
        if c == "[":
            self.i += 1
            self.emit(self.char_class())
            self.quantifier()
            return
        if c == "(":
            self.group()
            return
        if c == ")":
            if len(self.frames) == 1:
                raise RegexSyntaxError("unmatched closing parenthesis")
            self._close_scopes(frame)
            self.frames.pop()
            self.emit(")")
            self.i += 1
            self.quantifier()
            return
        if c == "|":
            self._close_scopes(frame)
            self.emit("|")
            self.i += 1
            for spec in frame.scoped:         # (?i) goes on into the next alternative
                self.emit(f"(?{spec}:")
            frame.open = len(frame.scoped)
            return
        if c == "$":
            self.i += 1
            self.emit(r"\Z" if self.dollar_endonly else "$")
            return
        if c == "{" and re.match(r"\{,\d*\}", p[i:]):
            end = p.index("}", i)
            self.emit(re.escape(p[i:end + 1]))
            self.i = end + 1
            return
        self.i += 1
        self.emit(c if c in ".^" else re.escape(c))
        self.quantifier()

    def quantifier(self) -> None:
        p = self.p
        m = _QUANT.match(p, self.i)
        if not m:
            return
        self.emit(m.group(0))
        self.i = m.end()
        suffix = p[self.i] if self.i < len(p) else ""
        if suffix == "+":                       # possessive: Python 3.11 has it
            self.emit("+")
            self.i += 1
        elif suffix == "?":
            self.i += 1
            if not self.ungreedy:
                self.emit("?")
        elif self.ungreedy:
            self.emit("?")

    def group(self) -> None:
        p, i = self.p, self.i
        frame = self.frames[-1]
        if p.startswith("(*", i):
            raise RegexSyntaxError(f"backtracking verb {p[i:p.find(')', i) + 1]!r} is not supported")
        if p.startswith("(?#", i):
            end = p.find(")", i)
            if end < 0:
                raise RegexSyntaxError("missing ) after (?# comment")
            self.i = end + 1
            return
        if re.match(r"\(\?(R|[+-]?\d|&|P>|\|)", p[i:]):
            raise RegexSyntaxError(f"unsupported group syntax {p[i:i + 4]!r}: recursion, subroutine calls"
                                   " and branch reset have no Python equivalent")
        new_frame = _Frame(frame.x)
        m = re.compile(r"\(\?(?:P?<(%s)>|'(%s)')" % (_NAME, _NAME)).match(p, i)
        if m:
            self.ngroups += 1
            self.emit(f"(?P<{m.group(1) or m.group(2)}>")
            self.i = m.end()
        elif p.startswith(("(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>"), i):
            n = 4 if p.startswith("(?<", i) else 3
            self.emit(p[i:i + n])
            self.i = i + n
        elif p.startswith("(?P=", i):
            end = p.find(")", i)
            self.emit(p[i:end + 1])
            self.i = end + 1
            self.quantifier()
            return
        elif p.startswith("(?(", i):
            m = re.compile(r"\(\?\((?:(\d+)|<(%s)>|'(%s)'|(%s))\)" % (_NAME, _NAME, _NAME)).match(p, i)
            if not m or (m.group(4) or "").startswith("R"):
                raise RegexSyntaxError("this kind of conditional group is not supported")
            self.emit(f"(?({m.group(1) or m.group(2) or m.group(3) or m.group(4)})")
            self.i = m.end()
        elif p.startswith("(?", i):
            m = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])").match(p, i)
            if not m:
                raise RegexSyntaxError(f"unsupported group syntax at {p[i:i + 6]!r}"
                                       " (recursion, subroutine calls, branch reset, callouts)")
            on, off, kind = m.group(1), m.group(2) or "", m.group(3)
            bad = set(on + off) - set("imsx")
            if bad:
                raise RegexSyntaxError(f"inline flag(s) {''.join(sorted(bad))!r} not supported")
            x_mode = frame.x if "x" not in on + off else ("x" in on)
            py_on = "".join(f for f in on if f != "x")
            py_off = "".join(f for f in off if f != "x")
            spec = py_on + (f"-{py_off}" if py_off else "")
            self.i = m.end()
            if kind == ":":
                new_frame.x = x_mode
                self.emit(f"(?{spec}:" if spec else "(?:")
            else:
                # (?i) reaches to the end of the enclosing group, across '|'.
                frame.x = x_mode
                if spec:
                    self.emit(f"(?{spec}:")
                    frame.scoped.append(spec)
                    frame.open += 1
                return
        else:
            self.ngroups += 1
            self.emit("(")
            self.i = i + 1
        self.frames.append(new_frame)

    def escape(self, in_class: bool) -> str:
        p = self.p
        if self.i + 1 >= len(p):
            raise RegexSyntaxError("\\ at end of pattern")
        c = p[self.i + 1]
        self.i += 2
        if c == "Q":
            end = p.find("\\E", self.i)
            text = p[self.i:] if end < 0 else p[self.i:end]
            self.i = len(p) if end < 0 else end + 2
            return "".join(class_char(ch) for ch in text) if in_class else re.escape(text)
        if c == "E":
            return ""
        if c in "xo" and p.startswith("{", self.i):
            end = p.find("}", self.i)
            if end < 0:
                raise RegexSyntaxError(f"missing }} after \\{c}{{")
            digits = p[self.i + 1:end]
            # PCRE2: only hex (octal) digits between the braces. int() alone would
            # take "", " 41", "4_1" or "0x41", and chr() refuses code points > 0x10FFFF.
            if not re.fullmatch(r"[0-9A-Fa-f]+" if c == "x" else r"[0-7]+", digits):
                raise RegexSyntaxError(f"bad \\{c}{{...}} escape: {digits!r}")
            code = int(digits, 16 if c == "x" else 8)
            if code > 0xFF:
                raise RegexSyntaxError("character code point value in \\x{} or \\o{} is too large")
            self.i = end + 1
            return self._char(chr(code), in_class)
        if c == "e":
            return self._char("\x1b", in_class)
        if c == "c":
            if self.i >= len(p):
                raise RegexSyntaxError("\\c at end of pattern")
            ch = p[self.i].upper()
            self.i += 1
            return self._char(chr(ord(ch) ^ 0x40), in_class)
        if c == "h":
            return _HSPACE if in_class else f"[{_HSPACE}]"
        if c == "v":
            return _VSPACE if in_class else f"[{_VSPACE}]"
        if c in "HV" and not in_class:
            return f"[^{_HSPACE if c == 'H' else _VSPACE}]"
        if in_class:
            if c in "dDwWsS":
                return "\\" + c
            if c in "ntrfa":
                return "\\" + c
            if c == "b":
                return r"\x08"
            if c.isalpha():
                raise RegexSyntaxError(f"escape \\{c} is not supported in a character class")
            return class_char(c) if not c.isdigit() else "\\" + c
        if c == "R":
            return r"(?:\r\n|[\n\x0b\f\r\x85])"
        if c == "N":
            return r"[^\n]"
        if c == "z":
            return r"\Z"
        if c == "Z":
            return r"(?=\n?\Z)"
        if c in "AG":
            return r"\A"
        if c in "gk":
            return self._backref(c)
        if c in "123456789":
            j = self.i
            while j < len(p) and p[j].isdigit():
                j += 1
            num = p[self.i - 1:j]
            self.i = j
            return f"(?:\\{num})"
        if c in "dDwWsSbBntrfa0":
            return "\\" + c
        if c == "x":
            m = re.compile(r"[0-9A-Fa-f]{0,2}").match(p, self.i)
            assert m is not None
            self.i = m.end()
            return self._char(chr(int(m.group(0) or "0", 16)), False)
        if c.isalnum():
            raise RegexSyntaxError(f"escape \\{c} is not supported")
        return re.escape(c)

    def _char(self, ch: str, in_class: bool) -> str:
        if ord(ch) > 0xFF:
            raise RegexSyntaxError("character code point value in \\x{} or \\o{} is too large")
        return class_char(ch) if in_class else re.escape(ch)

    def _backref(self, kind: str) -> str:
        p = self.p
        m = re.compile(r"\{(-?\d+|%s)\}|<(%s)>|'(%s)'|(-?\d+)" % (_NAME, _NAME, _NAME)).match(p, self.i)
        if not m:
            raise RegexSyntaxError(f"malformed \\{kind} reference")
        self.i = m.end()
        ref = next(g for g in m.groups() if g is not None)
        if kind == "k" and ref.lstrip("-").isdigit():
            raise RegexSyntaxError("\\k needs a group name")
        if ref.lstrip("-").isdigit():
            n = int(ref)
            if n < 0:
                n = self.ngroups + 1 + n
            if n <= 0:
                raise RegexSyntaxError("reference to non-existent subpattern")
            return f"(?:\\{n})"
        return f"(?P={ref})"

    def char_class(self) -> str:
        p = self.p
        negate = p.startswith("^", self.i)
        if negate:
            self.i += 1
        items: list[str] = []
        first = True
        while True:
            if self.i >= len(p):
                raise RegexSyntaxError("missing terminating ] for character class")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            m = re.compile(r"\[:(\^?)([a-z]+):\]").match(p, self.i)
            if m:
                if m.group(2) not in POSIX_CLASSES:
                    raise RegexSyntaxError(f"unknown POSIX class name {m.group(2)!r}")
                if m.group(1):
                    raise RegexSyntaxError("negated POSIX classes [:^name:] are not supported")
                items.append(POSIX_CLASSES[m.group(2)])
                self.i = m.end()
                continue
            if c == "\\":
                items.append(self.escape(in_class=True))
            elif c == "-" and items and self.i + 1 < len(p) and p[self.i + 1] != "]" and not _is_set(items[-1]):
                items.append("-")
                self.i += 1
            else:
                items.append(class_char(c))
                self.i += 1
        return ("[^" if negate else "[") + "".join(items) + "]"


class _Frame:
    """One open group: x mode, inline-flag scopes to reopen after '|', scopes open now."""

    __slots__ = ("x", "scoped", "open")

    def __init__(self, x: bool) -> None:
        self.x = x
        self.scoped: list[str] = []
        self.open = 0


def _is_set(item: str) -> bool:
    """A class item that stands for several characters cannot start a range."""
    return len(item) > 2 and not item.startswith("\\x") or item in ("\\d", "\\D", "\\w", "\\W", "\\s", "\\S")
