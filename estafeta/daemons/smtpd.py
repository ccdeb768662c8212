"""smtpd: the asyncio driver around the sans-IO SMTP codec (SPEC S1).

Owns the network side of SMTP: sockets, timeouts, the per-session transaction, and
where the restriction lists (policy/restrictions.py) are asked: at RCPT TO (and at
MAIL FROM when smtpd_delay_reject = no, at DATA for smtpd_data_restrictions). Their
side effects land on the transaction: DISCARD drops the message here (never queued),
BCC adds a recipient, PREPEND headers go to cleanup ahead of the client's, HOLD,
FILTER and REDIRECT become queue file attributes hold=, filter=, redirect=. The
protocol rules live in proto/; queue writes in cleanup.py. Trust boundary: everything from the client is untrusted; it reaches
logs only through maillog.esc.

Each session is an asyncio.Protocol. Bytes go into the codec; events come out and
are answered in order (pipelining: replies of one read are written together). The
only wait in a session is at end of data, while cleanup makes the message durable:
reading pauses until then, and only then does the client get 250. What EHLO hides
from a client (smtpd_discard_ehlo_keyword_address_maps) is looked up at connect, and
the session's codec is built for it (core/smtpsettings.py DiscardMaps).
Next: policy/restrictions.py, cleanup.py.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import mmap
import os
import resource
import struct
import time

from ..core import maillog
from ..core.maillog import esc
from ..core.queueid import new_queue_id
from ..core.resolve import ALIAS, LOCAL, VIRTUAL, Resolver
from ..core.smtpsettings import DiscardMaps, SmtpSettings, smtp_settings
from ..policy import restrictions as P
from ..proto import dsn
from ..proto import events as ev
from ..proto import replies as R
from ..proto.smtp_server import AFTER_EOM, ServerConnection, disconnect_counts
from ..tables import TableList, TableTempError, open_table
from .cleanup import Cleanup, CleanupRefused


def parse_networks(items: list[str]) -> list[ipaddress._BaseNetwork]:
    nets = []
    for item in items:
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("["):
            item = item.replace("[", "").replace("]", "")
        nets.append(ipaddress.ip_network(item, strict=False))
    return nets


def session_codec(smtp: SmtpSettings) -> ServerConnection:
    """A session's codec: `smtp`'s, with disable_vrfy_command (502 before any VRFY
    syntax check, as Postfix)."""
    conn = smtp.connection()
    conn.vrfy_enabled = smtp.vrfy is not R.VRFY_DISABLED
    return conn


class SessionBoard:
    """This worker's view of the master's shared session counts (master.session_board)."""

    def __init__(self, fd: int, slot: int) -> None:
        size = os.fstat(fd).st_size
        self.mm = mmap.mmap(fd, size)
        self.n = size // 8
        self.slot = slot
        self.fmt = f"{self.n}q"

    def publish(self, count: int) -> None:
        struct.pack_into("q", self.mm, 8 * self.slot, count)

    def total(self) -> int:
        return sum(struct.unpack_from(self.fmt, self.mm))


FD_RESERVE = 72       # one queue file per I/O thread (skeleton.IO_THREADS = 64), DNS, tables, log


def fd_session_limit() -> tuple[int, int]:
    """(sessions, RLIMIT_NOFILE): how many sessions this process can hold and still
    open what a mail transaction needs. The limit less the descriptors open now and a
    reserve (at most an eighth of the limit). There the worker stops accepting (the
    Acceptor): new clients wait in the listen queue or go to another worker, accept()
    does not meet EMFILE, and sessions in hand can still commit their queue files.
    (0, 0): no limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 0, 0
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    return max(1, soft - used - max(4, min(FD_RESERVE, soft // 8))), soft


class SmtpdConfig:
    """What every session needs, computed once per process."""

    def __init__(self, cfg, store) -> None:
        # Banner, EHLO, VRFY, SMTPUTF8, envelope syntax and limits: shared with
        # sendmail -bs (core/smtpsettings.py), which must answer the same.
        self.smtp = smtp_settings(cfg)
        # smtpd_discard_ehlo_keyword_address_maps: opened here, once per process (a
        # reload starts new workers); looked up at each connect (Session).
        self.discard_maps = DiscardMaps(cfg, self.smtp, open_table)
        for problem in self.discard_maps.problems:
            maillog.log.warning(problem)
        self.hostname = self.smtp.hostname
        self.banner = self.smtp.banner
        self.timeout = cfg.get_duration("smtpd_timeout")
        self.data_rate_step = 1.0 / max(1, cfg.get_int("smtpd_min_data_rate"))   # s of deadline per byte
        self.soft_errors = cfg.get_int("smtpd_soft_error_limit")
        self.error_sleep = cfg.get_duration("smtpd_error_sleep_time")
        self.rcpt_limit = self.smtp.rcpt_limit
        self.mynetworks = parse_networks(cfg.get_list("mynetworks"))
        self._mynetworks_cache: dict[str, bool] = {}    # client address -> in mynetworks
        self.resolver = Resolver(cfg)
        self.virtual_maps = TableList(cfg.get("virtual_mailbox_maps"))
        self.unknown_codes = {LOCAL: cfg.get_int("unknown_local_recipient_reject_code"),
                              VIRTUAL: cfg.get_int("unknown_virtual_mailbox_reject_code")}
        self.delay_reject = cfg.get_bool("smtpd_delay_reject")
        self.cleanup = Cleanup(cfg, store)
        # Postfix's 421s name the host (built once here, not per session).
        self.too_many_errors = R.TOO_MANY_ERRORS.with_text(f"{self.hostname} {R.TOO_MANY_ERRORS.text}")
        self.timeout_reply = R.TIMEOUT.with_text(f"{self.hostname} {R.TIMEOUT.text}")
        self.helo = self.smtp.helo
        self.sessions = 0
        self.max_sessions = 0
        self.acceptor: Acceptor | None = None
        self.fd_sessions = 0            # sessions the file descriptor limit allows (fd_session_limit)
        self.fd_limit = 0
        # After cleanup: the unlisted-recipient checks ask its rewriter (self.unlisted).
        self.policy = P.Policy(
            {stage: cfg.get(f"smtpd_{stage}_restrictions") for stage in P.STAGES}, self, open_table,
            codes=P.Codes(*(cfg.get_int(n) for n in (
                "reject_code", "defer_code", "access_map_reject_code", "access_map_defer_code",
                "relay_domains_reject_code", "non_fqdn_reject_code", "invalid_hostname_reject_code"))),
            delimiter=cfg.get("recipient_delimiter"),
            parent_matches_subdomains="smtpd_access_maps" in cfg.get_list("parent_domain_matches_subdomains"),
            null_key=cfg.get("smtpd_null_access_lookup_key"), delay_reject=self.delay_reject,
            reject_unlisted_recipient=cfg.get_bool("smtpd_reject_unlisted_recipient"),
            reject_unlisted_sender=cfg.get_bool("smtpd_reject_unlisted_sender"))
        for problem in self.policy.problems:
            maillog.log.warning(problem)
        self.board: SessionBoard | None = None

    def session_settings(self, addr: str) -> tuple[SmtpSettings, str]:
        """The settings for a client at `addr` (smtpd_discard_ehlo_keyword_address_maps
        over smtpd_discard_ehlo_keywords), and "" or the lookup error: then the
        global list holds and EHLO is answered 421, as Postfix does."""
        if not self.discard_maps:
            return self.smtp, ""
        try:
            return self.discard_maps.settings_for(addr), ""
        except TableTempError as e:
            return self.smtp, str(e)

    def total_sessions(self) -> int:
        return self.board.total() if self.board is not None else self.sessions

    def in_mynetworks(self, addr: str) -> bool:
        known = self._mynetworks_cache.get(addr)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        known = any(ip in n for n in self.mynetworks)
        if len(self._mynetworks_cache) >= 4096:     # many clients: start over
            self._mynetworks_cache.clear()
        self._mynetworks_cache[addr] = known
        return known

    # -- policy.restrictions.Site: what the restriction lists ask about this system ------

    def address_class(self, domain: str) -> str:
        return self.resolver.address_class(domain)

    def unlisted(self, address: str, sender: bool) -> tuple[int, str, str] | None:
        """Postfix's reject_unlisted_recipient/_sender: relocated(5) users have moved;
        an address a rewriting table knows is listed (cleanup rewrites it); otherwise
        the class's own table (virtual alias, local, virtual mailbox) must know it."""
        domain = address.rpartition("@")[2] if "@" in address else ""
        cls = self.resolver.address_class(domain)
        if not sender and (moved := self.resolver.relocated(address)) is not None:
            return 550, "5.1.6", f"User has moved to {moved}"
        if self.cleanup.rewriter.recipient_listed(address):
            return None
        if cls == ALIAS:
            return 550, "5.1.1", "User unknown in virtual alias table"
        if cls == LOCAL and self.resolver.is_known_local(address) is False:
            return self.unknown_codes[LOCAL], "5.1.1", "User unknown in local recipient table"
        if cls == VIRTUAL and self.virtual_maps and self.virtual_maps.lookup(address) is None \
                and self.virtual_maps.lookup("@" + domain) is None:
            return self.unknown_codes[VIRTUAL], "5.1.1", "User unknown in virtual mailbox table"
        return None


class Session(asyncio.Protocol):
    __slots__ = ("sc", "conn", "transport", "client", "addr", "trusted", "helo", "proto", "qid",
                 "sender", "rcpts", "txn", "busy", "out", "counts", "fails", "last", "timer", "write_error",
                 "closed", "dsn", "effects", "smtp", "ehlo_error", "bye")

    def __init__(self, sc: SmtpdConfig) -> None:
        self.sc = sc
        self.smtp = sc.smtp                # this client's (connection_made)
        self.ehlo_error = ""               # smtpd_discard_ehlo_keyword_address_maps failed
        self.conn = session_codec(sc.smtp)
        self.transport: asyncio.Transport | None = None
        self.helo = ""
        self.proto = "SMTP"
        self.qid = ""
        self.sender = ""
        self.rcpts: list[tuple[str, dict[str, str]]] = []
        self.dsn: dict[str, str] = {}      # RET/ENVID of this transaction (envelope attributes)
        self.effects = P.Effects()         # what the restriction lists asked of this message
        self.txn = None
        self.busy = False
        self.out: list[bytes] = []
        # Postfix's disconnect line: commands by counter (COUNTERS), and those that failed.
        self.counts: dict[str, int] = {}
        self.fails: dict[str, int] = {}
        self.write_error: str = ""
        self.closed = False
        self.bye = False                   # we ended the session (221, 421): not "lost connection"

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self.addr = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.client = f"{'localhost' if self.addr in ('127.0.0.1', '::1') else 'unknown'}[{self.addr}]"
        self.trusted = self.sc.in_mynetworks(self.addr)
        sc = self.sc
        sc.sessions += 1
        maillog.log.info(f"connect from {self.client}")
        if sc.board is not None:
            sc.board.publish(sc.sessions)
        if sc.max_sessions and sc.total_sessions() > sc.max_sessions:
            self.bye = True
            transport.write(R.Reply(421, "4.3.2", f"{sc.hostname} Service temporarily unavailable; too many sessions").to_bytes())
            transport.close()
            return
        # Postfix decides what EHLO hides from this client before the banner; the
        # codec then takes the same list (DSN and SMTPUTF8 parameter refusals).
        self.smtp, self.ehlo_error = sc.session_settings(self.addr)
        if self.ehlo_error:
            maillog.log.warning(esc(self.ehlo_error))
        if self.smtp is not sc.smtp:
            self.conn = session_codec(self.smtp)
        transport.write(self.conn.send(sc.banner))
        self.last = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(sc.timeout, self._check_timeout)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.sc.sessions -= 1
        if self.sc.board is not None:
            self.sc.board.publish(self.sc.sessions)
        if self.sc.acceptor is not None:
            self.sc.acceptor.resume()          # a slot is free: accept again if paused
        self.timer.cancel() if hasattr(self, "timer") else None
        if not self.bye:
            # Postfix: the client left without QUIT (or the connection broke), logged
            # with where the session was, except right after a message.
            where = self.conn.where_text()
            if where != AFTER_EOM:
                maillog.log.info(f"lost connection after {where} from {self.client}")
        if self.txn is not None and not self.busy:
            self.txn.abort()
            self.txn = None
            self.fail("data")                  # the client left inside the message
        maillog.log.info(f"disconnect from {self.client}{disconnect_counts(self.counts, self.fails)}")

    def _check_timeout(self) -> None:
        idle = time.monotonic() - self.last
        if idle >= self.sc.timeout and not self.busy:
            maillog.log.info(f"timeout after {self.conn.where_text()} from {self.client}")
            self.bye = True
            if self.transport and not self.transport.is_closing():
                self.transport.write(self.sc.timeout_reply.to_bytes())
                self.transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(max(1.0, self.sc.timeout - idle), self._check_timeout)

    def data_received(self, data: bytes) -> None:
        # smtpd_timeout is a deadline per request, not per read, or a client sending a
        # byte at a time would never time out (slowloris): a complete command line starts
        # a new one; message content pushes it by len/smtpd_min_data_rate, never past
        # smtpd_timeout from now (Postfix's smtpd_per_request_deadline).
        if self.txn is None:
            if b"\n" in data:
                self.last = time.monotonic()
        else:
            self.last = min(time.monotonic(), self.last + len(data) * self.sc.data_rate_step)
        try:
            self.conn.receive_data(data)
            if not self.busy:
                self.pump()
        except Exception:
            self.internal_error()

    def eof_received(self):
        try:
            self.conn.receive_data(b"")
            if not self.busy:
                self.pump()
        except Exception:
            self.internal_error()
        return False

    def internal_error(self) -> None:
        """An unexpected exception in the codec or a handler (a bug): a traceback in
        the log and 421 4.3.0 to the client, never a silent close (STYLE 5). An open
        transaction is aborted: its client got no 250, so nothing accepted is lost."""
        maillog.log.exception(f"{self.qid or 'NOQUEUE'}: unexpected error in session with {self.client}")
        if self.txn is not None and not self.busy:
            self.txn.abort()
            self.txn = None
        if self.transport is not None and not self.transport.is_closing():
            self.out.clear()
            self.bye = True
            self.transport.write(R.INTERNAL_ERROR.to_bytes())
            self.transport.close()

    # -- event loop of one session ------------------------------------------------------

    def reply(self, r: R.Reply) -> None:
        self.out.append(self.conn.send(r))
        if r.close:
            self.bye = True
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
        self.out.clear()

    def fail(self, name: str) -> None:
        self.fails[name] = self.fails.get(name, 0) + 1

    def pump(self) -> None:
        conn = self.conn
        while not self.closed:
            e = conn.next_event()
            t = type(e)
            if t is ev.MessageData:
                self.on_data(e.data)
                continue
            if e is ev.NEED_DATA:
                break
            if e is ev.CLOSED:
                self.flush()
                if self.transport:
                    self.transport.close()
                return
            if t is ev.EndOfData:
                self.on_end_of_data(e)
                if self.busy:
                    break
                continue
            counts = self.counts
            if t is ev.BadCommand:
                name = e.command
                r = e.reply
                if name:
                    counts[name] = counts.get(name, 0) + 1
                    self.fail(name)
                    if r is R.BAD_VRFY_ADDRESS:
                        maillog.log.warning(f"Illegal address syntax from {self.client} in VRFY command: "
                                            f"{esc(conn.vrfy_refused)}")
                elif r is R.TOO_MANY_ERRORS:
                    maillog.log.info(f"too many errors after {conn.where_text()} from {self.client}")
                    r = self.sc.too_many_errors
            else:
                name, handler = DISPATCH[t]
                counts[name] = counts.get(name, 0) + 1
                r = handler(self, e)
                # Postfix: a command fails when its reply is 4xx/5xx; not a recipient
                # past smtpd_recipient_limit (within smtpd_recipient_overshoot_limit).
                if r.code >= 400 and conn.error_counted(r):
                    self.fail(name)
            if conn.errors >= self.sc.soft_errors and self.sc.error_sleep > 0:
                self.delay_reply(r)
                return
            self.reply(r)
        self.flush()

    def delay_reply(self, r: R.Reply) -> None:
        """Past smtpd_soft_error_limit every reply waits smtpd_error_sleep_time (Postfix)."""
        self.flush()
        self.busy = True              # no timeout, no pump, while the reply waits
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.sc.error_sleep, self._send_delayed, r)

    def _send_delayed(self, r: R.Reply) -> None:
        self.busy = False
        if self.closed:
            self.reset()              # a DATA whose 354 was waiting: drop its queue file
            return
        self.last = time.monotonic()
        self.reply(r)
        if not r.close:
            self.transport.resume_reading()
            self.pump()
        else:
            self.flush()

    # -- commands ---------------------------------------------------------------------

    def on_helo(self, e) -> R.Reply:
        self.reset()
        self.helo = e.name
        self.proto = "SMTP"
        return self.sc.helo

    def on_ehlo(self, e) -> R.Reply:
        self.reset()
        self.helo = e.name
        self.proto = "ESMTP"
        if self.smtp.ehlo_log:        # smtpd_discard_ehlo_keywords, as Postfix: at each EHLO
            maillog.log.info(self.smtp.ehlo_log)
        if self.ehlo_error:           # Postfix: a warning, then 421 and the session ends
            maillog.log.warning(f"don't know what EHLO features to announce to {self.client}")
            r = R.Reply(421, "4.3.0", f"{self.sc.hostname} Server local data error", close=True)
            maillog.log.info(f"{self.qid or 'NOQUEUE'}: reject: EHLO from {self.client}: {r}")
            return r
        return self.smtp.ehlo

    def on_mail(self, e: ev.MailFrom) -> R.Reply:
        self.reset()
        if not self.sc.delay_reject:
            refusal = self.apply_policy("MAIL", self.sc.policy.check_mail(self.request(e.address)), e.address, None)
            if refusal is not None:
                return refusal
        self.sender = e.address
        self.dsn = dsn.mail_attrs(e.params)
        return R.SENDER_OK

    def request(self, sender: str | None, recipient: str | None = None) -> P.Request:
        return P.Request(self.client.split("[")[0], self.addr, self.helo, sender, recipient, self.trusted)

    def apply_policy(self, cmd: str, out: P.Outcome, sender: str | None, rcpt: str | None) -> R.Reply | None:
        """Log what the restrictions did (Postfix's shape); keep their effects when the
        command is accepted; the refusal otherwise."""
        qid = self.qid or "NOQUEUE"
        for problem in out.problems:
            maillog.log.warning(f"{qid}: {cmd} from {self.client}: {esc(problem)}")
        tail = (f"from=<{esc(sender or '')}>" + (f" to=<{esc(rcpt)}>" if rcpt is not None else "")
                + f" proto={self.proto} helo=<{esc(self.helo)}>")
        for event, text in out.logs:
            maillog.log.info(f"{qid}: {event}: {cmd} from {self.client}: {esc(text)}; {tail}")
        v = out.verdict
        if isinstance(v, P.Accept):
            self.effects.merge(out.effects)
            return None
        maillog.log.info(f"{qid}: reject: {cmd} from {self.client}: {esc(str(v.reply))}; {tail}")
        return v.reply

    def on_rcpt(self, e: ev.RcptTo) -> R.Reply:
        rcpt = e.address
        # 0 (refused by estafeta check, as Postfix 3.7 refuses it) would mean no limit here.
        if self.sc.rcpt_limit and len(self.rcpts) >= self.sc.rcpt_limit:
            return R.TOO_MANY_RECIPIENTS
        try:
            refusal = self.check_recipient(rcpt)
        except TableTempError as err:          # the evaluator catches its own; belt and braces
            maillog.log.warning(f"{self.qid or 'NOQUEUE'}: recipient lookup failed: {err}")
            refusal = R.Reply(451, "4.3.0", f"<{rcpt}>: Temporary lookup failure")
            maillog.log.info(f"{self.qid or 'NOQUEUE'}: reject: RCPT from {self.client}: {refusal}; "
                             f"from=<{esc(self.sender)}> to=<{esc(rcpt)}> proto={self.proto} helo=<{esc(self.helo)}>")
        if refusal is not None:
            return refusal
        if not self.qid:
            self.qid = new_queue_id()
            maillog.log.info(f"{self.qid}: client={self.client}")
        self.rcpts.append((rcpt, dsn.rcpt_params(e.params)))
        return R.RECIPIENT_OK

    def check_recipient(self, rcpt: str) -> R.Reply | None:
        """The restriction lists at RCPT TO (policy/restrictions.py). With Postfix's
        defaults: permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination,
        then unknown users refused (smtpd_reject_unlisted_recipient, the seed's
        milter-ahead; SmtpdConfig.unlisted). The refusal (already logged), or None."""
        out = self.sc.policy.check_rcpt(self.request(self.sender, rcpt), self.effects)
        return self.apply_policy("RCPT", out, self.sender, rcpt)

    def on_data(self, chunk: bytes) -> None:
        if self.txn is None or self.write_error:
            return
        try:
            self.txn.write(chunk)
        except OSError as err:
            self.write_error = str(err)

    def on_data_command(self, e) -> R.Reply:
        if self.sc.policy.lists["data"]:
            out = self.sc.policy.check_data(self.request(self.sender), self.effects)
            refusal = self.apply_policy("DATA", out, self.sender, None)
            if refusal is not None:
                return refusal
        fx = self.effects
        self.write_error = ""
        if fx.discard is not None:          # access(5) DISCARD: claim delivery, keep nothing
            self.txn = _DiscardTxn()
            return R.START_DATA
        attrs = {"client_name": self.client.split("[")[0], "client_address": self.addr,
                 "helo_name": self.helo, "protocol": self.proto, **self.dsn}
        # access(5) HOLD, FILTER, REDIRECT: envelope attributes for cleanup and qmgr.
        for name in ("hold", "filter", "redirect"):
            value = getattr(fx, name)
            if value is not None:
                attrs[name] = value
        rcpts = self.rcpts
        if fx.bcc is not None and fx.bcc not in {r for r, _ in rcpts}:
            rcpts = [*rcpts, (fx.bcc, {dsn.NOTIFY: "NEVER"})]   # access(5) BCC: one more recipient, no notices
        try:
            self.txn = self.sc.cleanup.open(self.qid, self.sender, rcpts, attrs)
            for header in fx.prepend:       # PREPEND: ahead of the client's own headers
                self.txn.write(header.encode("utf-8", "surrogateescape") + b"\n")
        except (OSError, ValueError) as err:
            if self.txn is not None:
                self.txn.abort()
                self.txn = None
            maillog.log.warning(f"{self.qid}: cannot create queue file: {err}")
            return R.Reply(451, "4.3.0", "Error: queue file write error")
        return R.START_DATA

    def on_end_of_data(self, e: ev.EndOfData) -> None:
        txn, self.txn = self.txn, None
        if e.error is not None or self.write_error or txn is None:
            if txn is not None:
                txn.abort()
            self.fail("data")              # Postfix: data=0/1 when the message is refused
            if e.error is not None:
                self.reply(e.error)
            elif self.write_error:
                maillog.log.warning(f"{self.qid}: queue file write error: {self.write_error}")
                self.reply(R.Reply(452, "4.3.1", "Error: insufficient system storage"))
            else:
                self.reply(R.TEMP_ERROR)
            self.reset()
            return
        self.busy = True
        self.transport.pause_reading()
        self.flush()
        asyncio.get_running_loop().create_task(self._commit(txn))

    async def _commit(self, txn) -> None:
        try:
            await txn.commit()
            r = R.queued(self.qid)      # also when header/body_checks said DISCARD
            if isinstance(txn, _DiscardTxn):
                maillog.log.info(f"{self.qid}: discard: END-OF-MESSAGE from {self.client}: "
                                 f"{esc(self.effects.discard or '')}; from=<{esc(self.sender)}> "
                                 f"proto={self.proto} helo=<{esc(self.helo)}>")
        except CleanupRefused as err:  # header/body_checks REJECT, or a table could not answer
            r = err.reply
        except Exception as err:        # unexpected: 451 and a traceback, never a 5xx
            maillog.log.exception(f"{self.qid}: queue file commit failed: {err}")
            r = R.TEMP_ERROR
        self.busy = False
        self.reset()
        if r.code >= 400:
            self.fail("data")
        if self.closed:
            return
        self.reply(r)
        self.transport.resume_reading()
        self.pump()

    def on_rset(self, e) -> R.Reply:
        self.reset()
        return R.OK

    def reset(self) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        self.qid = ""
        self.sender = ""
        self.rcpts = []
        self.dsn = {}
        self.effects = P.Effects()

    def on_noop(self, e) -> R.Reply:
        return R.OK

    def on_quit(self, e) -> R.Reply:
        return R.BYE

    def on_vrfy(self, e) -> R.Reply:
        # The codec checked the argument (and disable_vrfy_command). The reply does
        # not echo it as Postfix's "252 2.0.0 ARG" does: client text stays out of replies.
        return R.VRFY_REPLY

    def on_help(self, e) -> R.Reply:
        return R.HELP


class _DiscardTxn:
    """The transaction of a message a DISCARD action dropped: its data goes nowhere."""

    def write(self, chunk: bytes) -> None:
        pass

    async def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


DISPATCH = {
    ev.Helo: ("helo", Session.on_helo),
    ev.Ehlo: ("ehlo", Session.on_ehlo),
    ev.MailFrom: ("mail", Session.on_mail),
    ev.RcptTo: ("rcpt", Session.on_rcpt),
    ev.Data: ("data", Session.on_data_command),
    ev.Rset: ("rset", Session.on_rset),
    ev.Noop: ("noop", Session.on_noop),
    ev.Quit: ("quit", Session.on_quit),
    ev.Vrfy: ("vrfy", Session.on_vrfy),
    ev.Help: ("help", Session.on_help),
}


class Acceptor:
    """Accepts clients while there is room, as Postfix's master does: at the process
    limit (maxproc, counted across workers on the session board) it stops accepting,
    and new clients wait in the kernel's listen queue for a free slot ("new clients
    may experience noticeable delays"), instead of each costing an accept, a 421 and
    a close. Under a flood, CPU then goes to the sessions in hand, so mail keeps
    being accepted at the sustainable rate. accept() failing for want of descriptors
    (EMFILE, ENFILE) pauses accepting briefly too: the client waits, nothing spins."""

    BURST = 32          # accepts per readiness event: other sessions' turns come between

    def __init__(self, loop, sock, sc: "SmtpdConfig", service: str) -> None:
        self.loop, self.sock, self.sc, self.service = loop, sock, sc, service
        self.reading = False
        self.stopped = False
        self.starting = 0           # accepted, transport not yet made
        self.warned = {"limit": -1e9, "fd": -1e9}
        self.backoff: asyncio.TimerHandle | None = None    # after EMFILE: no accepts until it fires
        self.poll: asyncio.TimerHandle | None = None       # at the limit: look again (other workers)
        sock.setblocking(False)

    def full(self) -> bool:
        sc = self.sc
        return bool(sc.max_sessions) and sc.total_sessions() + self.starting >= sc.max_sessions

    def fd_full(self) -> bool:
        """This worker's sessions use up RLIMIT_NOFILE less the reserve (fd_session_limit)."""
        sc = self.sc
        return bool(sc.fd_sessions) and sc.sessions + self.starting >= sc.fd_sessions

    def resume(self) -> None:
        if self.reading or self.stopped or self.backoff is not None:
            return
        if self.full() or self.fd_full():
            self._poll()
            return
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self.reading = True

    def pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def stop(self) -> None:
        self.stopped = True
        self.pause()
        for h in (self.backoff, self.poll):
            if h is not None:
                h.cancel()

    def _poll(self) -> None:
        if self.poll is None and not self.stopped:
            def again() -> None:
                self.poll = None
                self.resume()
            self.poll = self.loop.call_later(0.25, again)

    def _warn(self, kind: str, text: str) -> None:
        now = time.monotonic()
        if now - self.warned[kind] >= 60:
            self.warned[kind] = now
            maillog.log.warning(text)

    def _readable(self) -> None:
        for _ in range(self.BURST):
            if self.fd_full():
                self._warn("fd", f"too many open files: {self.sc.sessions} sessions use up the file descriptor "
                                 f"limit {self.sc.fd_limit} (ulimit -n) less a reserve for queue files: new "
                                 f"clients wait until sessions end")
                self.pause()
                self._poll()
                return
            if self.full():
                self._warn("limit", f'service "smtpd" ({self.service}) has reached its process limit '
                                    f'"{self.sc.max_sessions}": new clients may experience noticeable delays')
                self.pause()
                self._poll()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._warn("fd", f"accept: {e.strerror}: new clients wait until sessions end")
                    self.pause()
                    if self.backoff is None and not self.stopped:
                        def again() -> None:
                            self.backoff = None
                            self.resume()
                        self.backoff = self.loop.call_later(0.1, again)
                    return
                continue                # ECONNABORTED and the like: that client is gone
            self.starting += 1
            self.loop.create_task(self._start(conn))

    async def _start(self, conn) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: Session(self.sc), conn)
        except Exception as e:          # the client left already, or no descriptor for the loop
            conn.close()
            maillog.log.warning(f"cannot start a session: {e}")
        finally:
            self.starting -= 1


async def serve(ctx) -> None:
    sc = SmtpdConfig(ctx.cfg, ctx.store)
    if ctx.args:
        sc.max_sessions = int(ctx.args[0])
    if len(ctx.args) >= 3:
        sc.board = SessionBoard(int(ctx.args[1]), int(ctx.args[2]))
        sc.board.publish(0)
    loop = asyncio.get_running_loop()
    sock = ctx.listen_socket
    sc.fd_sessions, sc.fd_limit = fd_session_limit()
    sc.acceptor = Acceptor(loop, sock, sc, ctx.service)
    sc.acceptor.resume()
    await ctx.stopping.wait()
    sc.acceptor.stop()
    # Graceful stop: sessions in hand may finish (up to 10 s).
    deadline = time.monotonic() + 10
    while sc.sessions > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
