"""cleanup: the only writer of new queue files (runs in process, in smtpd and pickup).

Owns what a message looks like when it enters the queue: a Received: header on
top; Message-ID: and Date: added when missing (Postfix adds them for local and
trusted clients: local_header_rewrite_clients), and the queue file itself, written
through QueueFileWriter (temp name, fsync, rename) and a shared directory fsync
(DirSyncer: group commit across concurrent sessions). Only after `commit()`
returns may smtpd say 250. Then qmgr is told the new id through its trigger socket;
if that datagram is lost, qmgr's periodic incoming scan still finds the file.
Rewriting (core/rewrite.py): the envelope at open (canonical, masquerading,
virtual alias expansion), the address headers in `_headers_done` for clients in
local_header_rewrite_clients. Automatic BCC recipients are added at open too:
always_bcc, sender_bcc_maps (by the rewritten sender) and recipient_bcc_maps (by
each rewritten recipient, before virtual alias expansion), each with NOTIFY=NEVER
and rewritten like any recipient; never for notices estafeta makes itself
(bounces) nor for mail a delivery agent forwards (it bypasses cleanup), as Postfix. header_checks run on each logical header in
`_headers_done`, body_checks on body lines in `write`; their decisions (a Verdict,
core/content_checks.py) are honoured at `commit()`: REJECT and a failed lookup
raise CleanupRefused (smtpd answers its reply, nothing is queued), DISCARD drops
the file, HOLD commits it into hold/, REDIRECT/FILTER/BCC rewrite the envelope
records (rare: the file is rewritten once, in a thread).
"""
from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import os
import socket
import time

from ..core import content_checks, maillog
from ..core.errors import TempFail
from ..core.resolve import LOCAL, Resolver
from ..core.rewrite import ENV_RECIPIENT, Rewriter
from ..proto import dsn as proto_dsn
from ..proto import replies as R
from ..queue import qfile
from ..queue.store import DirSyncer, QueueFileWriter, QueueStore, fsync_dir
from ..tables import TableList, TableTempError


class CleanupRefused(Exception):
    """The message is not queued; `reply` is what the client hears (5xx: rejected by
    header/body checks; 4xx: a table could not answer or an alias limit was hit)."""

    def __init__(self, reply: R.Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class QmgrTrigger:
    """Tells qmgr that a queue id is waiting in incoming/ (one datagram, best effort)."""

    def __init__(self, store: QueueStore, name: str = "qmgr") -> None:
        # public/qmgr as in Postfix's master.cf (private = n); private/ if so configured.
        self.paths = [store.path("public", name), store.path("private", name)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.pending: list[str] = []
        self.retry: asyncio.TimerHandle | None = None

    BACKLOG = 10000     # words kept while qmgr's socket is full; beyond, its scan catches up

    def send(self, word: str) -> None:
        """Queue one word; all words of one event-loop turn go in one datagram, so a
        burst of commits finished by one shared fsync wakes qmgr once."""
        if not self.pending and self.retry is None:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:          # no loop (a command-line tool): send now
                self.pending.append(word)
                self.flush()
                return
        self.pending.append(word)

    def flush(self) -> None:
        self.retry = None
        words, self.pending = self.pending, []
        data = " ".join(words).encode()
        while data:
            # a datagram stays under the socket's limit: split long bursts
            chunk, data = data[:60000], data[60000:]
            if data:
                cut = chunk.rfind(b" ")
                chunk, data = chunk[:cut], chunk[cut + 1:] + data
            if not self._send(chunk):
                self._later(chunk + (b" " + data if data else b""))
                return

    def _send(self, data: bytes) -> bool:
        """False: qmgr's socket is full for now (try again soon)."""
        for path in self.paths:
            try:
                self.sock.sendto(data, path)
                return True
            except BlockingIOError:
                # A burst filled qmgr's receive queue (net.unix.max_dgram_qlen is 10):
                # dropping the datagram would leave these messages for qmgr's next
                # scan of incoming/, seconds away. Send again in a moment.
                return False
            except OSError:
                continue    # no such socket (public/ or private/), or qmgr down: its scan picks the file up
        return True

    def _later(self, data: bytes) -> None:
        words = data.decode().split()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return                          # a command-line tool: qmgr's scan will find the file
        self.pending[:0] = words[-self.BACKLOG:]
        if self.retry is None:
            self.retry = loop.call_later(0.01, self.flush)


class Cleanup:
    def __init__(self, cfg, store: QueueStore) -> None:
        self.cfg = cfg
        self.store = store
        self.hostname = cfg.get("myhostname")
        self.mail_name = cfg.get("mail_name")
        self.sync = cfg.get_bool("fsync_queue")
        self.header_limit = cfg.get_int("header_size_limit")
        self.incoming = store.path("incoming")
        self.syncer = DirSyncer(self.incoming, self.sync)
        self.trigger = QmgrTrigger(store)
        resolver = Resolver(cfg)
        self.rewriter = Rewriter(cfg, lambda d: resolver.address_class(d) == LOCAL)
        self.header_checks = TableList(cfg.get("header_checks")).tables
        self.always_bcc = cfg.get("always_bcc").strip()
        self.sender_bcc = TableList(cfg.get("sender_bcc_maps")).tables
        self.recipient_bcc = TableList(cfg.get("recipient_bcc_maps")).tables
        self.body_checks = TableList(cfg.get("body_checks")).tables
        self.body_limit = cfg.get_int("body_checks_size_limit")
        self.filter_notices = "bounce" in [x.lower() for x in cfg.get_list("internal_mail_filter_classes")]
        self.myorigin = cfg.get("myorigin")
        self.remote_domain = cfg.get("remote_header_rewrite_domain")
        self.rewrite_clients = [x.lower() for x in cfg.get_list("local_header_rewrite_clients")]
        self.interfaces = {x.strip("[]") for x in cfg.get_list("inet_interfaces")}
        self._domain_cache: dict[str, str | None] = {}     # client address -> header_domain
        self._dates: tuple[int, str] = (-1, "")
        self.mynetworks = []
        for item in cfg.get_list("mynetworks"):
            try:
                self.mynetworks.append(ipaddress.ip_network(item.replace("[", "").replace("]", ""), strict=False))
            except ValueError:
                pass

    def header_domain(self, attrs: dict[str, str]) -> str | None:
        """What bare header addresses get, or None: headers are not rewritten
        (local_header_rewrite_clients, remote_header_rewrite_domain)."""
        addr = attrs.get("client_address", "")
        try:
            return self._domain_cache[addr]
        except KeyError:
            pass
        if len(self._domain_cache) >= 4096:
            self._domain_cache.clear()
        domain = self._domain_cache[addr] = self._header_domain(addr)
        return domain

    def _header_domain(self, addr: str) -> str | None:
        if not addr or "static:all" in self.rewrite_clients:
            return self.myorigin
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None:
            if "permit_inet_interfaces" in self.rewrite_clients and (
                    addr in self.interfaces or (ip.is_loopback and self.interfaces & {"all", "loopback-only"})
                    or ip.is_loopback and any(i.startswith("127.") or i == "::1" for i in self.interfaces)):
                return self.myorigin
            if "permit_mynetworks" in self.rewrite_clients and any(ip in n for n in self.mynetworks):
                return self.myorigin
        return self.remote_domain or None

    def date(self, when: float) -> str:
        """RFC 5322 date of `when` in local time (one formatting per second)."""
        sec = int(when)
        if self._dates[0] != sec:
            self._dates = (sec, email.utils.formatdate(sec, localtime=True))
        return self._dates[1]

    def open(self, queue_id: str, sender: str, recipients: list[tuple[str, dict[str, str]]],
             attrs: dict[str, str], arrival: float | None = None) -> "CleanupTxn":
        return CleanupTxn(self, queue_id, sender, recipients, attrs, arrival or time.time())


class CleanupTxn:
    def __init__(self, owner: Cleanup, queue_id: str, sender: str,
                 recipients: list[tuple[str, dict[str, str]]], attrs: dict[str, str], arrival: float) -> None:
        self.owner = owner
        self.queue_id = queue_id
        self.attrs = attrs
        self.arrival = arrival
        self.verdict = content_checks.Verdict()
        # smtpd's access rules (HOLD, REDIRECT) arrive as attributes; they act here
        # like the same header_checks actions. FILTER is read by qmgr.
        if attrs.get("hold"):
            self.verdict.hold = attrs["hold"]
        if attrs.get("redirect"):
            self.verdict.redirect = attrs["redirect"]
        # Notices (origin=bounce, 2bounce) skip header/body_checks unless
        # internal_mail_filter_classes has "bounce", as in Postfix: a bounce quotes
        # the very text the checks rejected.
        if attrs.get("origin") in ("bounce", "2bounce") and not owner.filter_notices:
            self.verdict.done = True
        self.refusal: R.Reply | None = None
        self.log_to = recipients[0][0] if recipients else ""
        self.log_from = sender
        try:
            sender, recipients = self.rewrite_envelope(sender, recipients)
        except TempFail as e:       # TableTempError, AliasLimitError: defer, never guess
            maillog.log.warning(f"{queue_id}: {maillog.esc(e.reason)}")
            self.refusal = R.Reply(451, "4.3.0", "Error: temporary lookup failure")
        self.sender = sender
        self.recipients = recipients
        self.writer = QueueFileWriter(owner.incoming, queue_id, owner.sync)
        self.envelope = qfile.encode_envelope(arrival, sender, recipients, attrs)
        self.writer.write(self.envelope)
        self.head: bytearray | None = bytearray()   # buffered until the header ends
        self.size = 0
        self.partial = b""          # a body line not yet complete (body_checks only)
        self.checked = 0            # body bytes inspected so far

    def rewrite_envelope(self, sender: str, recipients: list[tuple[str, dict[str, str]]]):
        o = self.owner
        rw = o.rewriter
        sender = rw.envelope_sender(sender)
        # New mail only: not the notices estafeta makes itself (Postfix: no automatic
        # BCC for internally generated mail, which could loop).
        auto_bcc = self.attrs.get("origin") not in ("bounce", "2bounce")
        bcc: list[str] = []
        if auto_bcc and o.always_bcc:
            bcc.append(o.always_bcc)
        if auto_bcc and o.sender_bcc and sender:
            bcc += rw.map_lookup(o.sender_bcc, sender, "") or []
        out: list[tuple[str, dict[str, str]]] = []
        seen: set[str] = set()
        for addr, params in recipients:
            canonical = rw.masquerade(rw.canonical(rw.qualify(addr), ENV_RECIPIENT), ENV_RECIPIENT)
            if auto_bcc and o.recipient_bcc:
                bcc += rw.map_lookup(o.recipient_bcc, canonical, "") or []
            for a in rw.virtual(canonical):
                if a.lower() in seen:
                    continue            # one copy per address (Postfix drops duplicates)
                seen.add(a.lower())
                p = params
                if a != addr and "o" not in params:
                    p = {**params, "o": addr}
                out.append((a, p))
        for b in bcc:
            # Postfix 2.3+: as if sent with NOTIFY=NONE, so the sender never hears of it.
            for a in rw.envelope_recipient(b):
                if a.lower() not in seen:
                    seen.add(a.lower())
                    out.append((a, {proto_dsn.NOTIFY: "NEVER"}))
        return sender, out

    def _log_check(self, action: str, where: str, line: str, text: str) -> None:
        """Postfix's shape: `QID: reject: header Subject: x from host[ip]; from=<s> to=<r>
        proto=ESMTP helo=<h>: 5.7.1 text`."""
        a = self.attrs
        client = f"{a.get('client_name', 'unknown')}[{a['client_address']}]" if a.get("client_address") else "local"
        tail = f": {maillog.esc(text)}" if text else ""
        # Postfix names no protocol for local submissions (pickup): "from local; from=<s> to=<r>: text"
        proto = f" proto={a['protocol']}" if a.get("protocol") and a["protocol"] != "local" else ""
        helo = f" helo=<{maillog.esc(a['helo_name'])}>" if a.get("helo_name") else ""
        line = line.replace("\n", " ")
        maillog.log.info(f"{self.queue_id}: {action}: {where} {maillog.esc(line[:200])} from {client}; "
                         f"from=<{maillog.esc(self.log_from)}> to=<{maillog.esc(self.log_to)}>{proto}{helo}{tail}")

    def write(self, chunk: bytes) -> None:
        """Message content, LF line endings, dot-unstuffed."""
        self.size += len(chunk)
        if self.head is None:
            self._body(chunk)
            return
        self.head += chunk
        end = self.head.find(b"\n\n")
        if self.head.startswith(b"\n"):
            end = -1
            self._headers_done(0)
        elif end >= 0:
            self._headers_done(end + 1)
        elif len(self.head) > self.owner.header_limit:
            self._headers_done(len(self.head))

    def _body(self, chunk: bytes) -> None:
        """Body bytes to the file; through body_checks (whole lines) while configured,
        the message not yet decided and under body_checks_size_limit."""
        o = self.owner
        if not o.body_checks or self.verdict.done or self.checked >= o.body_limit:
            if self.partial:
                chunk, self.partial = self.partial + chunk, b""
            if not (self.verdict.reject or self.verdict.discard):
                self.writer.write(chunk)
            return
        data = self.partial + chunk if self.partial else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data
            if len(data) > 65536:           # no newline for long: check it as one line
                self.partial = b""
                self._check_lines([data], False)
            return
        self.partial = data[cut + 1:]
        self._check_lines(data[:cut].split(b"\n"), True)

    def _check_lines(self, lines: list[bytes], newline: bool) -> None:
        o = self.owner
        out = bytearray()
        nl = b"\n" if newline else b""
        for line in lines:
            if self.verdict.done or self.checked >= o.body_limit:
                out += line + nl
                continue
            self.checked += len(line) + 1
            try:
                res = content_checks.apply(o.body_checks, line.decode("utf-8", "surrogateescape"), "body",
                                           self.verdict, self._log_check)
            except TableTempError as e:
                self._lookup_failed(e)
                res = []
            for r in res:
                out += r.encode("utf-8", "surrogateescape") + nl
        if not (self.verdict.reject or self.verdict.discard):
            self.writer.write(bytes(out))

    def _lookup_failed(self, e: Exception) -> None:
        maillog.log.warning(f"{self.queue_id}: header/body_checks lookup failed: {maillog.esc(str(e))}")
        self.refusal = R.Reply(451, "4.3.0", "Error: temporary lookup failure")
        self.verdict.done = True

    def _inspect_headers(self, head: bytes) -> bytes:
        """header_checks and address rewriting over the logical headers."""
        o = self.owner
        domain = o.header_domain(self.attrs)
        if not o.header_checks and domain is None:
            return head
        logical: list[bytes] = []
        for line in head.splitlines(keepends=True):
            if logical and line[:1] in (b" ", b"\t"):
                logical[-1] += line
            else:
                logical.append(line)
        out = bytearray()
        for raw in logical:
            text = raw.decode("utf-8", "surrogateescape")
            eol = "\n" if text.endswith("\n") else ""
            items = [(text[:-1] if eol else text, True)]
            if o.header_checks and not self.verdict.done:
                try:
                    res = content_checks.apply(o.header_checks, items[0][0], "header", self.verdict, self._log_check)
                except TableTempError as e:
                    self._lookup_failed(e)
                    res = [items[0][0]]
                # a PREPENDed line is neither inspected nor rewritten (header_checks(5))
                items = [(r, i == len(res) - 1) for i, r in enumerate(res)]
            for value, rewrite in items:
                if rewrite and domain is not None:
                    name, colon, rest = value.partition(":")
                    if colon:
                        try:
                            new = o.rewriter.header(name, rest, domain)
                        except TempFail as e:
                            self._lookup_failed(e)
                            new = None
                        if new is not None:
                            value = f"{name}:{new}"
                out += (value + eol).encode("utf-8", "surrogateescape")
                eol = eol or "\n"
        return bytes(out)

    def _headers_done(self, end: int) -> None:
        head = bytes(self.head[:end])  # type: ignore[index]
        rest = bytes(self.head[end:])  # type: ignore[index]
        self.head = None
        head = self._inspect_headers(head)
        present = set()
        for line in head.split(b"\n"):
            if line and line[:1] not in b" \t":
                present.add(line.split(b":", 1)[0].strip().lower())
        w = self.writer
        w.write(self._received())
        w.write(head)
        if b"message-id" not in present:
            mid = f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(self.arrival))}.{self.queue_id}@{self.owner.hostname}>"
            w.write(f"Message-Id: {mid}\n".encode())
        else:
            mid = _header_value(head, b"message-id")
        if b"date" not in present:
            w.write(f"Date: {self.owner.date(self.arrival)}\n".encode())
        if b"from" not in present:
            w.write(f"From: <{self.sender or 'MAILER-DAEMON'}>\n".encode("utf-8", "surrogateescape"))
        if rest.startswith(b"\n"):
            w.write(b"\n")             # the empty line ending the header is no body line
            rest = rest[1:]
        if rest:
            self._body(rest)
        maillog.log.info(f"{self.queue_id}: message-id={maillog.esc(mid)}")

    def _received(self) -> bytes:
        a = self.attrs
        helo = a.get("helo_name", "")
        client = f"{a.get('client_name', 'unknown')} [{a.get('client_address', '')}]"
        proto = a.get("protocol", "ESMTP")
        frm = f"from {helo} ({client})\n\t" if a.get("client_address") else ""
        forr = f"\n\tfor <{self.recipients[0][0]}>" if len(self.recipients) == 1 else ""
        date = self.owner.date(self.arrival)
        text = f"Received: {frm}by {self.owner.hostname} ({self.owner.mail_name}) with {proto} id {self.queue_id}{forr};\n\t{date}\n"
        return text.encode("utf-8", "surrogateescape")

    async def commit(self) -> str:
        """Durable in incoming/ (or hold/) when this returns "queued" (or "held");
        "discarded": nothing was queued and the client is told 250 all the same.
        Raises CleanupRefused (REJECT, failed lookup: nothing queued) or OSError
        (caller: 451)."""
        if self.head is not None:
            self._headers_done(len(self.head))
        if self.partial:
            data, self.partial = self.partial, b""
            if self.owner.body_checks and not self.verdict.done and self.checked < self.owner.body_limit:
                self._check_lines([data], False)
            elif not (self.verdict.reject or self.verdict.discard):
                self.writer.write(data)
        v = self.verdict
        if self.refusal is not None or v.reject:
            self.writer.abort()
            if self.refusal is None:
                code = 450 if v.reject.startswith("4") else 550
                dsn, _, text = v.reject.partition(" ")
                self.refusal = R.Reply(code, dsn, text)
            raise CleanupRefused(self.refusal)
        if v.discard:
            self.writer.abort()
            maillog.log.info(f"{self.queue_id}: discarded: {maillog.esc(v.discard)}")
            return "discarded"
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._commit_blocking)
        except BaseException:
            self.writer.abort()
            raise
        if v.hold:
            return "held"      # qmgr does not see it until it is released
        self.owner.trigger.send(self.queue_id)
        return "queued"

    def _commit_blocking(self) -> None:
        """Everything that waits for the disk, in one thread: rewrite the envelope
        if an action changed it, write, fsync, rename, then share a directory fsync."""
        v = self.verdict
        if v.redirect or v.filter or v.bcc:
            self._new_envelope()
        if v.hold:
            hold = self.owner.store.path("hold")
            self.writer.final = os.path.join(hold, self.queue_id)
            self.writer.commit()
            if self.owner.sync:
                fsync_dir(hold)
        else:
            self.writer.commit()
            self.owner.syncer.sync_blocking()

    def _new_envelope(self) -> None:
        """REDIRECT, FILTER, BCC decided after the envelope was written: write the
        file again with the new records (blocking; rare)."""
        v = self.verdict
        rcpts = list(self.recipients)
        attrs = dict(self.attrs)
        if v.redirect:
            rcpts = [(a, {"o": self.recipients[0][0]} if self.recipients else {})
                     for a in self.owner.rewriter.envelope_recipient(v.redirect)]
        elif v.filter:
            attrs["filter"] = v.filter       # qmgr routes every recipient through it
        have = {a.lower() for a, _ in rcpts}
        for b in v.bcc:
            if b.lower() not in have:
                rcpts.append((b, {proto_dsn.NOTIFY: "NEVER"}))
        old = len(self.envelope)
        self.recipients, self.attrs = rcpts, attrs
        self.envelope = qfile.encode_envelope(self.arrival, self.sender, rcpts, attrs)
        self.writer.rewrite(old, self.envelope)

    def abort(self) -> None:
        self.writer.abort()


def _header_value(head: bytes, name: bytes) -> str:
    for line in head.split(b"\n"):
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip().decode("utf-8", "replace")
    return ""
