"""The Sendmail-compatible `sendmail` command, and `mailq` / `newaliases` (SPEC S2).

    sendmail [options] [recipient ...]      message on stdin -> maildrop/
    mailq    = sendmail -bp                 newaliases = sendmail -bi

Runs as whoever calls it (cron, mail(1), PHP's mail()): it is untrusted, and it
writes only into maildrop/ (queue/maildrop.py explains why that is safe without a
set-id program), then nudges pickup on public/pickup. With the daemons stopped the
message waits there. Other modes hand over to the queue tools (cli/queue_admin.py).

Flags follow Postfix's sendmail(1): -t -f/-r -F -i/-oi -N -R -V -v -C, modes -bm
-bp -bi -bd -bs -bv, queue runs -q, -q<interval>, -qI/-qR/-qS<substring>. Sendmail
flags that Postfix ignores (-Am -Ac -B -bh -bH -G -h -L -m -n -O -o<x> -U -X -e -p
-c -x) are accepted and ignored. Exit codes are sysexits.h's.
Submitting (-bm, -t, -bs) is for the users authorized_submit_users lists (Postfix's
match list, policy/submit.py: names, !name, /file/name, type:table; the real uid's
login name, or "unknown"; root is no exception); others get "User NAME(UID) is not
allowed to submit mail", EX_NOPERM.
The pure parts (parse_args, parse_interval, read_message, extract_recipients)
are unit-tested in tests/unit/cli/test_cli_sendmail.py.
-bs (an SMTP session on stdio, as Postfix's smtpd -S: its log lines, smtpd_timeout,
the discard maps) lives in cli/sendmail_bs.py.
"""
from __future__ import annotations

import email.utils
import os
import pwd
import re
import sys
import time
from dataclasses import dataclass, field

from . import queue_admin as qa
from .queue_admin import EX_CONFIG, EX_NOPERM, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE

# Options that take an argument (attached or as the next word), as Postfix's getopt string.
WITH_ARG = set("ABCFLNORVXbefhopr")
NO_ARG = set("GIcimntvxU")
MODES = {"m", "p", "i", "d", "l", "s", "v", "h", "H"}


class UsageError(Exception):
    pass


@dataclass
class Options:
    mode: str = "m"                       # b<mode>: m submit, p list, i aliases, d daemons, s SMTP, v verify, q queue run
    sender: str | None = None
    full_name: str | None = None
    ignore_dots: bool = False
    extract: bool = False
    recipients: list[str] = field(default_factory=list)
    notify: str | None = None
    ret: str | None = None
    envid: str | None = None
    verbose: int = 0
    config: str | None = None
    interval: float | None = None         # -q<interval>: seconds
    select: tuple[str, str] | None = None  # -qI/-qR/-qS
    ignored: list[str] = field(default_factory=list)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_interval(text: str) -> float:
    """Sendmail time: "2h30m", "15m", "90s", "1d"; a bare number is minutes."""
    if re.fullmatch(r"[0-9]+", text):
        return int(text) * 60.0
    parts = re.findall(r"([0-9]+)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"bad queue interval: {text!r}")
    total = float(sum(int(n) * _UNITS[u] for n, u in parts))
    if total <= 0:
        raise UsageError(f"bad queue interval: {text!r}")
    return total


def parse_args(argv: list[str], prog: str = "sendmail") -> Options:
    o = Options()
    if prog == "mailq":
        o.mode = "p"
    elif prog == "newaliases":
        o.mode = "i"
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        letter, rest = arg[1], arg[2:]
        i += 1
        if letter == "q":
            o.mode = "q"
            _queue_flag(o, rest)
            continue
        if letter in NO_ARG:
            for ch in arg[1:]:                # clustered flags: -ti, -oi handled below
                if ch not in NO_ARG:
                    raise UsageError(f"invalid option -- '{ch}'")
                if ch == "t":
                    o.extract = True
                elif ch == "i":
                    o.ignore_dots = True
                elif ch == "I":
                    o.mode = "i"
                elif ch == "v":
                    o.verbose += 1
                else:
                    o.ignored.append("-" + ch)
            continue
        if letter not in WITH_ARG:
            raise UsageError(f"invalid option -- '{letter}'")
        if not rest:
            if i >= len(argv):
                raise UsageError(f"option requires an argument -- '{letter}'")
            rest = argv[i]
            i += 1
        _option(o, letter, rest)
    for a in argv[i:]:
        o.recipients.extend(split_addresses(a))
    return o


def _queue_flag(o: Options, rest: str) -> None:
    if not rest:
        return
    if rest[0] in "IRS":
        if not rest[1:]:
            raise UsageError(f"-q{rest[0]} needs a substring")
        o.select = (rest[0], rest[1:])
    else:
        o.interval = parse_interval(rest)


def _option(o: Options, letter: str, value: str) -> None:
    if letter in "fr":
        if value.startswith("-"):
            # An address that looks like an option could smuggle flags into
            # programs that get it on their command line (Postfix refuses too).
            raise UsageError(f"bad sender address: {value!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError("bad sender address: control characters")
        o.sender = unbracket(value)
    elif letter == "F":
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError("bad full name: control characters")
        o.full_name = value
    elif letter == "b":
        if value not in MODES:
            raise UsageError(f"unsupported: -b{value}")
        o.mode = {"l": "d", "h": "ignored", "H": "ignored"}.get(value, value)
        if o.mode == "ignored":
            o.mode, o.ignored = "m", o.ignored + ["-b" + value]
    elif letter == "o":
        if value == "i":
            o.ignore_dots = True
        else:
            o.ignored.append("-o" + value)
    elif letter == "C":
        o.config = value
    elif letter == "N":
        o.notify = value
    elif letter == "R":
        o.ret = value
    elif letter == "V":
        o.envid = value
    else:
        o.ignored.append(f"-{letter}{value}")     # -A -B -L -O -X -e -h -p (Postfix ignores them)


def unbracket(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    return addr


def split_addresses(text: str) -> list[str]:
    """A command-line argument or header value: "a, Bob <b@x>" -> ["a", "b@x"]."""
    return [a for _, a in email.utils.getaddresses([text]) if a]


# -- the message (pure) -----------------------------------------------------------------

def read_message(data: bytes, ignore_dots: bool) -> bytes:
    """stdin -> message with LF line endings; without -i a line "." ends it."""
    data = data.replace(b"\r\n", b"\n")
    if not ignore_dots:
        if data.startswith(b".\n") or data == b".":
            return b""
        for end in (b"\n.\n",):
            k = data.find(end)
            if k >= 0:
                data = data[:k + 1]
                break
        else:
            if data.endswith(b"\n."):
                data = data[:-1]
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header block incl. its last newline, rest incl. the blank line)."""
    if message.startswith(b"\n"):
        return b"", message
    k = message.find(b"\n\n")
    if k < 0:
        return message, b""
    return message[:k + 1], message[k + 1:]


def header_fields(header: bytes) -> list[tuple[str, str]]:
    """Unfolded (name, value) pairs; bytes decoded as UTF-8 with escapes kept."""
    fields: list[list[str]] = []
    for line in header.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and fields:
            fields[-1][1] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append([name.strip(), value.strip()])
    return [(n, v) for n, v in fields]


def extract_recipients(header: bytes) -> list[str]:
    """-t: To, Cc and Bcc; if any Resent- recipient header exists, Resent-To/Cc/Bcc
    only (RFC 5322 3.6.6, as Sendmail and Postfix do)."""
    fields = header_fields(header)
    names = {n.lower() for n, _ in fields}
    wanted = ({"resent-to", "resent-cc", "resent-bcc"} if names & {"resent-to", "resent-cc", "resent-bcc"}
              else {"to", "cc", "bcc"})
    out: list[str] = []
    for n, v in fields:
        if n.lower() in wanted:
            out.extend(split_addresses(v))
    return out


def remove_bcc(header: bytes) -> bytes:
    out, skipping = [], False
    for line in header.split(b"\n"):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith((b"bcc:", b"resent-bcc:"))
        if not skipping:
            out.append(line)
    return b"\n".join(out)


def has_header(header: bytes, name: str) -> bool:
    return any(n.lower() == name for n, _ in header_fields(header))


def from_header(full_name: str, sender: str) -> bytes:
    name = full_name.replace("\\", "\\\\").replace('"', '\\"')
    return f'From: "{name}" <{sender}>\n'.encode("utf-8", "surrogateescape")


# -- modes ----------------------------------------------------------------------------------

def login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


def check_submit_user(cfg) -> None:
    """authorized_submit_users, as Postfix's sendmail (and postdrop) check it: for
    every user, root too (policy/submit.py); pickup asks the same for maildrop files."""
    from ..core.errors import ConfigError
    from ..policy.submit import SubmitListError, submit_allowed, submit_user_name
    from ..tables import TableTempError
    uid = os.getuid()
    name = submit_user_name(uid)
    try:
        allowed = submit_allowed(cfg.get("authorized_submit_users"), name)
    except SubmitListError as e:
        raise qa.CommandError(f"fatal: {e}", EX_CONFIG) from None
    except ConfigError as e:
        raise qa.CommandError(f"fatal: authorized_submit_users: {e}", EX_CONFIG) from None
    except TableTempError as e:
        raise qa.CommandError(f"fatal: authorized_submit_users: lookup error: {e.reason}", EX_TEMPFAIL) from None
    if not allowed:
        raise qa.CommandError(f"fatal: User {name}({uid}) is not allowed to submit mail", EX_NOPERM)


def submit(o: Options, store, stdin: bytes, out=sys.stderr) -> int:
    message = read_message(stdin, o.ignore_dots)
    header, rest = split_header(message)
    rcpts = list(o.recipients)
    if o.extract:
        rcpts += extract_recipients(header)
        header = remove_bcc(header)
    sender = login_name() if o.sender is None else o.sender
    if o.full_name and not has_header(header, "from"):
        header = from_header(o.full_name, sender or login_name()) + header
    if not rcpts:
        if o.extract:
            raise qa.CommandError("fatal: No recipient addresses found in message header", EX_USAGE)
        raise qa.CommandError("fatal: Recipient addresses must be specified on the command line "
                              "or via the -t option", EX_USAGE)
    for r in rcpts:
        if r.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in r):
            raise qa.CommandError(f"fatal: bad recipient address: {r!r}", EX_USAGE)
    attrs = {k: v for k, v in (("dsn_notify", o.notify), ("dsn_ret", o.ret), ("dsn_envid", o.envid),
                              ("full_name", o.full_name)) if v}
    from ..queue import maildrop
    try:
        name = maildrop.submit(store.path("maildrop"), sender, rcpts, attrs, header + rest)
    except PermissionError as e:
        raise qa.CommandError(f"fatal: cannot write to {store.path('maildrop')}: {e.strerror}", EX_NOPERM) from None
    except OSError as e:
        raise qa.CommandError(f"fatal: cannot write to {store.path('maildrop')}: {e.strerror}", EX_TEMPFAIL) from None
    except ValueError as e:
        raise qa.CommandError(f"fatal: {e}", EX_USAGE) from None
    qa.trigger(store, "pickup", "W")
    if o.verbose:
        print(f"sendmail: queued in maildrop as {name}", file=out)
    return 0


def verify(o: Options, cfg, stdin: bytes | None) -> int:
    """-bv: say where each recipient would go (no mail is sent)."""
    from ..core.resolve import Resolver
    rcpts = list(o.recipients)
    if o.extract and stdin is not None:
        rcpts += extract_recipients(split_header(read_message(stdin, o.ignore_dots))[0])
    if not rcpts:
        raise qa.CommandError("fatal: no recipients to verify", EX_USAGE)
    resolver = Resolver(cfg)
    origin = cfg.get("myorigin")
    for r in rcpts:
        addr = r if "@" in r else f"{r}@{origin}"
        route = resolver.resolve(addr)
        print(f"{addr}: deliverable via {route.transport}:{route.nexthop} (address class {route.address_class})")
    return 0


def smtp_on_stdio(o: Options, cfg, store, infile, outfile, log=None) -> int:
    """-bs: an SMTP session on stdin/stdout; each message goes to maildrop. Banner,
    EHLO, VRFY, SMTPUTF8, envelope syntax, limits, smtpd_discard_ehlo_keyword_address_maps,
    smtpd_timeout and the log lines are smtpd's, as Postfix's sendmail -bs runs its
    smtpd (cli/sendmail_bs.py); without DSN, which maildrop cannot carry."""
    from . import sendmail_bs
    return sendmail_bs.run(cfg, store, infile, outfile, log=log, administrator=qa.is_administrator(store))


def queue_run(o: Options, store) -> int:
    if o.select is not None:
        kind, substr = o.select
        qa.flush_select(store, kind, substr, prog="sendmail")
        return 0
    if o.interval is None:
        qa.flush_all(store, prog="sendmail")
        return 0
    # -q<interval>: stay and run the queue every interval (Sendmail's queue-runner daemon).
    while True:
        try:
            qa.flush_all(store, prog="sendmail")
        except qa.CommandError as e:
            print(f"sendmail: {e}", file=sys.stderr)
        time.sleep(o.interval)


def newaliases(cdir: str) -> int:
    try:
        from . import newaliases as na
    except ImportError:
        print("sendmail: fatal: newaliases is not available in this installation", file=sys.stderr)
        return EX_UNAVAILABLE
    return na.main(["-c", cdir]) or 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = prog or os.path.basename(sys.argv[0] if sys.argv else "sendmail")
    if prog not in ("mailq", "newaliases"):
        prog = "sendmail"
    try:
        o = parse_args(argv, prog)
    except UsageError as e:
        print(f"{prog}: fatal: {e}", file=sys.stderr)
        return EX_USAGE
    cdir = qa.config_dir(o.config)
    if o.verbose:
        for flag in o.ignored:
            print(f"{prog}: ignoring option {flag}", file=sys.stderr)

    def go() -> int:
        if o.mode == "i":
            return newaliases(cdir)
        if o.mode == "d":
            from .main import main as estafeta_main
            return estafeta_main(["-c", cdir, "start", "--foreground"])
        cfg = qa.load(cdir)
        store = qa.store_of(cfg)
        if o.mode == "p":
            sys.stdout.write(qa.list_queue(store, prog=prog))
            return 0
        if o.mode == "q":
            return queue_run(o, store)
        if o.mode == "v":
            return verify(o, cfg, sys.stdin.buffer.read() if o.extract else None)
        check_submit_user(cfg)
        if o.mode == "s":
            return smtp_on_stdio(o, cfg, store, sys.stdin.buffer, sys.stdout.buffer)
        return submit(o, store, sys.stdin.buffer.read())
    try:
        return qa._run(go, prog)
    except KeyboardInterrupt:
        return 0
    except Exception as e:       # never a traceback at cron's mail: say what failed
        print(f"{prog}: fatal: unexpected error: {e!r}", file=sys.stderr)
        return EX_SOFTWARE


def mailq_main() -> int:
    return main(sys.argv[1:], prog="mailq")


def newaliases_main() -> int:
    return main(sys.argv[1:], prog="newaliases")


def sendmail_main() -> int:
    return main(sys.argv[1:], prog="sendmail")


if __name__ == "__main__":
    sys.exit(main())
