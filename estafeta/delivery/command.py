"""command: running a delivery command, and what its end means (Postfix's
pipe_command(3) and sys_exits(3)). Shared by the local agent (|command in aliases,
:include: and .forward, mailbox_command) and the pipe agent, so that both read a
command's exit the same way, as Postfix's local(8) and pipe(8) do.

`outcome` turns (exit status, output) into (status, dsn, reason), in Postfix's order:
  1. the time limit: bounced 5.3.0 `Command time limit exceeded: "CMD"`;
  2. exit 0: sent;
  3. killed by a signal: deferred 4.3.0 `Command died with signal N: "CMD"`;
  4. output that begins with an RFC 3463 code and a space ("4.2.2 mailbox full"): that
     code and the rest of the output; class 4 defers, anything else bounces (a class
     2 code bounces as 5.0.0, Postfix's bounce sanity rule);
  5. a <sysexits.h> status (64..78): its code and text, e.g. 67 bounces 5.1.1 `user
     unknown`; only EX_OSERR (71) and EX_TEMPFAIL (75) have class 4 and defer;
  6. any other status: bounced 5.3.0 `Command died with status N: "CMD"`.
Cases 1, 3, 5 and 6 append `. Command output: OUTPUT` when the command wrote
anything. OUTPUT is the first OUTPUT_LIMIT bytes of stdout and stderr together,
with tabs and newlines turned into spaces and other unprintable characters into
"_", nothing trimmed: "no such user\n" reads "no such user " as in Postfix's logs.

Trust boundary: the output is the command's, so possibly hostile; it only ever
becomes one printable line of text. `run_command` runs an argv without a shell
(callers that want one put it in argv), as `privs` when given (switched by
subprocess between fork and exec), in its own process group, killed as a group
at the time limit. A working directory given as `chdir` (the local agent's
command_execution_directory) is entered after the switch, with privs' rights.
Next: delivery/local.py (deliver_command), delivery/pipe.py (PipeAgent.run).
"""
from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import base

if TYPE_CHECKING:
    from .privs import Privs

# <sysexits.h> (Postfix global/sys_exits.c): status -> (dsn, text). The class of the
# code says whether it is temporary.
SYSEXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),          # EX_USAGE
    65: ("5.6.0", "data format error"),                 # EX_DATAERR
    66: ("5.3.0", "cannot open input"),                 # EX_NOINPUT
    67: ("5.1.1", "user unknown"),                      # EX_NOUSER
    68: ("5.1.2", "host name unknown"),                 # EX_NOHOST
    69: ("5.3.0", "service unavailable"),               # EX_UNAVAILABLE
    70: ("5.3.0", "internal software error"),           # EX_SOFTWARE
    71: ("4.3.0", "system resource problem"),           # EX_OSERR
    72: ("5.3.0", "critical OS file missing"),          # EX_OSFILE
    73: ("5.2.0", "can't create user output file"),     # EX_CANTCREAT
    74: ("5.3.0", "input/output error"),                # EX_IOERR
    75: ("4.3.0", "temporary failure"),                 # EX_TEMPFAIL
    76: ("5.5.0", "remote error in protocol"),          # EX_PROTOCOL
    77: ("5.7.0", "permission denied"),                 # EX_NOPERM
    78: ("5.3.5", "local configuration error"),         # EX_CONFIG
}

OUTPUT_LIMIT = 4096        # bytes of command output kept (Postfix: one VSTREAM buffer)
# RFC 3463 code at the very start of the output, then a space or the end.
_DSN_PREFIX = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?= |$)")


def clean_output(out: bytes) -> str:
    """Command output for a log line or a bounce: tab and newline become a space,
    other unprintable characters "_", bytes past OUTPUT_LIMIT are dropped.

    Postfix keeps valid UTF-8 as it is; so do we, except characters that Python
    does not call printable (U+2028 and the like), which become "_" as well, so
    that the text stays on one log line."""
    text = out[:OUTPUT_LIMIT].decode("utf-8", "surrogateescape")
    return "".join(" " if ch in "\t\n" else ch if _printable(ch) else "_" for ch in text)


def _printable(ch: str) -> bool:
    n = ord(ch)
    if n < 0x80:
        return 0x20 <= n < 0x7F
    return not 0xD800 <= n < 0xE000 and ch.isprintable()   # surrogates: bytes that were not UTF-8


def outcome(returncode: int | None, output: bytes, command: str) -> tuple[str, str, str]:
    """(status, dsn, reason) for a command that ended (returncode None: killed at
    its time limit; negative: killed by that signal). A sent outcome has reason ""."""
    text = clean_output(output)
    with_out = f". Command output: {text}" if text else ""
    if returncode is None:
        return base.BOUNCED, "5.3.0", f'Command time limit exceeded: "{command}"{with_out}'
    if returncode == 0:
        return base.SENT, "2.0.0", ""
    if returncode < 0:
        return base.DEFERRED, "4.3.0", f'Command died with signal {-returncode}: "{command}"{with_out}'
    m = _DSN_PREFIX.match(text)
    if m:
        code = m.group()
        if code[0] == "4":
            return base.DEFERRED, code, text[m.end():].lstrip(" ")
        return base.BOUNCED, code if code[0] == "5" else "5.0.0", text[m.end():].lstrip(" ")
    if returncode in SYSEXITS:
        dsn, meaning = SYSEXITS[returncode]
        return (base.DEFERRED if dsn[0] == "4" else base.BOUNCED), dsn, meaning + with_out
    return base.BOUNCED, "5.3.0", f'Command died with status {returncode}: "{command}"{with_out}'


class ChdirError(OSError):
    """The command's working directory could not be entered with the command's rights:
    nothing ran. OSError(errno, strerror, directory)."""


EX_TEMPFAIL = 75


def run_command(argv: list[str], data: bytes, privs: Privs | None, cwd: str, env: dict[str, str],
                timeout: float, preexec: Callable[[], None] | None = None,
                chdir: str = "") -> tuple[int | None, bytes]:
    """Run argv with data on stdin; (exit status or None on timeout, output).

    stdout and stderr are one stream; only the first OUTPUT_LIMIT bytes are kept and
    the rest is read and dropped, so a chatty command neither blocks nor fills memory.
    The child starts in `cwd`, entered with our own rights (the agent's working
    directory: Postfix's daemons run in the queue directory). `chdir`, when set, is
    entered next, after the switch to privs, so with the command's rights (as Postfix's
    pipe_command does with command_execution_directory); when that fails the child
    exits before exec and ChdirError is raised. `preexec` runs in the child after
    the switch to privs and the chdir, before exec. Raises OSError when the command
    cannot start, subprocess.SubprocessError when preexec failed.
    """
    kw: dict = {}
    if privs is not None:
        kw = {"user": privs.uid, "group": privs.gid, "extra_groups": privs.groups()}
    child = preexec
    report_r = report_w = -1
    if chdir:
        # The child tells why over a close-on-exec pipe: its stdout is the command's
        # output, which must not be mistaken for ours. Only os calls between fork and
        # exec: nothing is imported there (the interpreter may be unreadable by privs).
        report_r, report_w = os.pipe()

        def enter() -> None:
            try:
                os.chdir(chdir)
            except OSError as e:
                os.write(report_w, str(e.errno).encode())
                os._exit(EX_TEMPFAIL)
            if preexec is not None:
                preexec()
        child = enter
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, close_fds=True, start_new_session=True, preexec_fn=child, **kw)
    except BaseException:
        if report_r >= 0:
            os.close(report_r)
            os.close(report_w)
        raise
    if report_r >= 0:
        os.close(report_w)
        try:
            failed = _child_report(report_r, proc)
        finally:
            os.close(report_r)
        if failed is not None:
            raise ChdirError(failed, os.strerror(failed), chdir)

    def feed() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(proc.stdin.fileno(), view[:65536]):]
        except OSError:              # EPIPE: the command does not read it all; its choice
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    kept = bytearray()
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            if len(kept) < OUTPUT_LIMIT:
                kept += chunk[:OUTPUT_LIMIT - len(kept)]
    if not timed_out:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    writer.join()
    proc.stdout.close()
    return (None if timed_out else proc.returncode), bytes(kept)


def _child_report(fd: int, proc: subprocess.Popen) -> int | None:
    """The errno a child sent on fd before exec, else None. Popen has returned, so the
    child has exec'd (fd closed with nothing in it) or exited (what it wrote is there)."""
    os.set_blocking(fd, False)
    try:
        got = os.read(fd, 32)
    except BlockingIOError:         # another thread's child may still hold fd open
        return None
    if not got:
        return None
    proc.stdin.close()
    proc.wait()
    proc.stdout.close()
    return int(got)
