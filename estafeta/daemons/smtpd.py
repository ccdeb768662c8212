"""smtpd: the asyncio driver around the sans-IO SMTP codec (SPEC S1).

Owns the network side of SMTP: sockets, timeouts, the per-session transaction and
the recipient policy that exists so far (relay control and unknown local users,
Postfix's default permit_mynetworks / reject_unauth_destination /
reject_unlisted_recipient). The protocol rules live in proto/; queue writes in
cleanup.py. Trust boundary: everything from the client is untrusted; it reaches
logs only through maillog.esc.

Each session is an asyncio.Protocol. Bytes go into the codec; events come out and
are answered in order (pipelining: replies of one read are written together). The
only wait in a session is at end of data, while cleanup makes the message durable:
reading pauses until then, and only then does the client get 250.
Next: policy/ (restriction lists arrive with the policy issue), cleanup.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from ..core import maillog
from ..core.maillog import esc
from ..core.queueid import new_queue_id
from ..core.resolve import DEFAULT, LOCAL, VIRTUAL, Resolver
from ..proto import dsn
from ..proto import events as ev
from ..proto import replies as R
from ..proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection
from ..tables import TableList, TableTempError
from .cleanup import Cleanup


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


class SmtpdConfig:
    """What every session needs, computed once per process."""

    def __init__(self, cfg, store) -> None:
        self.hostname = cfg.get("myhostname")
        self.banner = R.Reply(220, "", cfg.get("smtpd_banner"))
        self.size_limit = cfg.get_int("message_size_limit")
        self.line_limit = cfg.get_int("line_length_limit")
        self.timeout = cfg.get_duration("smtpd_timeout")
        self.hard_errors = cfg.get_int("smtpd_hard_error_limit")
        self.rcpt_limit = cfg.get_int("smtpd_recipient_limit")
        self.mynetworks = parse_networks(cfg.get_list("mynetworks"))
        self.resolver = Resolver(cfg)
        self.virtual_maps = TableList(cfg.get("virtual_mailbox_maps"))
        self.cleanup = Cleanup(cfg, store)
        self.ehlo = R.ehlo_reply(self.hostname, self.size_limit, ("DSN",))     # RFC 3461
        self.helo = R.helo_reply(self.hostname)
        self.sessions = 0
        self.max_sessions = 0

    def in_mynetworks(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.mynetworks)


class Session(asyncio.Protocol):
    __slots__ = ("sc", "conn", "transport", "client", "addr", "trusted", "helo", "proto", "qid",
                 "sender", "rcpts", "txn", "busy", "out", "counts", "last", "timer", "write_error",
                 "closed", "dsn")

    def __init__(self, sc: SmtpdConfig) -> None:
        self.sc = sc
        self.conn = ServerConnection(sc.hostname, max_line=sc.line_limit,
                                     message_size_limit=sc.size_limit, max_errors=sc.hard_errors,
                                     mail_params=DEFAULT_MAIL_PARAMS | dsn.MAIL_PARAMS,
                                     rcpt_params=dsn.RCPT_PARAMS)
        self.transport: asyncio.Transport | None = None
        self.helo = ""
        self.proto = "SMTP"
        self.qid = ""
        self.sender = ""
        self.rcpts: list[tuple[str, dict[str, str]]] = []
        self.dsn: dict[str, str] = {}      # RET/ENVID of this transaction (envelope attributes)
        self.txn = None
        self.busy = False
        self.out: list[bytes] = []
        self.counts: dict[str, int] = {}
        self.write_error: str = ""
        self.closed = False

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
        if sc.max_sessions and sc.sessions > sc.max_sessions:
            transport.write(R.Reply(421, "4.3.2", f"{sc.hostname} Service temporarily unavailable; too many sessions").to_bytes())
            transport.close()
            return
        transport.write(self.conn.send(sc.banner))
        self.last = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(sc.timeout, self._check_timeout)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.sc.sessions -= 1
        self.timer.cancel() if hasattr(self, "timer") else None
        if self.txn is not None and not self.busy:
            self.txn.abort()
            self.txn = None
        c = self.counts
        total = sum(c.values())
        detail = " ".join(f"{k}={v}" for k, v in c.items())
        maillog.log.info(f"disconnect from {self.client}{' ' + detail if detail else ''} commands={total}")

    def _check_timeout(self) -> None:
        idle = time.monotonic() - self.last
        if idle >= self.sc.timeout and not self.busy:
            maillog.log.info(f"timeout after {self.state_name()} from {self.client}")
            if self.transport and not self.transport.is_closing():
                self.transport.write(R.TIMEOUT.to_bytes())
                self.transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(max(1.0, self.sc.timeout - idle), self._check_timeout)

    def state_name(self) -> str:
        return "DATA" if self.txn is not None else "END-OF-MESSAGE" if self.qid else "CONNECT"

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.conn.receive_data(data)
        if not self.busy:
            self.pump()

    def eof_received(self):
        self.conn.receive_data(b"")
        if not self.busy:
            self.pump()
        return False

    # -- event loop of one session ------------------------------------------------------

    def reply(self, r: R.Reply) -> None:
        self.out.append(self.conn.send(r))
        if r.close:
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
        self.out.clear()

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

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
            if t is ev.BadCommand:
                self.count("unknown")
                self.reply(e.reply)
                continue
            handler = DISPATCH[t]
            self.count(handler[0])
            self.reply(handler[1](self, e))
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
        return self.sc.ehlo

    def on_mail(self, e: ev.MailFrom) -> R.Reply:
        self.reset()
        self.sender = e.address
        self.dsn = dsn.mail_attrs(e.params)
        return R.SENDER_OK

    def on_rcpt(self, e: ev.RcptTo) -> R.Reply:
        rcpt = e.address
        if len(self.rcpts) >= self.sc.rcpt_limit:
            return R.TOO_MANY_RECIPIENTS
        try:
            refusal = self.check_recipient(rcpt)
        except TableTempError as err:
            maillog.log.warning(f"{self.qid or 'NOQUEUE'}: recipient lookup failed: {err}")
            refusal = R.Reply(451, "4.3.0", f"<{rcpt}>: Temporary lookup failure")
        if refusal is not None:
            maillog.log.info(f"{self.qid or 'NOQUEUE'}: reject: RCPT from {self.client}: {refusal}; "
                             f"from=<{esc(self.sender)}> to=<{esc(rcpt)}> proto={self.proto} helo=<{esc(self.helo)}>")
            return refusal
        if not self.qid:
            self.qid = new_queue_id()
            maillog.log.info(f"{self.qid}: client={self.client}")
        self.rcpts.append((rcpt, dsn.rcpt_params(e.params)))
        return R.RECIPIENT_OK

    def check_recipient(self, rcpt: str) -> R.Reply | None:
        """Postfix's defaults: permit_mynetworks, reject_unauth_destination, then
        reject_unlisted_recipient (unknown users refused at RCPT, the seed's milter-ahead)."""
        sc = self.sc
        domain = rcpt.rpartition("@")[2]
        cls = sc.resolver.address_class(domain)
        if cls == DEFAULT and not self.trusted:
            return R.RELAY_DENIED.with_text(f"<{rcpt}>: Relay access denied")
        if cls == LOCAL and sc.resolver.is_known_local(rcpt) is False:
            return R.UNKNOWN_USER.with_text(f"<{rcpt}>: Recipient address rejected: User unknown in local recipient table")
        if cls == VIRTUAL and sc.virtual_maps and sc.virtual_maps.lookup(rcpt) is None \
                and sc.virtual_maps.lookup("@" + domain) is None:
            return R.UNKNOWN_USER.with_text(f"<{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table")
        return None

    def on_data(self, chunk: bytes) -> None:
        if self.txn is None or self.write_error:
            return
        try:
            self.txn.write(chunk)
        except OSError as err:
            self.write_error = str(err)

    def on_data_command(self, e) -> R.Reply:
        attrs = {"client_name": self.client.split("[")[0], "client_address": self.addr,
                 "helo_name": self.helo, "protocol": self.proto, **self.dsn}
        try:
            self.txn = self.sc.cleanup.open(self.qid, self.sender, self.rcpts, attrs)
        except (OSError, ValueError) as err:
            maillog.log.warning(f"{self.qid}: cannot create queue file: {err}")
            return R.Reply(451, "4.3.0", "Error: queue file write error")
        self.write_error = ""
        return R.START_DATA

    def on_end_of_data(self, e: ev.EndOfData) -> None:
        txn, self.txn = self.txn, None
        if e.error is not None or self.write_error or txn is None:
            if txn is not None:
                txn.abort()
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
            r = R.queued(self.qid)
        except Exception as err:        # unexpected: 451 and a traceback, never a 5xx
            maillog.log.exception(f"{self.qid}: queue file commit failed: {err}")
            r = R.TEMP_ERROR
        self.busy = False
        self.reset()
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

    def on_noop(self, e) -> R.Reply:
        return R.OK

    def on_quit(self, e) -> R.Reply:
        return R.BYE

    def on_vrfy(self, e) -> R.Reply:
        return R.VRFY_REPLY

    def on_help(self, e) -> R.Reply:
        return R.HELP


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


async def serve(ctx) -> None:
    sc = SmtpdConfig(ctx.cfg, ctx.store)
    if ctx.args:
        sc.max_sessions = int(ctx.args[0])
    loop = asyncio.get_running_loop()
    sock = ctx.listen_socket
    server = await loop.create_server(lambda: Session(sc), sock=sock, backlog=1024)
    await ctx.stopping.wait()
    server.close()
    # Graceful stop: sessions in hand may finish (up to 10 s).
    deadline = time.monotonic() + 10
    while sc.sessions > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
