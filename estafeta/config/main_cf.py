"""main.cf: parsing, $name expansion, typed access, checking and editing.

Owns the main.cf syntax of postconf(5): ``name = value`` logical lines, lines
starting with whitespace continue the previous one, ``#`` starts a comment
only as the first non-blank character. Values are kept as written (``raw``)
with the line that set them, so a value that later fails its type is reported
as "FILE, line N: ...". Expansion ($name, ${name}, $(name), ${name?value},
${name:value}, ${name?{a}:{b}}) happens on read, with loop detection.

Trust boundary: main.cf belongs to the administrator; it is parsed fully but
never executed. Declarations (types, defaults, docs) live in config/params.py;
the postconf look-alike is config/postconf.py; master.cf is config/master_cf.py.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from estafeta.core.errors import ConfigError

from .params import MYNETWORKS_STYLES, PARAMS, Bool, Duration, Int, List, Param, ParamType, Size

NAME_RE = re.compile(r"[A-Za-z0-9_]+")
# Postfix's per-transport limits, for any master.cf service name (relay, smtp, a
# pipe transport...): qmgr reads them, so they are not "unused".
TRANSPORT_LIMIT_RE = re.compile(r"[A-Za-z0-9_-]+_destination_(concurrency|recipient)_limit")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Parameters whose own value Postfix does not expand when read: the daemon
# using it expands it later with its own macros ($user, $extension, $rbl_code,
# ...), and postconf -x prints it as written. Referenced from another value,
# it is expanded like any other ("foo = $forward_path" expands $home to "").
# The list is what Postfix 3.7's postconf -x leaves unexpanded.
RAW_PARAMS = frozenset({
    "command_execution_directory", "default_rbl_reply", "forward_path", "luser_relay",
    "mailbox_command", "postscreen_expansion_filter", "postscreen_reject_footer",
    "smtpd_expansion_filter", "smtpd_reject_footer",
})
# Expansion deeper than this is a loop in all but name (Postfix stops at 100 too).
_MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class Setting:
    """One explicit setting: its raw value and where it was made."""

    name: str
    value: str
    path: str
    line: int


def _is_comment_or_blank(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def _logical_lines(text: str, path: str) -> Iterable[tuple[int, int, str]]:
    """Yield (first line, last line, joined text) per logical line.

    Comment and blank lines are skipped even between continuation lines, as
    Postfix does; continuation pieces are joined with one space.
    """
    start = end = 0
    parts: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if _is_comment_or_blank(line):
            continue
        if line[0].isspace():
            if not parts:
                raise ConfigError(path, lineno, "continuation line before any parameter")
            parts.append(line.strip())
            end = lineno
            continue
        if parts:
            yield start, end, " ".join(p for p in parts if p)
        start = end = lineno
        parts = [line.rstrip()]
    if parts:
        yield start, end, " ".join(p for p in parts if p)


def parse_setting(text: str, path: str, line: int) -> tuple[str, str]:
    """Split "name = value" (spaces optional); errors name the file and line."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq:
        raise ConfigError(path, line, f"missing '=' after parameter name: {name!r}")
    if not name:
        raise ConfigError(path, line, "empty parameter name")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(path, line, f"bad parameter name: {name!r}")
    return name, value.strip()


class MainConfig:
    """An immutable view of main.cf plus the declared defaults."""

    def __init__(self, settings: Mapping[str, Setting] | None = None, path: str = "main.cf") -> None:
        self.path = path
        self._settings: dict[str, Setting] = dict(settings or {})
        self._cache: dict[str, str] = {}
        self._computing: set[str] = set()
        self.duplicates: list[tuple[Setting, Setting]] = []  # (overridden, winner)
        # Where main.cf was read from: config_directory when main.cf does not set it.
        self.config_dir: str | None = None

    # --- construction -----------------------------------------------------
    @classmethod
    def parse(cls, text: str, path: str = "main.cf") -> MainConfig:
        cfg = cls(path=path)
        for start, _end, logical in _logical_lines(text, path):
            name, value = parse_setting(logical, path, start)
            new = Setting(name, value, path, start)
            old = cfg._settings.get(name)
            if old is not None:
                # Postfix: the last one wins; check() warns.
                cfg.duplicates.append((old, new))
                del cfg._settings[name]
            cfg._settings[name] = new
        return cfg

    @classmethod
    def load(cls, path: str) -> MainConfig:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(path, 0, f"cannot read: {e.strerror}") from e
        cfg = cls.parse(text, path)
        cfg.config_dir = os.path.dirname(os.path.abspath(path))
        return cfg

    def overrides(self, values: Mapping[str, str], *, path: str | None = None,
                  line: int = 0) -> MainConfig:
        """A new config with master.cf ``-o name=value`` overrides applied.

        ``path``/``line`` say where the overrides were written (master.cf), so
        that a bad override is reported there.
        """
        new = MainConfig(self._settings, self.path)
        new.duplicates = list(self.duplicates)
        new.config_dir = self.config_dir
        for name, value in values.items():
            if not NAME_RE.fullmatch(name):
                raise ConfigError(path or self.path, line, f"bad parameter name: {name!r}")
            new._settings[name] = Setting(name, value, path or self.path, line)
        return new

    # --- lookups ------------------------------------------------------------
    def raw(self, name: str) -> str | None:
        """The value as written in main.cf (or -o), None when not set."""
        s = self._settings.get(name)
        return s.value if s else None

    def setting(self, name: str) -> Setting | None:
        return self._settings.get(name)

    def changed(self) -> dict[str, str]:
        """Explicitly set parameters, raw values, in file order."""
        return {n: s.value for n, s in self._settings.items()}

    def names(self) -> set[str]:
        """Declared parameters plus every parameter set explicitly."""
        return set(PARAMS) | set(self._settings)

    def default(self, name: str) -> str | None:
        """The unexpanded declared default (computed ones computed), or None."""
        p = PARAMS.get(name)
        if p is None:
            return None
        if p.compute is None:
            return p.default
        # A computed default reads other parameters (mydomain reads
        # myhostname); "myhostname = $mydomain" must not loop forever.
        if name in self._computing:
            raise ConfigError(self.path, 0, f"parameter {name}: recursive expansion")
        self._computing.add(name)
        try:
            return p.default_value(self.get)
        finally:
            self._computing.discard(name)

    def implicit(self, name: str) -> str | None:
        """The unexpanded value when main.cf does not set name: its default, except
        config_directory, which is the directory main.cf was read from (as Postfix's
        -c DIR and MAIL_CONFIG), so that "$config_directory/aliases" follows the
        instance."""
        if name == "config_directory" and self.config_dir:
            return self.config_dir.replace("$", "$$")
        return self.default(name)

    def _lookup_raw(self, name: str) -> str | None:
        s = self._settings.get(name)
        if s is not None:
            return s.value
        return self.implicit(name)

    def get(self, name: str) -> str:
        """The expanded value: explicit setting, else the declared default.

        Raises KeyError for a name neither declared nor set: code asking for
        it has a typo. Inside values, an unknown $name expands to "". A name
        in RAW_PARAMS is returned as written: its user expands it.
        """
        if name in self._cache:
            return self._cache[name]
        if name not in self._settings and name not in PARAMS:
            raise KeyError(name)
        if name in RAW_PARAMS:
            return self._lookup_raw(name) or ""
        value = self._expand_param(name, [])
        self._cache[name] = value
        return value

    def expand(self, text: str) -> str:
        """Expand $name references in arbitrary text against this config."""
        return self._expand(text, [])

    def _where(self, name: str) -> tuple[str, int]:
        s = self._settings.get(name)
        return (s.path, s.line) if s else (self.path, 0)

    def _expand_param(self, name: str, stack: list[str]) -> str:
        if name in self._cache:
            return self._cache[name]
        if name in stack or len(stack) > _MAX_DEPTH:
            path, line = self._where(name)
            raise ConfigError(path, line, f"parameter {name}: recursive expansion")
        raw = self._lookup_raw(name)
        if raw is None:
            return ""
        return self._expand(raw, stack + [name])

    def _expand(self, text: str, stack: list[str]) -> str:
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            i = j + 1
            if i < n and text[i] == "$":  # "$$" is a literal dollar
                out.append("$")
                i += 1
            elif i < n and text[i] in "{(":
                close = "}" if text[i] == "{" else ")"
                end = _matching(text, i, text[i], close)
                if end < 0:
                    self._bad(stack, f"missing '{close}' in {text!r}")
                out.append(self._expand_group(text[i + 1:end], stack))
                i = end + 1
            else:
                k = i
                while k < n and text[k] in _NAME_CHARS:
                    k += 1
                if k == i:
                    self._bad(stack, f"empty macro name in {text!r}")
                out.append(self._expand_param(text[i:k], stack))
                i = k
        return "".join(out)

    def _expand_group(self, inner: str, stack: list[str]) -> str:
        m = NAME_RE.match(inner)
        if not m:
            self._bad(stack, f"bad macro name in ${{{inner}}}")
        name, rest = m.group(0), inner[m.end():]
        if not rest:
            return self._expand_param(name, stack)
        op, rest = rest[0], rest[1:].lstrip()
        if op not in "?:":
            self._bad(stack, f"bad macro operator in ${{{inner}}}")
        # The test is on the value as written (postconf -x behaves so).
        raw = self._lookup_raw(name)
        is_set = bool(raw)
        if rest.startswith("{"):
            then, otherwise = self._braced_alternatives(rest, stack, inner)
        else:
            then, otherwise = rest, None
        if op == "?":
            chosen = then if is_set else otherwise
        else:
            chosen = None if is_set else then
        if not chosen:
            return ""
        # A nested conditional counts as one more level, like a $name: the
        # limit bounds ${a?${a?...}} too (Postfix: "unreasonable macro call nesting").
        if len(stack) > _MAX_DEPTH:
            self._bad(stack, "macro nesting too deep")
        return self._expand(chosen, [*stack, ""])

    def _braced_alternatives(self, rest: str, stack: list[str], inner: str) -> tuple[str, str | None]:
        """Parse "{a}" or "{a}:{b}" from a conditional.

        Leading whitespace inside the braces is dropped and trailing kept:
        that is what postconf -x does, odd as it looks.
        """
        end = _matching(rest, 0, "{", "}")
        if end < 0:
            self._bad(stack, f"missing '}}' in ${{{inner}}}")
        first, tail = rest[1:end].lstrip(), rest[end + 1:].strip()
        if not tail:
            return first, None
        if tail.startswith(":"):
            tail = tail[1:].strip()
            end2 = _matching(tail, 0, "{", "}") if tail.startswith("{") else -1
            if end2 == len(tail) - 1:
                return first, tail[1:end2].lstrip()
        self._bad(stack, f"bad conditional ${{{inner}}}")

    def _bad(self, stack: list[str], problem: str) -> NoReturn:
        name = stack[0] if stack else ""
        path, line = self._where(name) if name else (self.path, 0)
        raise ConfigError(path, line, f"parameter {name}: {problem}" if name else problem)

    # --- typed accessors ------------------------------------------------------
    def _typed(self, name: str, type_: ParamType) -> object:
        value = self.get(name)
        p = PARAMS.get(name)
        unit = p.unit if p else "s"
        try:
            return type_.parse(value, unit)
        except ValueError as e:
            path, line = self._where(name)
            raise ConfigError(path, line, f"parameter {name}: {e}") from None

    def get_int(self, name: str) -> int:
        v = self._typed(name, Int)
        assert isinstance(v, int)
        return v

    def get_size(self, name: str) -> int:
        v = self._typed(name, Size)
        assert isinstance(v, int)
        return v

    def get_bool(self, name: str) -> bool:
        return bool(self._typed(name, Bool))

    def get_duration(self, name: str) -> float:
        """Seconds; a bare number is in the parameter's default unit."""
        v = self._typed(name, Duration)
        assert isinstance(v, float)
        return v

    def get_list(self, name: str) -> list[str]:
        v = self._typed(name, List)
        assert isinstance(v, list)
        return v

    def value(self, name: str) -> object:
        """The value converted by the parameter's declared type."""
        return self._typed(name, PARAMS[name].type)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing text[start], or -1."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == open_:
            depth += 1
        elif text[k] == close:
            depth -= 1
            if depth == 0:
                return k
    return -1


def _referenced_names(text: str) -> set[str]:
    return set(re.findall(r"\$[{(]?([A-Za-z0-9_]+)", text.replace("$$", "")))


def check(cfg: MainConfig) -> list[str]:
    """Validate every parameter; return warnings, raise ConfigError on errors.

    Errors: a value that fails its declared type or cannot be expanded
    (reported at the line that set it), an unknown mynetworks_style, a
    mailbox_size_limit or virtual_mailbox_limit below message_size_limit, an
    smtpd_recipient_limit below 1 (Postfix's minimum). Warnings:
    duplicate settings, unknown parameters that no other value references
    (Postfix's "unused parameter"; referenced ones are user-defined macros and
    fine), and declared parameters that estafeta does not act on (Param.ignored)
    set to a value that asks for something: "FILE, line N: NAME is REASON: ignored".
    """
    warnings: list[str] = []
    for old, new in cfg.duplicates:
        warnings.append(f"{new.path}, line {new.line}: {new.name} overrides the setting at line {old.line}")
    referenced: set[str] = set()
    for name in cfg.names():
        raw = cfg._lookup_raw(name)
        if raw:
            referenced |= _referenced_names(raw)
    for name, s in cfg._settings.items():
        if name not in PARAMS and name not in referenced and not TRANSPORT_LIMIT_RE.fullmatch(name):
            warnings.append(f"{s.path}, line {s.line}: unused parameter: {name}={s.value}")
    for name in sorted(cfg.names()):
        if name in PARAMS:
            cfg.value(name)
        elif TRANSPORT_LIMIT_RE.fullmatch(name):
            cfg.get_int(name)          # qmgr reads it: a bad number is an error here
        else:
            cfg.get(name)
    style = cfg.get("mynetworks_style").strip().lower()
    if style not in MYNETWORKS_STYLES:
        path, line = cfg._where("mynetworks_style")
        raise ConfigError(path, line, f"parameter mynetworks_style: unknown value {style!r} "
                                      f"(want {', '.join(MYNETWORKS_STYLES)})")
    _check_mailbox_limits(cfg)
    if cfg.get_int("smtpd_recipient_limit") < 1:
        # Postfix's smtpd and sendmail -bs stop: "invalid smtpd_recipient_limit parameter value 0 < 1".
        path, line = cfg._where("smtpd_recipient_limit")
        raise ConfigError(path, line, f"invalid smtpd_recipient_limit parameter value "
                                      f"{cfg.get_int('smtpd_recipient_limit')} < 1")
    for name, s in cfg._settings.items():
        p = PARAMS.get(name)
        if p is not None and p.ignored and not _asks_nothing(cfg, p):
            warnings.append(f"{s.path}, line {s.line}: {name} is {p.ignored}: ignored")
    return warnings


def _check_mailbox_limits(cfg: MainConfig) -> None:
    """Postfix's local(8) and virtual(8) refuse to run ("fatal: main.cf configuration
    error: mailbox_size_limit is smaller than message_size_limit") when their file
    limit is set (non-zero) and below message_size_limit, or message_size_limit is 0
    (no limit): a message they accepted for delivery could not be written. Reported
    at the line that set the mailbox limit, else at message_size_limit's."""
    message = cfg.get_size("message_size_limit")
    for name in ("mailbox_size_limit", "virtual_mailbox_limit"):
        limit = cfg.get_size(name)
        if not limit or (message and limit >= message):
            continue
        s = cfg.setting(name) or cfg.setting("message_size_limit")
        path, line = (s.path, s.line) if s else (cfg.path, 0)
        sizes = f"{limit} < {message}" if message else f"{limit}, message_size_limit 0 means no limit"
        raise ConfigError(path, line, f"{name} is smaller than message_size_limit ({sizes})")


def _asks_nothing(cfg: MainConfig, p: Param) -> bool:
    """Is the setting of an ignored parameter its default, or one of its inert values
    (what estafeta does anyway)? Compared as typed values: "biff = NO" is "no"."""
    def typed(raw: str) -> object:
        v = p.type.parse(cfg.expand(raw), p.unit)
        return v.strip() if isinstance(v, str) else v
    got = typed(cfg.raw(p.name) or "")
    return any(got == typed(v) for v in (cfg.implicit(p.name) or "", *p.inert))


# --- postconf -e --------------------------------------------------------------
def _validate_edit(path: str, settings: Mapping[str, str]) -> None:
    for name, value in settings.items():
        if not NAME_RE.fullmatch(name):
            raise ConfigError(path, 0, f"bad parameter name: {name!r}")
        if "\n" in value or "\r" in value:
            raise ConfigError(path, 0, f"parameter {name}: value contains a line break")


def edit_main_cf(path: str, settings: Mapping[str, str]) -> None:
    """Set parameters like ``postconf -e``, keeping everything else.

    An existing setting's logical line (with its continuation lines) is
    replaced where it stands; later duplicates are removed so the new value
    wins; new parameters are appended. Comments and blank lines stay, even
    those between continuation lines. The file is replaced atomically.
    """
    _validate_edit(path, settings)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines(keepends=True)
        mode: int | None = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        lines, mode = [], None
    except OSError as e:
        raise ConfigError(path, 0, f"cannot read: {e.strerror}") from e
    # Check the file is sane before rewriting it.
    MainConfig.parse("".join(lines), path)

    # Which parameter does each line belong to (start line or continuation)? Named
    # from the whole logical line: "name" alone may be followed by " = value".
    owner: list[tuple[str, bool] | None] = [None] * len(lines)
    for start, end, logical in _logical_lines("".join(lines), path):
        current, _ = parse_setting(logical, path, start)
        owner[start - 1] = (current, True)
        for idx in range(start, end):
            if not _is_comment_or_blank(lines[idx]):
                owner[idx] = (current, False)

    done: set[str] = set()
    out: list[str] = []
    for idx, line in enumerate(lines):
        o = owner[idx]
        if o is None or o[0] not in settings:
            out.append(line)
            continue
        name, is_start = o
        if is_start and name not in done:
            out.append(_format_setting(name, settings[name]))
            done.add(name)
        # continuation lines and later duplicates of an edited name go away
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    for name, value in settings.items():
        if name not in done:
            out.append(_format_setting(name, value))
    atomic_write(path, "".join(out), mode)


def _format_setting(name: str, value: str) -> str:
    return f"{name} = {value}\n" if value else f"{name} =\n"


def atomic_write(path: str, text: str, mode: int | None = None) -> None:
    """Write text to path through the one atomic-write helper (core/atomic.py)."""
    from ..core.atomic import atomic_write as _atomic_write
    _atomic_write(path, text.encode("utf-8", "surrogateescape"), mode=mode if mode is not None else 0o644)
