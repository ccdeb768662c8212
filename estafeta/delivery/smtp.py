"""smtp and lmtp: delivery to another mail server (SPEC S5, Postfix smtp(8) / lmtp(8)).

Owns next-hop parsing, the MX walk, the SMTP/LMTP conversation with its per-stage
timeouts, opportunistic or mandatory STARTTLS, and the connection cache. The
remote server is untrusted: its replies go through proto/smtp_client.py (bounded
reply sizes) and reach the log only through maillog.esc.

Next hops, as Postfix writes them:
    [host]:port   no MX lookup (also [192.0.2.1])    host:port / domain   MX lookup
    unix:/path    LMTP over a unix socket           inet:host:port       LMTP over TCP
LMTP never looks up MX records.

Outcomes, per recipient, in request order: 2xx sent, 4xx deferred, 5xx bounced,
with the remote reply worded as Postfix words it ("host mx[192.0.2.7] said: 550
5.1.1 ... (in reply to RCPT TO command)"). A failure of the whole session before
any recipient was answered (connect, greeting, EHLO, STARTTLS, 4xx to MAIL) moves
on to the next MX host; once DATA content was sent nothing is retried elsewhere,
so a lost final reply can never deliver the message twice in one attempt.
8-bit mail to a server without 8BITMIME has its 8-bit parts converted to
quoted-printable first (core/mime8to7.py; disable_mime_output_conversion).
Next: proto/smtp_client.py (the codec), io/dns.py (MX), daemons/smtp.py (the service).
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import time
from dataclasses import dataclass

from ..core import maillog, mime8to7
from ..core.maillog import esc
from ..io.dns import DnsPermError, DnsTempError, NullMX, Resolver
from ..io.interfaces import LOOPBACK, local_addresses, normalise
from ..proto import dsn
from ..proto import smtp_client as C
from ..proto.replies import Reply
from . import base

TLS_LEVELS = ("", "none", "may", "encrypt", "verify", "secure")
OWN_ADDRESS_TTL = 300.0      # how long the list of this machine's addresses is kept


@dataclass(frozen=True, slots=True)
class Nexthop:
    kind: str          # "inet" or "unix"
    host: str          # host or domain name, address literal, or socket path
    port: int
    mx: bool           # look up MX records for `host`


def parse_nexthop(nexthop: str, default_port: int, lmtp: bool = False) -> Nexthop:
    """Postfix next-hop syntax; ValueError for nonsense."""
    s = nexthop.strip()
    if s.startswith("unix:"):
        if not lmtp or len(s) == 5:
            raise ValueError(f"bad next hop {nexthop!r}")
        return Nexthop("unix", s[5:], 0, False)
    if s.startswith("inet:"):
        s = s[5:]
    port = default_port
    if s.startswith("["):
        host, close, rest = s[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"bad next hop {nexthop!r}")
        if rest:
            port = _port(rest[1:], nexthop)
        mx = False
    else:
        host = s
        if s.count(":") == 1:
            host, p = s.split(":")
            port = _port(p, nexthop)
        mx = not lmtp and not _is_ip(host)
    if not host:
        raise ValueError(f"bad next hop {nexthop!r}: no host")
    return Nexthop("inet", host.lower().rstrip("."), port, mx)


def _port(text: str, nexthop: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in next hop {nexthop!r}")
    return int(text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Fallthrough(Exception):
    """The session failed as a whole, temporarily: try the next server."""

    def __init__(self, reason: str, dsn: str = "4.4.2", *, plain_retry: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn
        self.plain_retry = plain_retry   # TLS failed at level may: try this server again without it


class Timeouts:
    def __init__(self, cfg, p: str) -> None:
        g = cfg.get_duration
        self.connect = g(f"{p}_connect_timeout")
        self.helo = g("lmtp_lhlo_timeout" if p == "lmtp" else "smtp_helo_timeout")
        self.starttls = g(f"{p}_starttls_timeout")
        self.mail = g(f"{p}_mail_timeout")
        self.rcpt = g(f"{p}_rcpt_timeout")
        self.data_init = g(f"{p}_data_init_timeout")
        self.data_xfer = g(f"{p}_data_xfer_timeout")
        self.data_done = g(f"{p}_data_done_timeout")
        self.rset = g(f"{p}_rset_timeout")
        self.quit = g(f"{p}_quit_timeout")


class Session:
    """One open connection to a server, after the greeting and EHLO."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, addr: str, port: int, relay: str) -> None:
        self.reader, self.writer = reader, writer
        self.host, self.addr, self.port = host, addr, port
        self.relay = relay                      # mx.example.org[192.0.2.7]:25
        self.where = relay.rsplit(":", 1)[0] if port else relay   # mx.example.org[192.0.2.7]
        self.codec = C.ClientCodec()
        self.ext = C.Extensions()
        self.tls = False
        self.created = time.monotonic()
        self.messages = 0

    async def read_reply(self, timeout: float, stage: str) -> Reply:
        try:
            # With PIPELINING, replies often arrive together: one already read costs
            # no timer (a timeout context per reply was 12% of the agent's CPU).
            if (reply := self.codec.next_reply()) is not None:
                return reply
            async with asyncio.timeout(timeout or None):
                while (reply := self.codec.next_reply()) is None:
                    if self.codec.closed:
                        raise Fallthrough(f"lost connection with {self.where} while {stage}")
                    self.codec.receive_data(await self.reader.read(65536))
                return reply
        except TimeoutError:
            raise Fallthrough(f"conversation with {self.where} timed out while {stage}") from None
        except C.ReplyError as e:
            raise Fallthrough(f"protocol error with {self.where} while {stage}: {esc(str(e))}", "4.5.0") from None
        except (ConnectionError, OSError) as e:
            raise Fallthrough(f"lost connection with {self.where} while {stage}: {e.strerror or e}") from None

    async def send(self, data: bytes, timeout: float, stage: str) -> None:
        try:
            self.writer.write(data)
            if not self.writer.transport.get_write_buffer_size():
                await self.writer.drain()   # all in the socket: returns at once (or raises)
                return
            async with asyncio.timeout(timeout or None):
                await self.writer.drain()
        except TimeoutError:
            raise Fallthrough(f"conversation with {self.where} timed out while {stage}") from None
        except (ConnectionError, OSError) as e:
            raise Fallthrough(f"lost connection with {self.where} while {stage}: {e.strerror or e}") from None

    async def quit(self, timeout: float) -> None:
        try:
            self.writer.write(C.QUIT)
            async with asyncio.timeout(min(timeout, 5.0) or None):
                await self.writer.drain()
                await self.read_reply(0, "sending QUIT")
        except (Exception, asyncio.CancelledError):
            pass
        self.abort()

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


def said(s: Session, reply: Reply, command: str) -> str:
    return f"host {s.where} said: {esc(C.reply_text(reply), 400)} (in reply to {command} command)"


class ConnectionCache:
    """Idle sessions per next hop (seed 8.2.4: Sendmail's connection caching).

    A session waits here at most `idle_limit` seconds for the next message and is
    reused for at most `reuse_limit` seconds after it was opened.
    """

    def __init__(self, idle_limit: float, reuse_limit: float, quit_timeout: float) -> None:
        self.idle_limit = idle_limit
        self.reuse_limit = reuse_limit
        self.quit_timeout = quit_timeout
        self.idle: dict[object, list[tuple[Session, asyncio.TimerHandle]]] = {}

    def put(self, key: object, s: Session) -> None:
        if self.idle_limit <= 0 or time.monotonic() - s.created > self.reuse_limit:
            asyncio.ensure_future(s.quit(self.quit_timeout))
            return
        handle = asyncio.get_running_loop().call_later(self.idle_limit, self._expire, key, s)
        self.idle.setdefault(key, []).append((s, handle))

    def _expire(self, key: object, s: Session) -> None:
        lst = self.idle.get(key, [])
        for i, (x, _) in enumerate(lst):
            if x is s:
                del lst[i]
                asyncio.ensure_future(s.quit(self.quit_timeout))
                break
        if not lst:
            self.idle.pop(key, None)

    def take(self, key: object) -> Session | None:
        lst = self.idle.get(key)
        while lst:
            s, handle = lst.pop()
            handle.cancel()
            if time.monotonic() - s.created <= self.reuse_limit and not s.codec.closed \
                    and not s.reader.at_eof():
                if not lst:
                    self.idle.pop(key, None)
                return s
            s.abort()
        self.idle.pop(key, None)
        return None

    async def close(self) -> None:
        sessions = []
        for lst in self.idle.values():
            for s, handle in lst:
                handle.cancel()
                sessions.append(s)
        self.idle.clear()
        await asyncio.gather(*(s.quit(self.quit_timeout) for s in sessions), return_exceptions=True)


class SmtpAgent:
    def __init__(self, cfg, *, lmtp: bool = False, resolver: Resolver | None = None) -> None:
        p = "lmtp" if lmtp else "smtp"
        self.lmtp = lmtp
        self.name = p
        self.t = Timeouts(cfg, p)
        self.helo_name = cfg.get("lmtp_lhlo_name" if lmtp else "smtp_helo_name")
        self.myhostname = cfg.get("myhostname")
        self.bind_address = cfg.get(f"{p}_bind_address")
        self.default_port = cfg.get_int(f"{p}_tcp_port")
        self.tls_level = cfg.get(f"{p}_tls_security_level").strip().lower()
        if self.tls_level not in TLS_LEVELS:
            maillog.log.warning(f"unknown {p}_tls_security_level {self.tls_level!r}; using encrypt")
            self.tls_level = "encrypt"
        self.tls_cafile = cfg.get(f"{p}_tls_CAfile")
        self.skip_5xx_greeting = cfg.get_bool("smtp_skip_5xx_greeting")
        self.mime_conversion = not cfg.get_bool("disable_mime_output_conversion")
        # this machine, for mail loop detection: inet_interfaces, then proxy_interfaces
        # ("all" means every interface address only in inet_interfaces)
        self.own_interfaces = [x.lower() for x in cfg.get_list("inet_interfaces")] + \
            [x.lower() for x in cfg.get_list("proxy_interfaces") if x.lower() not in ("all", "loopback-only")]
        self._own: tuple[float, frozenset[str]] | None = None
        protocols = {x.lower() for x in cfg.get_list("inet_protocols")}
        self.families = (("A",) if "ipv4" in protocols and "ipv6" not in protocols
                         else ("AAAA",) if protocols == {"ipv6"} else ("A", "AAAA"))
        self.resolver = resolver or Resolver.from_config(cfg)
        self.cache = ConnectionCache(cfg.get_duration(f"{p}_connection_cache_time_limit"),
                                     cfg.get_duration(f"{p}_connection_reuse_time_limit"), self.t.quit)

    async def close(self) -> None:
        await self.cache.close()

    # -- the request ----------------------------------------------------------------

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        try:
            message = _read_small(req.queue_file, req.message_offset)
            if message is None:
                message = await asyncio.to_thread(_read_message, req.queue_file, req.message_offset)
        except OSError as e:
            results = [base.RecipientResult(r.address, base.DEFERRED, "4.3.0",
                                            f"cannot read queue file: {e.strerror}", "none")
                       for r in req.recipients]
        else:
            results = await self.deliver_message(req, message)
        for r in results:
            maillog.log.info(base.delivery_log_line(req, r, started, r.relay or "none"))
        return results

    async def deliver_message(self, req: base.DeliveryRequest, message: bytes) -> list[base.RecipientResult]:
        addrs = [r.address for r in req.recipients]

        def everyone(status: str, dsn: str, reason: str, relay: str = "none") -> list[base.RecipientResult]:
            return [base.RecipientResult(a, status, dsn, reason, relay) for a in addrs]

        try:
            nh = parse_nexthop(req.nexthop, self.default_port, self.lmtp)
        except ValueError as e:
            return everyone(base.DEFERRED, "4.3.5", str(e))
        key = (nh.kind, nh.host, nh.port, nh.mx)
        # A cached session first: RSET proves it is still alive (RFC 5321 4.1.1.5).
        while (s := self.cache.take(key)) is not None:
            try:
                await s.send(C.RSET, self.t.rset, "sending RSET")
                if (await s.read_reply(self.t.rset, "receiving the RSET reply")).code != 250:
                    raise Fallthrough("RSET refused")
            except Fallthrough:
                s.abort()
                continue
            try:
                return await self._transaction(s, key, req, message, addrs)
            except Fallthrough:
                s.abort()       # the server went away while idle: start afresh
                break
        try:
            servers = await self._servers(nh)
        except _Final as f:          # the mail would loop back to this machine
            return everyone(f.status, f.dsn, f.reason, f.relay)
        except NullMX as e:
            return everyone(base.BOUNCED, e.dsn, e.reason)
        except DnsPermError as e:
            return everyone(base.BOUNCED, e.dsn, e.reason)
        except DnsTempError as e:
            return everyone(base.DEFERRED, e.dsn, e.reason)
        if not servers:
            return everyone(base.BOUNCED, "5.4.4", f"Host or domain name not found. Name service error "
                                                   f"for name={nh.host} type=A: Host found but no data record of requested type")
        last = Fallthrough(f"no server for {nh.host}", "4.4.1")
        for host, addr in servers:
            use_tls = True
            for _ in range(2):
                try:
                    s = await self._open(nh, host, addr, use_tls)
                except Fallthrough as e:
                    last = e
                    if e.plain_retry and use_tls:
                        use_tls = False
                        continue
                    break
                except _Final as f:
                    return everyone(f.status, f.dsn, f.reason, f.relay)
                try:
                    return await self._transaction(s, key, req, message, addrs)
                except Fallthrough as e:
                    s.abort()
                    last = e
                    break
        return everyone(base.DEFERRED, last.dsn, last.reason)

    async def _servers(self, nh: Nexthop) -> list[tuple[str, str]]:
        """(host name, address) pairs in the order to try (RFC 5321 5.1). Raises
        _Final when the mail would loop back to this machine (see _loop_check)."""
        if nh.kind == "unix":
            return [(nh.host, nh.host)]
        if _is_ip(nh.host):
            return await self._loop_check(nh, [(0, nh.host, nh.host)], 0)
        if not nh.mx:
            return await self._loop_check(
                nh, [(0, nh.host, a) for a in await self.resolver.addresses(nh.host, self.families)], 0)
        mxs = await self.resolver.mx(nh.host)
        if not mxs:        # no MX: the domain itself is the mail server (implicit MX)
            return await self._loop_check(
                nh, [(0, nh.host, a) for a in await self.resolver.addresses(nh.host, self.families)], 0)
        out: list[tuple[int, str, str]] = []
        first_error: Exception | None = None
        for m in mxs:
            try:
                out.extend((m.preference, m.host, a) for a in await self.resolver.addresses(m.host, self.families))
            except (DnsTempError, DnsPermError) as e:
                first_error = first_error or e
        if not out and first_error is not None:
            # An MX host that does not resolve is a configuration error at the
            # destination; it may be fixed, so defer rather than bounce.
            raise DnsTempError(first_error.reason, "4.4.3")
        return await self._loop_check(nh, out, mxs[0].preference)

    async def _loop_check(self, nh: Nexthop, servers: list[tuple[int, str, str]],
                          best_pref: int) -> list[tuple[str, str]]:
        """Postfix's smtp_find_self/smtp_truncate_self. When one of the servers is
        this machine (an address of inet_interfaces or proxy_interfaces), only MX
        hosts more preferred than it are tried: the others would send the mail back
        to us. None left: "mail for X loops back to myself" (5.4.6, bounced), or,
        when a more preferred MX exists in DNS but has no address, "unable to find
        primary relay for X" (4.4.4, deferred). As in Postfix, only SMTP on port 25
        (or smtp_tcp_port) is checked: a content filter on [127.0.0.1]:10025 is no
        loop, and LMTP never is."""
        if self.lmtp or nh.kind != "inet" or nh.port not in (25, self.default_port) or not servers:
            return [(h, a) for _, h, a in servers]
        own = await self._own_addresses()
        mine = [p for p, _, a in servers if normalise(a) in own]
        if not mine:
            return [(h, a) for _, h, a in servers]
        kept = [(h, a) for p, h, a in servers if p < mine[0]]
        if not kept:
            if best_pref != servers[0][0]:
                raise _Final(base.DEFERRED, "4.4.4", f"unable to find primary relay for {nh.host}", "none")
            raise _Final(base.BOUNCED, "5.4.6", f"mail for {nh.host} loops back to myself", "none")
        return kept

    async def _own_addresses(self) -> frozenset[str]:
        """The addresses of inet_interfaces ("all": every interface address) and
        proxy_interfaces; host names are resolved. Kept for OWN_ADDRESS_TTL."""
        now = time.monotonic()
        if self._own is not None and now - self._own[0] < OWN_ADDRESS_TTL:
            return self._own[1]
        own: set[str] = set()
        complete = True
        for item in self.own_interfaces:
            if item == "all":
                own |= await asyncio.to_thread(local_addresses)
            elif item == "loopback-only":
                own |= LOOPBACK
            elif _is_ip(normalise(item)):
                own.add(normalise(item))
            else:
                try:
                    own.update(normalise(a) for a in await self.resolver.addresses(item, self.families))
                except (DnsTempError, DnsPermError) as e:
                    maillog.log.warning(f"cannot find the addresses of {esc(item)} (inet_interfaces, "
                                        f"proxy_interfaces) for mail loop detection: {esc(e.reason)}")
                    complete = False
        result = frozenset(own)
        if complete:
            self._own = (now, result)
        return result

    # -- opening a session ----------------------------------------------------------

    async def _open(self, nh: Nexthop, host: str, addr: str, use_tls: bool) -> Session:
        if nh.kind == "unix":
            relay = where = f"{self.myhostname}[{nh.host}]"
            connect = asyncio.open_unix_connection(nh.host)
        else:
            where = f"{host}[{addr}]"
            relay = f"{where}:{nh.port}"
            local = (self.bind_address, 0) if self.bind_address else None
            connect = asyncio.open_connection(addr, nh.port, local_addr=local)
        try:
            async with asyncio.timeout(self.t.connect or None):
                reader, writer = await connect
        except TimeoutError:
            raise Fallthrough(f"connect to {relay}: Connection timed out", "4.4.1") from None
        except OSError as e:
            # asyncio words it "Connect call failed (...)"; Postfix says what errno says.
            raise Fallthrough(f"connect to {relay}: {os.strerror(e.errno) if e.errno else e}", "4.4.1") from None
        s = Session(reader, writer, host, addr, nh.port if nh.kind == "inet" else 0, relay)
        try:
            greeting = await s.read_reply(self.t.helo, "receiving the initial server greeting")
            if greeting.code != 220:
                text = f"host {s.where} refused to talk to me: {esc(C.reply_text(greeting), 400)}"
                if greeting.code >= 500 and not self.skip_5xx_greeting:
                    raise _Final(base.BOUNCED, C.reply_dsn(greeting), text, relay)
                raise Fallthrough(text, C.reply_dsn(greeting) if greeting.code < 500 else "4.0.0")
            await self._hello(s)
            if use_tls and self.tls_level not in ("", "none"):
                await self._starttls(s)
            return s
        except BaseException:
            s.abort()
            raise

    async def _hello(self, s: Session) -> None:
        verb = "LHLO" if self.lmtp else "EHLO"
        await s.send(C.command(verb, self.helo_name), self.t.helo, f"sending {verb}")
        r = await s.read_reply(self.t.helo, f"receiving the {verb} reply")
        if r.code == 250:
            s.ext = C.parse_extensions(r)
            return
        if r.code < 500 or self.lmtp:
            self._fail_session(s, r, verb)
        # RFC 5321 3.2: a server that does not know EHLO gets HELO.
        await s.send(C.helo(self.helo_name), self.t.helo, "sending HELO")
        r = await s.read_reply(self.t.helo, "receiving the HELO reply")
        if r.code != 250:
            self._fail_session(s, r, "HELO")
        s.ext = C.Extensions()

    def _fail_session(self, s: Session, r: Reply, command: str) -> None:
        if r.code >= 500:
            raise _Final(base.BOUNCED, C.reply_dsn(r), said(s, r, command), s.relay)
        raise Fallthrough(said(s, r, command), C.reply_dsn(r))

    async def _starttls(self, s: Session) -> None:
        level = self.tls_level
        if not s.ext.starttls:
            if level == "may":
                return
            raise Fallthrough(f"TLS is required, but was not offered by host {s.where}", "4.7.4")
        await s.send(C.STARTTLS, self.t.starttls, "sending STARTTLS")
        r = await s.read_reply(self.t.starttls, "receiving the STARTTLS reply")
        if r.code != 220:
            if level == "may":
                return
            raise Fallthrough(said(s, r, "STARTTLS"), "4.7.4")
        if s.codec._buf or s.reader._buffer:   # type: ignore[attr-defined]
            # Plaintext after the 220 would be read as if it came over TLS: the
            # STARTTLS response injection (CVE-2011-0411 class). Refuse the session.
            raise Fallthrough(f"host {s.where} sent data after the STARTTLS reply", "4.7.0")
        ctx = self._tls_context()
        try:
            await s.writer.start_tls(ctx, server_hostname=s.host if level in ("verify", "secure") else None,
                                     ssl_handshake_timeout=self.t.starttls or None)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as e:
            raise Fallthrough(f"TLS handshake with {s.where} failed: {e}", "4.7.5",
                              plain_retry=(level == "may")) from None
        s.tls = True
        s.codec = C.ClientCodec()
        obj = s.writer.get_extra_info("ssl_object")
        if obj is not None:
            maillog.log.info(f"{'Verified' if level in ('verify', 'secure') else 'Anonymous'} TLS connection "
                             f"established to {s.relay}: {obj.version()} with cipher {obj.cipher()[0]}")
        await self._hello(s)     # RFC 3207 4.2: forget what was learned before TLS

    def _tls_context(self) -> ssl.SSLContext:
        if self.tls_level in ("verify", "secure"):
            ctx = ssl.create_default_context(cafile=self.tls_cafile or None)
            return ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    # -- one message -----------------------------------------------------------------

    async def _transaction(self, s: Session, key: object, req: base.DeliveryRequest, message: bytes,
                           addrs: list[str]) -> list[base.RecipientResult]:
        """Run MAIL/RCPT/DATA on an open session. Raises Fallthrough only while no
        recipient has an answer; returns one result per recipient otherwise."""
        def everyone(status: str, dsn: str, reason: str) -> list[base.RecipientResult]:
            return [base.RecipientResult(a, status, dsn, reason, s.relay) for a in addrs]

        ext = s.ext
        if not ext.eightbitmime and self.mime_conversion and not message.isascii() \
                and not mime8to7.header_8bit(message):
            # RFC 6152 3 / RFC 1652: no 8BITMIME, so 8-bit parts go quoted-printable
            # (Postfix: disable_mime_output_conversion = no). A message with 8-bit
            # headers (SMTPUTF8) cannot be downgraded: it goes as it is.
            message = (await asyncio.to_thread(mime8to7.downgrade, message) if len(message) > 65536
                       else mime8to7.downgrade(message))
        size = len(message) + message.count(b"\n")     # CRLF size, as RFC 1870 counts it
        if ext.size and size > ext.size:
            self.cache.put(key, s)
            return everyone(base.BOUNCED, "5.3.4", f"message size {size} exceeds size limit {ext.size} "
                                                   f"of server {s.where}")
        needs_utf8 = not (req.sender.isascii() and all(a.isascii() for a in addrs))
        if needs_utf8 and not ext.smtputf8:
            self.cache.put(key, s)
            return everyone(base.BOUNCED, "5.6.7", f"SMTPUTF8 is required, but was not offered by host {s.where}")
        eight = not message.isascii()
        try:
            mail = C.mail_from(req.sender, size=size if ext.size is not None else None,
                               body="8BITMIME" if eight and ext.eightbitmime else "",
                               smtputf8=needs_utf8, extra=dsn_mail_params(req) if ext.dsn else ())
            rcpts = [C.rcpt_to(a, dsn_rcpt_params(rr) if ext.dsn else ()) for a, rr in zip(addrs, req.recipients)]
        except ValueError as e:
            self.cache.put(key, s)
            return everyone(base.BOUNCED, "5.1.3", f"bad address syntax: {e}")
        results: list[base.RecipientResult | None] = [None] * len(addrs)
        accepted: list[int] = []
        if ext.pipelining:
            # RFC 2920 3.1: MAIL, RCPT and DATA may all go in one write.
            await s.send(mail + b"".join(rcpts) + C.DATA, self.t.mail, "sending MAIL FROM")
        else:
            await s.send(mail, self.t.mail, "sending MAIL FROM")
        r = await s.read_reply(self.t.mail, "receiving the MAIL FROM reply")
        if r.code != 250:
            s.abort()     # pipelined replies to RCPT and DATA may follow: do not resync, close
            if r.code < 500:
                raise Fallthrough(said(s, r, "MAIL FROM"), C.reply_dsn(r))
            return everyone(base.BOUNCED, C.reply_dsn(r), said(s, r, "MAIL FROM"))
        for i, a in enumerate(addrs):
            if not ext.pipelining:
                await s.send(rcpts[i], self.t.rcpt, "sending RCPT TO")
            r = await s.read_reply(self.t.rcpt, "receiving the RCPT TO reply")
            if r.code in (250, 251):
                accepted.append(i)
            else:
                results[i] = base.RecipientResult(a, base.DEFERRED if r.code < 500 else base.BOUNCED,
                                                  C.reply_dsn(r), said(s, r, "RCPT TO"), s.relay)
        if not ext.pipelining and not accepted:
            self.cache.put(key, s)
            return [r for r in results if r is not None]
        if not ext.pipelining:
            await s.send(C.DATA, self.t.data_init, "sending DATA")
        try:
            r = await s.read_reply(self.t.data_init, "receiving the DATA reply")
        except Fallthrough as e:
            return self._fill(results, addrs, e.dsn, e.reason, s.relay)
        if r.code != 354:
            if not accepted:     # RFC 2920: DATA refused because no RCPT was accepted
                self.cache.put(key, s)
                return [x for x in results if x is not None]
            s.abort()
            st = base.DEFERRED if r.code < 500 else base.BOUNCED
            return self._fill(results, addrs, C.reply_dsn(r), said(s, r, "DATA"), s.relay, st)
        if not accepted:
            s.abort()     # a 354 with no recipients: the server is confused; do not send content
            return [x for x in results if x is not None]
        try:
            await s.send(C.message_wire_bytes(message), self.t.data_xfer, "sending message body")
            for n, i in enumerate(accepted if self.lmtp else [None]):
                r = await s.read_reply(self.t.data_done, "receiving the end of data reply")
                # RFC 2033 4.2: LMTP answers once per accepted recipient, in order.
                for j in ([i] if i is not None else accepted):
                    st = base.SENT if r.code == 250 else base.DEFERRED if r.code < 500 else base.BOUNCED
                    reason = esc(C.reply_text(r), 400) if st == base.SENT else said(s, r, "end of DATA")
                    results[j] = base.RecipientResult(addrs[j], st, C.reply_dsn(r), reason, s.relay)
        except Fallthrough as e:
            # The content may have arrived: defer (a duplicate later beats a loss).
            s.abort()
            return self._fill(results, addrs, e.dsn, e.reason, s.relay)
        s.messages += 1
        self.cache.put(key, s)
        # Who reports success from here on (RFC 3461 5.2.2, 5.2.3): the next hop when
        # it offers DSN, else we, saying "relayed"; an LMTP server delivers.
        action = "relayed-dsn" if ext.dsn else "" if self.lmtp else "relayed"
        return [base.RecipientResult(x.address, x.status, x.dsn, x.reason, x.relay, action)
                if x.status == base.SENT else x for x in results if x is not None]

    @staticmethod
    def _fill(results: list[base.RecipientResult | None], addrs: list[str], dsn: str, reason: str,
              relay: str, status: str = base.DEFERRED) -> list[base.RecipientResult]:
        return [r if r is not None else base.RecipientResult(a, status, dsn, reason, relay)
                for r, a in zip(results, addrs)]


def dsn_mail_params(req: base.DeliveryRequest) -> tuple[str, ...]:
    """RET and ENVID to pass on (RFC 3461 4.3, 4.4), re-encoded as xtext."""
    out = []
    if (ret := req.attrs.get(dsn.RET, "").upper()) in ("FULL", "HDRS"):
        out.append(f"RET={ret}")
    if envid := req.attrs.get(dsn.ENVID):
        out.append(f"ENVID={dsn.encode_xtext(envid)}")
    return tuple(out)


def dsn_rcpt_params(rr: base.RecipientRequest) -> tuple[str, ...]:
    """NOTIFY and ORCPT to pass on (RFC 3461 4.1, 4.2). Without a stored ORCPT the
    recipient as it entered this system is the original one."""
    out = []
    try:
        if notify := rr.params.get(dsn.NOTIFY):
            out.append(f"NOTIFY={dsn.parse_notify(notify)}")
    except dsn.DsnSyntaxError:
        pass         # sendmail -N is not checked at submission: pass nothing on
    atype, _, orcpt = rr.params.get(dsn.ORCPT, "").partition(";")
    if not orcpt:
        atype, orcpt = "rfc822", rr.original or rr.address
    value = f"{atype};{dsn.encode_xtext(orcpt)}"
    if orcpt.isascii() and len(value) <= dsn.ORCPT_MAX:
        out.append(f"ORCPT={value}")
    return tuple(out)


class _Final(Exception):
    """The session failed permanently: every recipient gets this result."""

    def __init__(self, status: str, dsn: str, reason: str, relay: str) -> None:
        super().__init__(reason)
        self.status, self.dsn, self.reason, self.relay = status, dsn, reason, relay


SMALL_READ = 1 << 16


def _read_small(path: str, offset: int) -> bytes | None:
    """The message, read on the event loop when it is small (a page-cache read of a few
    KB costs less than the hand-off to a thread); None when it is not small."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size - offset
        if size > SMALL_READ:
            return None
        return os.pread(fd, max(size, 0), offset)
    finally:
        os.close(fd)


def _read_message(path: str, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()
