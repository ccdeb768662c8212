"""pipe: delivery to an external command (Postfix pipe(8) behaviour, SPEC S5).

A master.cf service such as

    uucp unix - n n - - pipe flags=Fqhu. user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)

hands each delivery request to a command. The attributes after the command name
(`flags= user= size= eol= directory= null_sender= argv=...`, argv last) are parsed
once by `parse_attributes`; `expand_argv` fills in the macros ($sender, ${recipient},
$(nexthop) ...; $$ is a dollar) and `message_image` builds what the command reads
on stdin (From_ line, Return-Path:, X-Original-To:, Delivered-To:, quoting, dot
stuffing, end of line). Both are pure, for the unit tests.

Recipients per command. An argument holding a per-recipient macro (recipient,
original_recipient, user, extension, mailbox, domain) becomes one argument per
recipient of the request, as pipe(8) says; how many recipients share a request is
the transport's `NAME_destination_recipient_limit` (default
default_destination_recipient_limit). The agent applies that limit itself too, and
the D and O flags (one header per recipient) always mean one command per recipient.

Trust boundary. The command line is argv only: no shell ever sees it, so a local
part such as `"a;rm -rf x"` or `-oQ/tmp/x` is one literal argument and nothing
else. The command runs as user= (never root, never mail_owner), switched by
subprocess between fork and exec; the service keeps root for that (master.cf unpriv
n). Started as an ordinary user, the command runs as that user.

Outcomes are Postfix's pipe_command(3), shared with the local agent in
delivery/command.py: 0 sent; a time limit (NAME_time_limit, else command_time_limit)
bounces 5.3.0; death by a signal defers; then output that begins with an RFC 3463
code ("4.2.2 mailbox full") decides; then <sysexits.h>: EX_TEMPFAIL (75) and
EX_OSERR (71) defer, the other 64..78 bounce with their meaning; any other status
bounces 5.3.0 with the command's output. A command that cannot start defers.
Next: daemons/pipe.py (the service), delivery/local.py (Privs), docs/ADMIN.md.
"""
from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import time
from dataclasses import dataclass

from ..core import maillog
from ..core.errors import ConfigError
from ..proto.address import split_address
from ..queue import qfile
from . import base
from .command import ChdirError, clean_output, outcome, run_command
from .local import delivered_to_headers
from .privs import Privs
from .privs import privileged as _privileged
from .mailbox import from_line

FLAGS = frozenset("BDFORXhqu.>")
MACROS = frozenset({"client_address", "client_helo", "client_hostname", "client_port", "client_protocol",
                    "domain", "extension", "mailbox", "nexthop", "original_recipient", "queue_id",
                    "recipient", "sasl_method", "sasl_sender", "sasl_username", "sender", "size", "user"})
PER_RECIPIENT = frozenset({"recipient", "original_recipient", "user", "extension", "mailbox", "domain"})


# -- the master.cf attributes ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PipeSpec:
    argv: tuple[str, ...]
    user: str
    group: str = ""
    flags: frozenset[str] = frozenset()
    size_limit: int = 0
    eol: bytes = b"\n"
    directory: str = ""
    null_sender: str = "MAILER-DAEMON"
    per_recipient: bool = False          # some argument holds a per-recipient macro


def parse_attributes(args: list[str]) -> PipeSpec:
    """`flags=... user=... argv=cmd args...` (argv last) -> PipeSpec; ConfigError when wrong."""
    where = "master.cf pipe"
    opts: dict[str, str] = {}
    argv: list[str] = []
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if not eq:
            raise ConfigError(where, 0, f"bad attribute {a!r} (want name=value; argv= comes last)")
        if name == "argv":
            argv = [value, *args[i + 1:]]
            break
        if name not in ("flags", "user", "size", "eol", "directory", "null_sender", "chroot"):
            raise ConfigError(where, 0, f"unknown attribute {name!r}")
        opts[name] = value
    if not argv or not argv[0]:
        raise ConfigError(where, 0, "missing argv= attribute (it must come last)")
    if not opts.get("user"):
        raise ConfigError(where, 0, "missing user= attribute")
    if "chroot" in opts:
        raise ConfigError(where, 0, "chroot= is not supported")
    bad = set(opts.get("flags", "")) - FLAGS
    if bad:
        raise ConfigError(where, 0, f"unknown flag(s) {''.join(sorted(bad))!r} (known: {''.join(sorted(FLAGS))})")
    size = opts.get("size", "0")
    if not (size.isascii() and size.isdigit()):
        raise ConfigError(where, 0, f"bad size= value {size!r}")
    per_rcpt = False
    for arg in argv:
        for name in macro_names(arg):
            if name not in MACROS:
                raise ConfigError(where, 0, f"unknown macro ${{{name}}} in argv")
            per_rcpt = per_rcpt or name in PER_RECIPIENT
    user, _, group = opts["user"].partition(":")
    return PipeSpec(tuple(argv), user, group, frozenset(opts.get("flags", "")), int(size),
                    unescape_eol(opts.get("eol", "\\n")), opts.get("directory", ""),
                    opts.get("null_sender", "MAILER-DAEMON"), per_rcpt)


def unescape_eol(text: str) -> bytes:
    r"""C escapes of eol=: \a \b \f \n \r \t \v \ddd and \\."""
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
            m = re.match(r"[0-7]{1,3}", text[i + 1:])
            if m:
                out.append(int(m.group(), 8) & 0xFF)
                i += 1 + len(m.group())
                continue
        out += ch.encode()
        i += 1
    return bytes(out)


# -- macros ---------------------------------------------------------------------------------

_MACRO = re.compile(r"\$(?:\$|\{([^}]*)\}|\(([^)]*)\)|([A-Za-z0-9_]+))")


def macro_names(arg: str) -> list[str]:
    out = []
    for m in _MACRO.finditer(arg):
        body = m.group(1) or m.group(2) or m.group(3)
        if body:
            out.append(re.split(r"[?:]", body, maxsplit=1)[0])
    return out


def expand(arg: str, values: dict[str, str]) -> str:
    """$name ${name} $(name) and $$; ${name?text} / ${name:text} as Postfix's macro
    language (text when name is non-empty / empty). The result is one string: it is
    never split again, whatever it holds."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        body = m.group(1) or m.group(2) or m.group(3) or ""
        cut = re.search(r"[?:]", body)
        name, op, text = (body[:cut.start()], cut.group(), body[cut.end():]) if cut else (body, "", "")
        v = values.get(name, "")
        if op == "?":
            return expand(text, values) if v else ""
        if op == ":":
            return v if v else expand(text, values)
        return v
    return _MACRO.sub(sub, arg)


@dataclass(frozen=True, slots=True)
class Rcpt:
    address: str            # as queued (quoted local part kept)
    original: str = ""


def unquote_local(local: str) -> str:
    """`"a b"` -> `a b` (RFC 5321 quoted-string; backslash pairs undone)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


def quote_local(local: str) -> str:
    """RFC 822 quoting of a local part (8-bit transparent): the q flag."""
    if local and _DOT_ATOM.fullmatch(local):
        return local
    return '"' + re.sub(r'(["\\])', r"\\\1", local) + '"'


def address_macro(address: str, flags: frozenset[str]) -> str:
    """An address for the command line: internal (unquoted) form, then q/u/h."""
    local, domain = split_address(address)
    local = unquote_local(local)
    if "u" in flags:
        local = local.lower()
    if "q" in flags:
        local = quote_local(local)
    if "h" in flags:
        domain = domain.lower()
    return f"{local}@{domain}" if domain else local


def recipient_values(r: Rcpt, flags: frozenset[str], delimiter: str) -> dict[str, str]:
    local, domain = split_address(r.address)
    mailbox = unquote_local(local)
    if "u" in flags:
        mailbox = mailbox.lower()
    user, ext = mailbox, ""
    if delimiter:
        for i, ch in enumerate(mailbox):
            if ch in delimiter and i > 0:
                user, ext = mailbox[:i], mailbox[i + 1:]
                break
    return {"recipient": address_macro(r.address, flags),
            "original_recipient": address_macro(r.original or r.address, flags),
            "mailbox": mailbox, "user": user, "extension": ext,
            "domain": domain.lower() if "h" in flags else domain}


def expand_argv(spec: PipeSpec, common: dict[str, str], rcpts: list[Rcpt], delimiter: str = "") -> list[str]:
    """The command line for one invocation: an argument with a per-recipient macro
    becomes one argument per recipient, in order."""
    per = [recipient_values(r, spec.flags, delimiter) for r in rcpts]
    sender = common.get("sender", "")
    values = dict(common)
    values["sender"] = (address_macro(sender, spec.flags - {"u", "h"}) if sender else spec.null_sender)
    if "h" in spec.flags:
        values["nexthop"] = values.get("nexthop", "").lower()
    out: list[str] = []
    for arg in spec.argv:
        if any(n in PER_RECIPIENT for n in macro_names(arg)):
            out.extend(expand(arg, {**values, **p}) for p in per)
        else:
            out.append(expand(arg, values))
    return out


# -- what the command reads -------------------------------------------------------------------

def message_image(spec: PipeSpec, sender: str, rcpt: Rcpt | None, message: bytes,
                  when: float | None = None) -> bytes:
    """stdin of the command: optional From_ line and headers, then the message, with
    the '>' / '.' quoting, the B blank line and the eol= line ends."""
    f = spec.flags
    shown = sender or spec.null_sender
    head = b""
    if "R" in f:
        head += f"Return-Path: <{shown}>\n".encode("utf-8", "surrogateescape")
    if rcpt is not None and "O" in f:
        head += f"X-Original-To: {rcpt.original or rcpt.address}\n".encode("utf-8", "surrogateescape")
    if rcpt is not None and "D" in f:
        head += f"Delivered-To: {rcpt.address}\n".encode("utf-8", "surrogateescape")
    body = head + message
    if body and not body.endswith(b"\n"):
        body += b"\n"
    if ">" in f:
        body = re.sub(rb"(?m)^From ", b">From ", body)
    if "." in f:
        body = re.sub(rb"(?m)^\.", b"..", body)
    if "F" in f:
        body = from_line(shown, when) + body
    if "B" in f:
        body += b"\n"
    if spec.eol != b"\n":
        body = body.replace(b"\n", spec.eol)
    return body


# -- the agent ----------------------------------------------------------------------------------

class PipeAgent:
    def __init__(self, cfg, service: str, args: list[str], queue_directory: str = "") -> None:
        self.cfg = cfg
        self.service = service
        self.delimiter = cfg.get("recipient_delimiter")
        self.queue_directory = queue_directory or cfg.get("queue_directory")
        self.problem = ""
        self.spec: PipeSpec | None = None
        self.privs: Privs | None = None
        try:
            spec = parse_attributes(args)
            self.privs = self._privs(spec)
            self.spec = spec
        except ConfigError as e:
            self.problem = e.problem
            maillog.log.warning(f"{service}: pipe service misconfigured in master.cf: {e.problem}")
        self.timeout = self._param_duration(f"{service}_time_limit", "command_time_limit")
        self.limit = self._param_int(f"{service}_destination_recipient_limit", "default_destination_recipient_limit")
        self.env = {"PATH": "/usr/bin:/bin"}
        for item in cfg.get_list("export_environment"):
            if "=" in item:
                k, v = item.split("=", 1)
                self.env[k] = v
            elif item in os.environ:
                self.env[item] = os.environ[item]

    def _param_duration(self, name: str, fallback: str) -> float:
        try:
            return self.cfg.get_duration(name)
        except KeyError:
            return self.cfg.get_duration(fallback)

    def _param_int(self, name: str, fallback: str) -> int:
        try:
            return self.cfg.get_int(name)
        except KeyError:
            return self.cfg.get_int(fallback)

    def _privs(self, spec: PipeSpec) -> Privs | None:
        """Whom the command runs as: user=name[:group], never root nor the mail owner."""
        try:
            pw = pwd.getpwnam(spec.user)
        except KeyError:
            raise ConfigError("master.cf pipe", 0, f"user= {spec.user!r}: no such user") from None
        p = Privs.of(pw)
        if spec.group:
            try:
                p = Privs(p.name, p.uid, grp.getgrnam(spec.group).gr_gid, p.home, p.shell)
            except KeyError:
                raise ConfigError("master.cf pipe", 0, f"user= group {spec.group!r}: no such group") from None
        if p.uid == 0 or p.gid == 0:
            raise ConfigError("master.cf pipe", 0, "user= must not be root or group root")
        owner = self.cfg.get("mail_owner")
        if p.name == owner or _uid_of(owner) == p.uid:
            raise ConfigError("master.cf pipe", 0, f"user= must not be the mail owner {owner!r}")
        return p if _privileged() else None       # an ordinary user runs commands as itself

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        return await asyncio.to_thread(self.deliver_sync, req)

    def deliver_sync(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        done: dict[int, base.RecipientResult] = {}

        def record(i: int, status: str, dsn: str, reason: str) -> None:
            r = base.RecipientResult(req.recipients[i].address, status, dsn, reason, self.service)
            done[i] = r
            maillog.log.info(base.delivery_log_line(req, r, started, self.service))

        everyone = range(len(req.recipients))
        if self.spec is None:
            for i in everyone:
                record(i, base.DEFERRED, "4.3.5", f"mail system configuration error: {self.problem}")
            return [done[i] for i in everyone]
        spec = self.spec
        try:
            env = qfile.read_envelope(req.queue_file, req.queue_id)
            with open(req.queue_file, "rb") as f:
                f.seek(req.message_offset)
                message = f.read()
        except (OSError, qfile.CorruptQueueFile, ValueError) as e:
            for i in everyone:
                record(i, base.DEFERRED, "4.3.0", f"cannot read queue file: {getattr(e, 'strerror', None) or e}")
            return [done[i] for i in everyone]
        if spec.size_limit and len(message) > spec.size_limit:
            for i in everyone:
                record(i, base.BOUNCED, "5.2.3", "message file too big")
            return [done[i] for i in everyone]
        todo = list(everyone)
        if "D" in spec.flags:                   # pipe(8): D also means loop detection
            seen = delivered_to_headers(message[:1 << 20])
            for i in list(todo):
                if req.recipients[i].address.lower() in seen:
                    record(i, base.BOUNCED, "5.4.6", f"mail forwarding loop for {req.recipients[i].address}")
                    todo.remove(i)
        a = env.attrs
        common = {"sender": req.sender, "nexthop": req.nexthop, "queue_id": req.queue_id,
                  "size": str(env.message_size), "client_address": a.get("client_address", ""),
                  "client_hostname": a.get("client_name", ""), "client_helo": a.get("helo_name", ""),
                  "client_port": a.get("client_port", ""), "client_protocol": a.get("protocol", ""),
                  "sasl_method": a.get("sasl_method", ""), "sasl_username": a.get("sasl_username", ""),
                  "sasl_sender": a.get("sasl_sender", "")}
        per_command = 1 if spec.flags & {"D", "O"} else max(1, self.limit)
        for k in range(0, len(todo), per_command):
            batch = todo[k:k + per_command]
            rcpts = [Rcpt(req.recipients[i].address, req.recipients[i].original) for i in batch]
            argv = expand_argv(spec, common, rcpts, self.delimiter)
            data = message_image(spec, req.sender, rcpts[0] if len(rcpts) == 1 else None, message)
            status, dsn, reason = self.run(argv, data)
            for i in batch:
                record(i, status, dsn, reason)
        return [done[i] for i in everyone]

    def run(self, argv: list[str], data: bytes) -> tuple[str, str, str]:
        spec = self.spec
        assert spec is not None
        # pipe(8): the command starts in the queue directory, or in directory=, which is
        # entered with the rights of user= (after the switch), so it must be accessible
        # to that user; when it is not, nothing runs and the delivery is deferred.
        cwd = self.queue_directory if os.path.isdir(self.queue_directory) else "/"
        try:
            rc, out = run_command(argv, data, self.privs, cwd, self.env, self.timeout, chdir=spec.directory)
        except ChdirError as e:
            who = f" for uid={self.privs.uid} gid={self.privs.gid}" if self.privs is not None else ""
            maillog.log.warning(f"cannot change directory to \"{spec.directory}\"{who}: {e.strerror}")
            return base.DEFERRED, "4.3.0", "temporary failure"
        except OSError as e:            # no such program, exec refused
            what = e.filename or argv[0]
            return base.DEFERRED, "4.3.0", f"cannot run command {what}: {e.strerror or e}"
        status, dsn, reason = outcome(rc, out, argv[0])
        if status == base.SENT:
            text = clean_output(out)
            reason = f"delivered via {self.service} service" + (f" ({text})" if text else "")
        return status, dsn, reason


def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
