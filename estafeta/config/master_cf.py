"""master.cf: the table of services the master process starts (SPEC S10).

Owns the master(5) syntax: one service per logical line with the columns
``service type private unpriv chroot wakeup maxproc command [args...]``;
``-`` means the default; lines starting with whitespace continue the previous
line; ``#`` as the first non-blank character starts a comment. Leading
``-o name=value`` / ``-o { name = value }`` options become per-service
main.cf overrides (apply them with MainConfig.overrides).

Defaults follow Postfix except one: chroot defaults to n, because estafeta
services are Python programs that need the interpreter and its libraries,
which a chroot jail would have to replicate. Set y explicitly to get one.

Trust boundary: the file belongs to the administrator. The master process
(estafeta/daemons/) consumes the ServiceEntry list; nothing here starts
anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from estafeta.core.errors import ConfigError

from .main_cf import NAME_RE

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
_PORT_RE = re.compile(r"[0-9]+|[A-Za-z][A-Za-z0-9-]*")
_LOCAL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One master.cf service. maxproc 0 means no limit."""

    name: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    wakeup_conditional: bool
    maxproc: int
    command: str
    args: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def endpoint(self) -> tuple[str | None, str]:
        """(host or None for all interfaces, port) of an inet service."""
        host, sep, port = self.name.rpartition(":")
        if not sep:
            return None, self.name
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, port


def _tokens(text: str) -> list[str]:
    """Split on whitespace, keeping "{ ... }" groups (nested) as one token."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _unbrace(token: str) -> str:
    if token.startswith("{") and token.endswith("}"):
        return token[1:-1].strip()
    return token


def _logical_lines(text: str, path: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line[0].isspace():
            if not out:
                raise ConfigError(path, lineno, "continuation line before any service")
            start, prev = out[-1]
            out[-1] = (start, prev + " " + s)
        else:
            out.append((lineno, s))
    return out


def _flag(value: str, default: bool, column: str, path: str, line: int) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise ConfigError(path, line, f"bad {column} field: {value!r} (want y, n or -)")


def _check_name(name: str, type_: str, path: str, line: int) -> None:
    if type_ == "inet":
        host, sep, port = name.rpartition(":")
        ok = bool(_PORT_RE.fullmatch(port))
        if sep:
            if host.startswith("["):
                ok = ok and host.endswith("]") and len(host) > 2
            else:
                ok = ok and bool(host) and "[" not in host and "]" not in host
        if not ok:
            raise ConfigError(path, line, f"bad inet service name: {name!r} (want port, host:port or [addr]:port)")
    elif not _LOCAL_NAME_RE.fullmatch(name):
        raise ConfigError(path, line, f"bad service name: {name!r}")


def _options(args: list[str], path: str, line: int) -> tuple[list[str], dict[str, str]]:
    """Take -o overrides from the leading options, as the service's getopt would.

    Options end at the first argument not starting with "-" (so a pipe
    "argv=... -o x" keeps its -o); other options (-v, -D) stay in args.
    """
    rest: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        tok = args[i]
        if tok != "-o":
            rest.append(tok)
            i += 1
            continue
        if i + 1 >= len(args):
            raise ConfigError(path, line, "bad -o syntax: missing name=value")
        pair = _unbrace(args[i + 1])
        name, eq, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not NAME_RE.fullmatch(name):
            raise ConfigError(path, line, f"bad -o syntax: {args[i + 1]!r} (want name=value)")
        overrides[name] = value
        i += 2
    rest.extend(_unbrace(a) for a in args[i:])
    return rest, overrides


def parse_master_cf(text: str, path: str = "master.cf", *,
                    default_process_limit: int = 100) -> list[ServiceEntry]:
    """Parse master.cf text; every error names the file and line."""
    entries: list[ServiceEntry] = []
    seen: dict[tuple[str, str], int] = {}
    for line, logical in _logical_lines(text, path):
        fields = _tokens(logical)
        if len(fields) < 8:
            raise ConfigError(path, line, f"wrong number of fields: got {len(fields)}, want at least 8")
        name, type_, private, unpriv, chroot, wakeup, maxproc, command = fields[:8]
        if type_ not in SERVICE_TYPES:
            raise ConfigError(path, line, f"bad service type: {type_!r} (want {', '.join(SERVICE_TYPES)})")
        _check_name(name, type_, path, line)
        key = (name, type_)
        if key in seen:
            raise ConfigError(path, line, f"duplicate service: {name}/{type_} (first at line {seen[key]})")
        seen[key] = line

        conditional = wakeup.endswith("?")
        w = wakeup[:-1] if conditional else wakeup
        if w == "-" and not conditional:
            wake = 0
        elif w.isascii() and w.isdigit():      # not "²": int() refuses it
            wake = int(w)
        else:
            raise ConfigError(path, line, f"bad wakeup time: {wakeup!r}")
        if maxproc == "-":
            procs = default_process_limit
        elif maxproc.isascii() and maxproc.isdigit():
            procs = int(maxproc)
        else:
            raise ConfigError(path, line, f"bad process limit: {maxproc!r}")

        args, overrides = _options(fields[8:], path, line)
        entries.append(ServiceEntry(
            name=name,
            type=type_,
            private=_flag(private, True, "private", path, line),
            unpriv=_flag(unpriv, True, "unpriv", path, line),
            chroot=_flag(chroot, False, "chroot", path, line),  # ours: n, see module doc
            wakeup=wake,
            wakeup_conditional=conditional,
            maxproc=procs,
            command=command,
            args=args,
            overrides=overrides,
            line=line,
        ))
    return entries


def load_master_cf(path: str, *, default_process_limit: int = 100) -> list[ServiceEntry]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, 0, f"cannot read: {e.strerror}") from e
    return parse_master_cf(text, path, default_process_limit=default_process_limit)
