"""qmgr: the queue manager. The only process that moves queue files (SPEC S3).

incoming -> active -> (done: removed) | deferred | corrupt. New mail is announced
by a datagram with its id on private/qmgr; a periodic scan of incoming/ catches any
announcement that was lost. deferred/ is scanned every queue_run_delay for files
whose mtime (= next attempt time, see scheduler.py) has come; "FLUSH" on the
trigger socket scans now and ignores the wait.

For each message: resolve recipients to transport:nexthop, send each group (at
most the recipient limit) to the delivery agent on private/<transport>, then from
the per-recipient answers: mark sent and bounced recipients done in the queue
file (fsync'd, so a retry only tries the rest), send a non-delivery notice for the
bounced ones (through cleanup, as any new message), and defer the rest with
backoff, or bounce them when maximal_queue_lifetime is over.

Crash safety: a file is in exactly one queue at any time; at start everything in
active/ goes back to incoming/ and is tried again. A recipient is marked done only
after its agent reported success, so a crash between delivery and mark repeats
that delivery: duplicates are possible, loss is not (at-least-once).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections import defaultdict

from ..core import dsn, maillog
from ..core.batch import Batcher
from ..core.errors import ConfigError
from ..core.queueid import is_queue_id, new_queue_id, queue_id_time
from ..core.resolve import Resolver
from ..delivery import base
from ..proto import dsn as proto_dsn
from ..queue import qfile, scheduler
from ..queue.store import QueueStore
from .cleanup import Cleanup, CleanupRefused

SCAN_INCOMING_EVERY = 10.0


class ScanPostponed(Exception):
    """A queue file could not be moved (full filesystem, no descriptors): the scan
    stops here and the next one tries again."""


class Stopping(Exception):
    """qmgr is stopping: no new delivery request. The message stays in active/ and
    the next start recovers it, as after a crash."""


OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# At SIGTERM, requests already with an agent get this long to answer; the rest are
# left in active/ for the next start (duplicates are possible, loss is not). The agents
# get SIGTERM too and abandon what they are doing (as Postfix's do), and an agent the
# master was about to start never answers: waiting longer would gain nothing.
STOP_GRACE = 2.0
STALE_TEMP_AGE = 3600.0


class _Slot:
    """One destination's concurrency slots, and how many deliveries hold or await them."""
    __slots__ = ("sem", "users")

    def __init__(self, n: int) -> None:
        self.sem = asyncio.Semaphore(n)
        self.users = 0


class AgentPool:
    """Open connections to one delivery service (private/<transport>), reused."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.sem = asyncio.Semaphore(limit)

    async def call(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        async with self.sem:
            conn = self.idle.pop() if self.idle else await asyncio.open_unix_connection(self.path, limit=1 << 22)
            reader, writer = conn
            try:
                writer.write(req.to_json())
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("delivery agent closed the connection")
                results = base.results_from_json(line)
            except BaseException:
                writer.close()
                raise
            self.idle.append(conn)
            return results

    def shed(self) -> int:
        """Close the idle connections: their descriptors are wanted (EMFILE)."""
        n = len(self.idle)
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
        return n


class Qmgr:
    def __init__(self, ctx) -> None:
        cfg = self.cfg = ctx.cfg
        self.ctx = ctx
        self.store: QueueStore = ctx.store
        self.resolver = Resolver(cfg)
        self.cleanup = Cleanup(cfg, self.store)
        self.sync = cfg.get_bool("fsync_queue")
        self.remover = Batcher()           # unlinks of finished queue files, in batches
        self.min_backoff = cfg.get_duration("minimal_backoff_time")
        self.max_backoff = cfg.get_duration("maximal_backoff_time")
        self.lifetime = cfg.get_duration("maximal_queue_lifetime")
        # Notices from the null sender give up sooner (Postfix bounce_queue_lifetime).
        self.bounce_lifetime = min(cfg.get_duration("bounce_queue_lifetime"), self.lifetime)
        self.run_delay = cfg.get_duration("queue_run_delay")
        self.process_limit = cfg.get_int("default_process_limit")
        self.sort_order = scheduler.sort_key_fields(cfg.get("queue_sort_order"))
        self.dest_slots: dict[tuple[str, str], _Slot] = {}
        self._limits: dict[tuple[str, str], int] = {}
        self.active_sem = asyncio.Semaphore(cfg.get_int("qmgr_message_active_limit"))
        self.in_flight: set[str] = set()
        self.pools: dict[str, AgentPool] = {}
        self.wake = asyncio.Event()
        self.flush_now = False
        self.tasks: set[asyncio.Task] = set()
        self.retried: set[str] = set()     # ids taken from deferred/ or recovered at start
        # notify_classes: which notices the postmaster gets, read once (core/dsn.py).
        self.postmaster, warnings = dsn.postmaster_notices(
            cfg.get_list("notify_classes"), cfg.get("bounce_notice_recipient"),
            cfg.get("delay_notice_recipient"), cfg.get("2bounce_notice_recipient"))
        for w in warnings:
            maillog.log.warning(w)
        self.double_bounce = f"{cfg.get('double_bounce_sender')}@{cfg.get('myhostname')}"

    # -- the queue walk -------------------------------------------------------------

    def recover(self) -> None:
        """At start: whatever a crash left in active/ is tried again from incoming/."""
        for qid in self.store.list("active"):
            try:
                self.store.move(qid, "active", "incoming")
            except FileNotFoundError:
                pass
            except OSError as e:       # left in active/: taken from there by the scans
                maillog.log.warning(f"{qid}: cannot move back to incoming: {e}")
        self.retried.update(self.store.list("incoming"))
        now = time.time()
        for name in self.store.unfinished("incoming"):
            p = self.store.path("incoming", name)
            try:
                if now - os.stat(p).st_mtime > STALE_TEMP_AGE:
                    os.unlink(p)     # an unfinished write no client was ever told 250 for
            except FileNotFoundError:
                pass

    def take(self, qid: str, src: str) -> None:
        if qid in self.in_flight:
            return
        try:
            self.store.move(qid, src, "active")
        except FileNotFoundError:
            return
        except OSError as e:
            # ENOSPC (a full queue filesystem: active/ needs a new block), EMFILE...:
            # the file stays where it is for a later scan; qmgr must keep running,
            # since delivering is what frees the space.
            raise ScanPostponed(f"{qid}: cannot move to active: {e}") from e
        self.in_flight.add(qid)
        if src != "incoming":
            self.retried.add(qid)
        t = asyncio.get_running_loop().create_task(self.process(qid))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def scan_incoming(self) -> None:
        for qid in self.store.list("active"):
            if qid not in self.in_flight:      # left there by a recover() that could not move it
                self._take_active(qid)
        for qid in self.store.list("incoming"):
            self.take(qid, "incoming")

    def _take_active(self, qid: str) -> None:
        self.in_flight.add(qid)
        self.retried.add(qid)
        t = asyncio.get_running_loop().create_task(self.process(qid))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def scan_deferred(self, force: bool) -> None:
        """Take the due deferred mail, in queue_sort_order (Sendmail's QUEUE_SORT_ORDER:
        priority, host, filename, time, modification, random; seed 8.2.4)."""
        now = time.time()
        order = self.sort_order
        items = []
        for qid in self.store.list("deferred"):
            path = self.store.path("deferred", qid)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if force or st.st_mtime <= now:
                host = self._first_domain(path, qid) if order == "host" else ""
                items.append((qid, st.st_size, host, queue_id_time(qid), st.st_mtime))
        for qid in scheduler.queue_order(items, order):
            self.take(qid, "deferred")

    def _first_domain(self, path: str, qid: str) -> str:
        try:
            pending = qfile.read_envelope(path, qid).pending()
        except (OSError, qfile.CorruptQueueFile, ValueError):
            return ""
        return pending[0].address.rpartition("@")[2] if pending else ""

    # -- one message ------------------------------------------------------------------

    async def process(self, qid: str) -> None:
        try:
            async with self.active_sem:
                await self._process(qid)
        except Stopping:
            pass
        except Exception as e:
            if isinstance(e, OSError) and e.errno in OUT_OF_FDS:
                maillog.log.warning(f"{qid}: {e.strerror}: message left for the next run{self.shed_idle()}")
            else:
                maillog.log.exception(f"{qid}: unexpected error in qmgr; message left for the next run")
            try:
                self.store.move(qid, "active", "incoming")
            except OSError:
                pass
        finally:
            self.in_flight.discard(qid)
            self.retried.discard(qid)

    async def _process(self, qid: str) -> None:
        path = self.store.path("active", qid)
        active_since = time.time()
        try:
            env = qfile.read_envelope(path, qid)
        except (qfile.CorruptQueueFile, ValueError, UnicodeError) as e:
            maillog.log.warning(f"{qid}: corrupt queue file, moved to corrupt: {e}")
            self.store.move(qid, "active", "corrupt")
            return
        pending = env.pending()
        maillog.log.info(f"{qid}: from=<{env.sender}>, size={env.message_size}, nrcpt={len(pending)} (queue active)")
        groups: dict[tuple[str, str], list[qfile.Recipient]] = defaultdict(list)
        # header/body_checks FILTER transport:nexthop (cleanup's "filter" attribute)
        # routes every recipient; an empty nexthop keeps the recipient's own.
        ftrans, _, fnext = env.attrs.get("filter", "").partition(":")
        for r in pending:
            route = self.resolver.resolve(r.address)
            if ftrans:
                route = route.__class__(route.address_class, ftrans, fnext or route.nexthop)
            groups[(route.transport, route.nexthop)].append(r)
        jobs = []
        for (transport, nexthop), rcpts in groups.items():
            for batch in scheduler.batches(rcpts, self.limit(transport, "recipient")):
                req = base.DeliveryRequest(
                    qid, path, env.message_offset, env.sender, env.arrival, transport, nexthop,
                    [base.RecipientRequest(r.address, r.original, r.offset, dsn_params(r, env)) for r in batch],
                    active_since, {k: v for k in (proto_dsn.RET, proto_dsn.ENVID) if (v := env.attrs.get(k))})
                jobs.append(self.dispatch(req))
        results: list[tuple[qfile.Recipient, base.RecipientResult]] = []
        by_offset = {r.offset: r for r in pending}
        for req, res in await asyncio.gather(*jobs):
            for rr, result in zip(req.recipients, res):
                results.append((by_offset[rr.offset], result))
        await self.finish(env, path, results)

    def shed_idle(self) -> str:
        """Out of descriptors: the idle agent connections kept for reuse go first,
        or qmgr could hold its whole limit in them and never read a queue file."""
        n = sum(pool.shed() for pool in self.pools.values())
        return f"; closed {n} idle delivery agent connection(s)" if n else ""

    def lifetime_of(self, env: qfile.Envelope) -> float:
        return self.bounce_lifetime if env.sender == "" else self.lifetime

    def limit(self, transport: str, kind: str) -> int:
        """<transport>_destination_<kind>_limit when main.cf sets it (any master.cf
        name; $name expanded), else default_destination_<kind>_limit.

        Declared defaults of transport parameters do not count: Postfix's
        local_destination_recipient_limit = 1 would split every message into one
        local request per recipient, and a member of an alias list who is also
        addressed directly would get two copies (the local agent removes duplicates
        within a request only); tests/e2e/test_local_delivery.py holds one copy.
        Set in main.cf, it means what it means in Postfix (destination_key)."""
        cached = self._limits.get((transport, kind))
        if cached is not None:
            return cached
        name = f"{transport}_destination_{kind}_limit"
        n = None
        if self.cfg.raw(name) is not None:
            try:
                n = self.cfg.get_int(name)
            except ConfigError:              # not a number: the default, as before
                pass
        if n is None:
            n = self.cfg.get_int(f"default_destination_{kind}_limit")
        self._limits[(transport, kind)] = n    # main.cf changes restart qmgr (reload)
        return n

    def destination_key(self, req: base.DeliveryRequest) -> tuple[str, str]:
        """What one destination is, for its concurrency limit (Postfix's meaning): the
        next hop; but with a recipient limit of 1, the recipient, so that
        local_destination_recipient_limit = 1 with local_destination_concurrency_limit
        = 2 is two deliveries per user at a time, not two for the whole machine."""
        if len(req.recipients) == 1 and self.limit(req.transport, "recipient") == 1:
            return (req.transport, "rcpt:" + req.recipients[0].address.lower())
        return (req.transport, req.nexthop)

    @contextlib.asynccontextmanager
    async def destination_slot(self, key: tuple[str, str]):
        """Hold one of the destination's concurrency slots. A destination's entry goes
        once nobody holds or waits for it: with per-recipient destinations there is one
        per user, and qmgr runs for months."""
        slot = self.dest_slots.get(key)
        if slot is None:
            n = self.limit(key[0], "concurrency") or self.process_limit
            slot = self.dest_slots[key] = _Slot(n)
        slot.users += 1
        try:
            async with slot.sem:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0 and self.dest_slots.get(key) is slot:
                del self.dest_slots[key]

    async def dispatch(self, req: base.DeliveryRequest) -> tuple[base.DeliveryRequest, list[base.RecipientResult]]:
        sock = self.store.path("private", req.transport)
        for attempt in (1, 2):
            if self.ctx.stopping.is_set():
                # The master is stopping too: a new connection to an agent would wait
                # in its listen queue for a process that never starts.
                raise Stopping(req.queue_id)
            pool = self.pools.get(req.transport)
            if pool is None:
                pool = self.pools[req.transport] = AgentPool(sock, self.process_limit)
            try:
                # One destination holds at most its concurrency limit of the transport's
                # slots, so a slow or dead site never starves the others (SPEC S3).
                async with self.destination_slot(self.destination_key(req)):
                    res = await pool.call(req)
                if len(res) != len(req.recipients):
                    raise ValueError("delivery agent answered for a different number of recipients")
                return req, res
            except (FileNotFoundError, ConnectionRefusedError):
                reason = "mail transport unavailable"
                break
            except (ConnectionError, OSError, ValueError) as e:
                # The agent died mid-request (crash, kill -9): the master restarts it;
                # try once more shortly, then defer.
                reason = f"delivery agent failed: {e}"
                if isinstance(e, OSError) and e.errno in OUT_OF_FDS:
                    maillog.log.warning(f"{req.queue_id}: {e.strerror}{self.shed_idle()}")
                if attempt == 1:
                    await asyncio.sleep(1.0)
        results = [base.RecipientResult(r.address, base.DEFERRED, "4.3.0", reason, "none") for r in req.recipients]
        for r in results:
            maillog.log.info(base.delivery_log_line(req, r, time.time(), "none"))
        return req, results

    async def finish(self, env: qfile.Envelope, path: str,
                     results: list[tuple[qfile.Recipient, base.RecipientResult]]) -> None:
        qid = env.queue_id
        now = time.time()
        sent = [(r, res) for r, res in results if res.status == base.SENT]
        deferred = [(r, res) for r, res in results if res.status == base.DEFERRED]
        bounced = [(r, res) for r, res in results if res.status == base.BOUNCED]
        soft_bounce = self.cfg.get_bool("soft_bounce")
        if bounced and soft_bounce:
            # soft_bounce = yes: nothing is returned; a hard failure is retried as a soft one.
            deferred += [(r, base.RecipientResult(res.address, base.DEFERRED, res.dsn.replace("5.", "4.", 1),
                                                  res.reason, res.relay)) for r, res in bounced]
            bounced = []
        if deferred and not soft_bounce and scheduler.expired(now, env.arrival, self.lifetime_of(env)):
            maillog.log.info(f"{qid}: from=<{env.sender}>, status=expired, returned to sender")
            bounced += [(r, base.RecipientResult(res.address, base.BOUNCED, res.dsn.replace("4.", "5.", 1),
                                                 f"message expired: {res.reason}", res.relay)) for r, res in deferred]
            deferred = []
        if bounced:
            await self.notify_sender(env, path, dsn.FAILURE, bounced)
        if sent:
            await self.notify_sender(env, path, dsn.SUCCESS, sent)
        if deferred:
            await self.warn_delay(env, path, now, deferred)
        done = [r.offset for r, _ in sent] + [r.offset for r, _ in bounced]
        if deferred:
            await asyncio.to_thread(qfile.mark_done, path, sorted(set(done)), self.sync)
            self.write_defer_log(qid, deferred)
            when = scheduler.next_attempt(now, env.arrival, self.min_backoff, self.max_backoff)
            os.utime(path, (now, when))
            self.store.move(qid, "active", "deferred")
        else:
            # unlink is a slow metadata operation on a busy queue directory: not on the
            # loop; and a batch of them per hand-off to the thread pool (core/batch.py)
            await self.remover.run(self.store.remove, "active", qid, self.had_defer_log(env))
            maillog.log.info(f"{qid}: removed")

    def had_defer_log(self, env: qfile.Envelope) -> bool:
        """Only mail tried before (taken from deferred, or found at start) can have
        defer/ or bounce/ logs; new mail skips the two unlinks."""
        return env.queue_id in self.retried or any(r.done for r in env.recipients)

    def write_defer_log(self, qid: str, deferred) -> None:
        lines = "".join(f"{res.address}\t{res.dsn}\t{res.reason}\n" for _, res in deferred)
        try:
            with open(self.store.path("defer", qid), "w", encoding="utf-8", errors="replace") as f:
                f.write(lines)
        except OSError as e:
            maillog.log.warning(f"{qid}: cannot write defer log: {e}")

    async def notify_sender(self, env: qfile.Envelope, path: str, kind: str, items) -> None:
        """Send the RFC 3464 notice of `kind` (core/dsn.py) for those of `items`
        ((queue recipient, result) pairs) whose NOTIFY asks for it, through cleanup
        like any new message, from the null sender.

        The postmaster (postconf(5) notify_classes, Postfix's bounce(8)): with class
        bounce (delay), a headers-only copy of each non-delivery (delay) notice goes to
        bounce_notice_recipient (delay_notice_recipient), for all of `items` whatever
        their NOTIFY, once the sender's notice is queued. Mail from the null sender
        (itself a notice) never gets a notice back: an undeliverable one goes, whole,
        to 2bounce_notice_recipient when notify_classes has 2bounce or bounce (a
        double bounce), and is discarded otherwise (Postfix's default). Postmaster
        notices come from double_bounce_sender, so one that cannot be delivered is
        discarded: no loop. Delay and success notices for such mail are not sent."""
        qid = env.queue_id
        word = {dsn.FAILURE: "FAILURE", dsn.DELAY: "DELAY", dsn.SUCCESS: "SUCCESS"}[kind]
        chosen = [(r, res) for r, res in items
                  if proto_dsn.wants(proto_dsn.notify_of(r.params, env.attrs), word)
                  and not (kind == dsn.SUCCESS and res.action == "relayed-dsn")]
        if env.sender and not chosen and kind == dsn.SUCCESS:
            return           # the common case: nobody asked (delivered mail without NOTIFY=SUCCESS)
        if not env.sender or env.sender == self.double_bounce:
            if kind != dsn.FAILURE:
                return
            if env.sender:
                maillog.log.info(f"{qid}: undeliverable double bounce discarded ({len(items)} recipient(s))")
            elif self.postmaster.double_bounce:
                await self._send_notice(env, path, kind, items, self.postmaster.double_bounce,
                                        self.double_bounce, postmaster=True)
            else:
                maillog.log.info(f"{qid}: undeliverable notice discarded ({len(items)} recipient(s)): "
                                 "notify_classes has neither 2bounce nor bounce")
            return
        if chosen:
            await self._send_notice(env, path, kind, chosen, env.sender, "")
        copy_to = self.postmaster.copy_to(kind)
        if copy_to:
            try:
                await self._send_notice(env, path, kind, items, copy_to, self.double_bounce, postmaster=True)
            except (OSError, CleanupRefused) as e:
                # Not critical: the sender's notice is queued; retrying the message
                # for the copy would send that notice again (Postfix: a warning).
                maillog.log.warning(f"{qid}: postmaster notice failed while notifying <{maillog.esc(env.sender)}>: {e}")

    async def _send_notice(self, env: qfile.Envelope, path: str, kind: str, items, to: str, sender: str,
                           postmaster: bool = False) -> None:
        cfg = self.cfg
        now = time.time()
        action = {dsn.FAILURE: "failed", dsn.DELAY: "delayed"}
        reports = tuple(dsn.RecipientReport(
            res.address, action.get(kind) or ("relayed" if res.action.startswith("relayed") else "delivered"),
            res.dsn, res.reason, r.params.get(proto_dsn.ORCPT, ""), res.relay, now) for r, res in items)
        limit = cfg.get_int("bounce_size_limit")
        with open(path, "rb") as f:
            f.seek(env.message_offset)
            # Enough for the headers of any message (header_size_limit) or for the cut body.
            original = f.read(max(limit, cfg.get_int("header_size_limit")) + 1)
        notice = dsn.Notice(kind, cfg.get("myhostname"), env.queue_id, env.sender, to, env.arrival, now,
                            reports, original, "HDRS" if postmaster else env.attrs.get(proto_dsn.RET, ""),
                            env.attrs.get(proto_dsn.ENVID, ""), limit,
                            env.arrival + self.lifetime_of(env), postmaster_copy=postmaster)
        nqid = new_queue_id()
        origin = "2bounce" if postmaster else "bounce"
        txn = self.cleanup.open(nqid, sender, [(to, {})], {"protocol": "local", "origin": origin})
        try:
            txn.write(dsn.build(notice))
            await txn.commit()
        except BaseException:
            txn.abort()          # no half-written file left in incoming/
            raise
        what = {dsn.FAILURE: "non-delivery", dsn.DELAY: "delay", dsn.SUCCESS: "delivery status"}[kind]
        maillog.log.info(f"{env.queue_id}: {'postmaster' if postmaster else 'sender'} {what} notification: {nqid}")

    async def warn_delay(self, env: qfile.Envelope, path: str, now: float, deferred) -> None:
        """Once per message, when it has waited delay_warning_time (0: never): a delay
        notice. bounce/<id> marks it sent; it goes with the message (store.remove)."""
        limit = self.cfg.get_duration("delay_warning_time")
        if limit <= 0 or now - env.arrival < limit:
            return
        marker = self.store.path("bounce", env.queue_id)
        if os.path.exists(marker):
            return
        await self.notify_sender(env, path, dsn.DELAY, deferred)
        try:
            with open(marker, "w") as f:
                f.write(f"delay warning sent {now:.0f}\n")
        except OSError as e:
            maillog.log.warning(f"{env.queue_id}: cannot record the delay warning: {e}")

    # -- the service ------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.recover()
        sock = self.ctx.listen_socket
        if sock is not None:
            loop.add_reader(sock.fileno(), self._on_trigger, sock)
        last_deferred = last_incoming = -1e9          # the first turn scans both
        self.wake.set()
        while not self.ctx.stopping.is_set():
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            now = time.monotonic()
            try:
                if self.flush_now or now - last_deferred >= self.run_delay:
                    self.scan_deferred(force=self.flush_now)
                    self.flush_now = False
                    last_deferred = now
                if now - last_incoming >= SCAN_INCOMING_EVERY:
                    self.scan_incoming()
                    last_incoming = now
            except ScanPostponed as e:
                maillog.log.warning(f"queue scan postponed: {e}")
            except OSError as e:
                # Out of file descriptors (EMFILE, ENFILE) or memory: a scan is only
                # postponed, to the next turn; dying here would restart into the same
                # shortage and throttle the whole queue (issue 7).
                shed = self.shed_idle() if e.errno in OUT_OF_FDS else ""
                maillog.log.warning(f"queue scan postponed: {e}{shed}")
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=STOP_GRACE)
            for t in late:
                t.cancel()
            if late:
                maillog.log.info(f"stopping: {len(late)} message(s) left in the active queue")

                await asyncio.wait(late, timeout=1.0)

    def _on_trigger(self, sock) -> None:
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for word in data.decode("ascii", "replace").split():
                try:
                    self._trigger_word(word)
                except (ScanPostponed, OSError) as e:      # full filesystem, no descriptors
                    maillog.log.warning(f"{e}; left for the next scan")

    def _trigger_word(self, word: str) -> None:
        """One datagram may carry several words (cleanup batches new ids)."""
        if word == "FLUSH":
            self.flush_now = True
            self.wake.set()
        elif word == "SCAN":
            self.scan_incoming()
        elif word == "DEFERRED":     # deferred mail made due (sendmail -qR/-qS/-qI, postqueue -i/-s)
            self.scan_deferred(force=False)
        elif is_queue_id(word):
            self.take(word, "incoming")


def dsn_params(r: qfile.Recipient, env: qfile.Envelope) -> dict[str, str]:
    """What the smtp agent passes on as NOTIFY/ORCPT: the recipient's own values,
    or the envelope-wide NOTIFY of sendmail -N."""
    out = {k: v for k in (proto_dsn.NOTIFY, proto_dsn.ORCPT) if (v := r.params.get(k))}
    if proto_dsn.NOTIFY not in out and (n := env.attrs.get(proto_dsn.NOTIFY)):
        out[proto_dsn.NOTIFY] = n
    return out


async def serve(ctx) -> None:
    await Qmgr(ctx).serve()
