"""The mail log: Postfix-shaped lines, queue id first (STYLE 6).

    Nov 28 05:50:01 mx estafeta/smtpd[4123]: 3F1A...: client=localhost[127.0.0.1]

One function per log event lives with the daemon that logs it; they all end here in
`MailLog.info` and friends. Lines go to `maillog_file` (O_APPEND: one write per line,
so lines from many processes never interleave) and/or to stderr. Client-supplied text
is escaped with `esc` before it is logged.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import socket
import sys
import time
import traceback



def esc(text: str, limit: int = 200) -> str:
    """Make client text safe for one log line: control characters become \\ooo."""
    if text.isprintable() and len(text) <= limit:
        return text
    out = []
    for ch in text[:limit]:
        o = ord(ch)
        out.append(ch if ch.isprintable() else f"\\{o:03o}" if o < 256 else "?")
    return "".join(out)


class MailLog:
    def __init__(self, program: str = "estafeta", *, path: str = "", stderr: bool = True,
                 hostname: str | None = None) -> None:
        self.program = program
        self.pid = os.getpid()
        self.hostname = (hostname or socket.gethostname()).split(".")[0]
        self.stderr = stderr
        self.fd = -1
        self.path = path
        self._pending: list[bytes] | None = None
        self._sec = -1
        self._ts = ""
        atexit.register(self.flush)
        if path:
            self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.path:
            try:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError as e:
                print(f"{self.program}: warning: cannot open {self.path}: {e}", file=sys.stderr)

    def set_program(self, program: str) -> None:
        self.program = program
        self.pid = os.getpid()

    def _emit(self, level: str, msg: str) -> None:
        now = int(time.time())
        if now != self._sec:
            self._sec, self._ts = now, time.strftime("%b %d %H:%M:%S", time.localtime(now))
        text = f"{level}: {msg}" if level else msg
        line = f"{self._ts} {self.hostname} {self.program}[{self.pid}]: {text}\n".encode("utf-8", "replace")
        if self._pending is not None:
            self._pending.append(line)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:            # no event loop (commands, start-up): write now
            self._write(line)
            return
        # In a daemon, the lines of one event-loop turn go out in one write: a few
        # lines per message, from several processes, each an O_APPEND write that
        # waits for the file's lock, were the biggest single cost of an SMTP session.
        self._pending = [line]
        loop.call_soon(self.flush)

    def flush(self) -> None:
        lines, self._pending = self._pending, None
        if lines:
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, data)     # one write: O_APPEND keeps it whole
            except OSError:
                pass
        if self.stderr:
            try:
                sys.stderr.buffer.write(data)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def info(self, msg: str) -> None:
        self._emit("", msg)

    def warning(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)

    def fatal(self, msg: str) -> None:
        self._emit("fatal", msg)
        self.flush()

    def exception(self, msg: str) -> None:
        """An unexpected exception: one warning line plus the traceback, line by line."""
        self._emit("warning", msg)
        for chunk in traceback.format_exc().rstrip().splitlines():
            self._emit("warning", "  " + chunk)
        self.flush()


log = MailLog()


def setup(program: str, path: str = "", stderr: bool = True, hostname: str | None = None) -> MailLog:
    """Configure the process-wide log (called once by each daemon at start)."""
    global log
    log.program = program
    log.pid = os.getpid()
    log.stderr = stderr
    if hostname:
        log.hostname = hostname.split(".")[0]
    log.path = path
    log.reopen()
    return log
