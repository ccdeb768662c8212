"""`sendmail -bs`: one SMTP session on stdin/stdout, as Postfix's `smtpd -S`.

Owns the blocking driver of that session: it reads the invoking user's program on
stdin (untrusted, as any SMTP client), answers on stdout with the codec
(proto/smtp_server.py) and smtpd's settings (core/smtpsettings.py), and drops each
accepted message into maildrop/ (queue/maildrop.py) for pickup. It runs as that user.

What Postfix 3.7 does for `sendmail -bs`, seen on a private Postfix, and done here:
- the client is "localhost[127.0.0.1]", whoever runs it; smtpd_discard_ehlo_keyword_
  address_maps are asked for 127.0.0.1 at connect (a lookup error: EHLO gets 421);
- it logs as smtpd does, under the name smtpd: `connect from localhost[127.0.0.1]`,
  the `discarding EHLO keywords:` line at each EHLO, `ID: client=localhost[127.0.0.1]`
  at the first accepted RCPT of a transaction (the reply to the message then says
  "queued as ID"), `lost connection after CMD`, `timeout after CMD`, `too many
  errors after CMD`, and `disconnect from localhost[127.0.0.1] ehlo=1 ... commands=N`
  with failed commands as ok/total, in Postfix's command-table order;
- smtpd_timeout bounds each read of stdin (Postfix's default, without
  smtpd_per_request_deadline): a silent client gets `421 4.4.2 HOST Error: timeout
  exceeded` and the session ends.
Where the log goes (SessionLog.open): maillog_file, appended to when this user may
write it; else nowhere (Postfix logs through postlogd, which estafeta does not have).
An ordinary user's session is therefore not logged; pickup's `ID: uid=N from=<...>`
line still records each message. Nothing goes to stderr but one warning for an
administrator whose maillog cannot be opened: stderr belongs to the client program.
Next: cli/sendmail.py (flags, modes), daemons/smtpd.py (the same rules over sockets).
"""
from __future__ import annotations

import io
import os
import select
import sys
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ..core import maillog
from ..core.maillog import esc
from ..core.queueid import new_queue_id
from ..core.smtpsettings import DiscardMaps, SmtpSettings, smtp_settings
from ..proto import events as ev
from ..proto import replies as R
from ..proto.smtp_server import AFTER_EOM, SMTP_COUNTER, ServerConnection, disconnect_counts
from ..queue import maildrop
from ..tables import TableTempError, open_table
from .queue_admin import trigger

# Postfix's smtpd -S names its client so, whatever the caller (smtpd_peer.c).
CLIENT_NAME, CLIENT_ADDR = "localhost", "127.0.0.1"
CLIENT = f"{CLIENT_NAME}[{CLIENT_ADDR}]"

# A line still without its end is handed to the codec in pieces past this size, so a
# client cannot make us hold unbounded input (the codec bounds what it keeps).
MAX_HELD = 64 * 1024


class Log(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...


class NoLog:
    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass


def open_log(cfg, administrator: bool, err=sys.stderr) -> Log:
    """The session's log: maillog_file, when it exists and this user may append to
    it. Never created here: a file made by root or by a user would lock the daemons
    (mail_owner) out of their own log. An administrator (root, the queue's owner) is
    told once on stderr when it cannot be opened; an ordinary user cannot write the
    maillog by design, so that is not news and is not reported."""
    path = cfg.get("maillog_file")
    if not path:
        return NoLog()          # "log to stderr" is the daemons' stderr, not the client's
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        if administrator:
            print(f"sendmail: warning: cannot open maillog_file {path}: {e.strerror}; "
                  f"this -bs session is not logged", file=err)
        return NoLog()
    log = maillog.MailLog(f"{cfg.get('syslog_name')}/smtpd", stderr=False, hostname=cfg.get("myhostname"))
    log.path, log.fd = path, fd
    return log


class Counters:
    """Postfix's per-command counters for the disconnect line (disconnect_counts,
    shared with smtpd): `name=N` when all N succeeded, else `ok/total`."""

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.fails: dict[str, int] = {}

    def add(self, name: str, ok: bool) -> None:
        self.total[name] = self.total.get(name, 0) + 1
        if not ok:
            self.fails[name] = self.fails.get(name, 0) + 1

    def summary(self) -> str:
        return disconnect_counts(self.total, self.fails).lstrip()


class Reader:
    """stdin's bytes as they come; TimeoutError when none came for `timeout` seconds."""

    def __init__(self, infile: BinaryIO, timeout: float) -> None:
        self.timeout = timeout
        try:
            self.fd = infile.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.fd = -1                # in memory (tests): never waits
        self.infile = infile

    def read(self) -> bytes:
        if self.fd < 0:
            return self.infile.read1(MAX_HELD) if hasattr(self.infile, "read1") else self.infile.read(MAX_HELD)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(self.timeout * 1000 if self.timeout > 0 else None):
            raise TimeoutError
        try:
            return os.read(self.fd, MAX_HELD)
        except (ConnectionResetError, BrokenPipeError):
            return b""


class Lines:
    """stdin bytes -> complete lines for the codec, each ending in CRLF: a person at a
    terminal, or a program written for `sendmail -bs`, types LF (Postfix's smtpd
    takes either)."""

    def __init__(self) -> None:
        self.held = b""

    def push(self, data: bytes) -> list[bytes]:
        *lines, self.held = (self.held + data).split(b"\n")
        out = [line + b"\n" if line.endswith(b"\r") else line + b"\r\n" for line in lines]
        if len(self.held) > MAX_HELD:
            out.append(self.held[:-1])      # keep a last CR: its LF may be next
            self.held = self.held[-1:]
        return out

    def end(self) -> bytes:
        rest, self.held = self.held, b""
        return rest


class Session:
    """One -bs session. `run` returns when it is over; every end writes the
    disconnect line."""

    def __init__(self, settings: SmtpSettings, store, log: Log, *, timeout: float,
                 ehlo_error: str = "") -> None:
        self.s = settings
        self.store = store
        self.log = log
        self.timeout = timeout
        self.ehlo_error = ehlo_error
        self.conn: ServerConnection = settings.connection()
        # VRFY as Postfix's smtpd -S: disable_vrfy_command first; the argument must be one
        # address, but its domain is not resolved (stand-alone mode skips that check).
        self.conn.vrfy_enabled = settings.vrfy is not R.VRFY_DISABLED
        self.conn.vrfy_resolve = False
        self.counters = Counters()
        self.verb = ""                  # the verb of the command line just fed
        self.in_data = False
        self.qid = ""
        self.sender = ""
        self.rcpts: list[str] = []
        self.body = bytearray()
        self.closed = False

    # -- the loop -------------------------------------------------------------------

    def run(self, read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
        self.write = write
        try:
            self.send(self.s.banner)
            lines = Lines()
            while not self.closed:
                try:
                    data = read()
                except TimeoutError:
                    self.on_timeout()
                    break
                for line in lines.push(data) if data else [lines.end(), b""]:
                    self.feed(line)
                    if self.closed:
                        break
                if not data:
                    break
        except (BrokenPipeError, ConnectionResetError):
            self.lost()                 # the client stopped reading our replies
        finally:
            if self.in_data:
                self.counters.add("data", False)
            self.log.info(f"disconnect from {CLIENT} {self.counters.summary()}")

    def feed(self, line: bytes) -> None:
        if not self.in_data and line.endswith(b"\n"):
            self.verb = line.split(None, 1)[0].upper().decode("ascii", "replace") if line.strip() else ""
        self.conn.receive_data(line)
        while not self.closed:
            e = self.conn.next_event()
            if e is ev.NEED_DATA:
                return
            if e is ev.CLOSED:
                self.lost()
                return
            if isinstance(e, ev.MessageData):
                self.body += e.data
                continue
            self.send(self.answer(e))

    def send(self, reply: R.Reply) -> None:
        self.write(self.conn.send(reply))
        if reply.close:
            self.closed = True

    def lost(self) -> None:
        where = self.conn.where_text()      # shared with smtpd: the codec's
        if not self.closed and where != AFTER_EOM:   # Postfix: a client may leave after the message
            self.log.info(f"lost connection after {where} from {CLIENT}")
        self.closed = True

    def on_timeout(self) -> None:
        self.log.info(f"timeout after {self.conn.where_text()} from {CLIENT}")
        self.send(self.with_host(R.TIMEOUT))

    def with_host(self, reply: R.Reply) -> R.Reply:
        # Postfix's 421 replies name the host: "421 4.4.2 mx.example.org Error: ..."
        return reply.with_text(f"{self.s.hostname} {reply.text}")

    # -- commands -------------------------------------------------------------------

    def answer(self, e) -> R.Reply:
        if isinstance(e, ev.EndOfData):
            reply = self.on_end_of_data(e)
            self.counters.add("data", reply.is_positive)
            self.in_data = False
            return reply
        if isinstance(e, ev.BadCommand) and e.reply is R.TOO_MANY_ERRORS:
            # Not a command: the codec's verdict before reading the next one.
            self.log.info(f"too many errors after {self.conn.where_text()} from {CLIENT}")
            return self.with_host(e.reply)
        name = SMTP_COUNTER.get(self.verb, "unknown")
        reply = e.reply if isinstance(e, ev.BadCommand) else self.on_command(e)
        if reply is R.BAD_VRFY_ADDRESS:
            self.log.warning(f"Illegal address syntax from {CLIENT} in VRFY command: {esc(self.conn.vrfy_refused)}")
        if isinstance(e, ev.Data) and reply.code == 354:
            self.in_data, self.body = True, bytearray()
        elif isinstance(e, ev.BadCommand) and not e.command:
            pass        # an empty line: no command, not counted (Postfix 3.7's smtpd -S, as smtpd)
        else:
            # Postfix: a recipient past smtpd_recipient_limit is not a failed command
            # (within smtpd_recipient_overshoot_limit: the codec's rule, as smtpd's).
            self.counters.add(name, not self.conn.error_counted(reply))
        return reply

    def on_command(self, e) -> R.Reply:
        if isinstance(e, ev.Helo):
            self.reset()
            return self.s.helo
        if isinstance(e, ev.Ehlo):
            self.reset()
            if self.s.ehlo_log:         # smtpd_discard_ehlo_keywords, as smtpd: at each EHLO
                self.log.info(self.s.ehlo_log)
            if self.ehlo_error:         # the maps could not answer: as smtpd, 421
                self.log.warning(f"don't know what EHLO features to announce to {CLIENT}")
                r = R.Reply(421, "4.3.0", f"{self.s.hostname} Server local data error", close=True)
                self.log.info(f"NOQUEUE: reject: EHLO from {CLIENT}: {r}")
                return r
            return self.s.ehlo
        if isinstance(e, ev.MailFrom):
            self.reset()
            self.sender = e.address
            return R.SENDER_OK
        if isinstance(e, ev.RcptTo):
            # smtpd_recipient_limit, 0 meaning none as in Postfix; but never more than
            # a maildrop file may hold (pickup would move it to corrupt/ after our 250).
            limit = min(self.s.rcpt_limit or maildrop.MAX_RECIPIENTS, maildrop.MAX_RECIPIENTS)
            if len(self.rcpts) >= limit:
                return R.TOO_MANY_RECIPIENTS
            if not self.qid:            # Postfix opens its queue file here
                self.qid = new_queue_id()
                self.log.info(f"{self.qid}: client={CLIENT}")
            self.rcpts.append(e.address)
            return R.RECIPIENT_OK
        if isinstance(e, ev.Data):
            return R.START_DATA
        if isinstance(e, ev.Rset):
            self.reset()
            return R.OK
        if isinstance(e, ev.Noop):
            return R.OK
        if isinstance(e, ev.Quit):
            return R.BYE
        if isinstance(e, ev.Vrfy):
            return R.VRFY_REPLY      # the codec checked the argument and disable_vrfy_command
        if isinstance(e, ev.Help):
            return R.HELP
        return R.UNKNOWN_COMMAND

    def on_end_of_data(self, e: ev.EndOfData) -> R.Reply:
        qid, sender, rcpts, body = self.qid, self.sender, self.rcpts, bytes(self.body)
        self.reset()
        if e.error is not None:
            return e.error
        try:
            maildrop.submit(self.store.path("maildrop"), sender, rcpts, {}, body)
        except OSError as err:
            self.log.warning(f"{qid}: cannot write to maildrop: {esc(err.strerror or str(err))}")
            return R.TEMP_ERROR
        trigger(self.store, "pickup", "W")
        return R.queued(qid)

    def reset(self) -> None:
        """End the transaction (RSET, HELO/EHLO, MAIL, end of data)."""
        self.qid, self.rcpts, self.body = "", [], bytearray()


def run(cfg, store, infile: BinaryIO, outfile: BinaryIO, *, log: Log | None = None,
        administrator: bool = False) -> int:
    """The whole -bs session; 0 however it ends (as Postfix's)."""
    if log is None:
        log = open_log(cfg, administrator)
    settings = smtp_settings(cfg, dsn=False)
    maps = DiscardMaps(cfg, settings, open_table, dsn=False)
    for problem in maps.problems:
        log.warning(problem)
    log.info(f"connect from {CLIENT}")
    ehlo_error = ""
    if maps:
        try:
            settings = maps.settings_for(CLIENT_ADDR)
        except TableTempError as e:
            ehlo_error = str(e)
            log.warning(esc(ehlo_error))
    session = Session(settings, store, log, timeout=cfg.get_duration("smtpd_timeout"), ehlo_error=ehlo_error)

    def write(data: bytes) -> None:
        outfile.write(data)
        outfile.flush()
    session.run(Reader(infile, session.timeout).read, write)
    return 0
