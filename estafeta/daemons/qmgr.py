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
import os
import time
from collections import defaultdict

from ..core import maillog
from ..core.queueid import is_queue_id, new_queue_id
from ..core.resolve import Resolver
from ..delivery import base
from ..queue import qfile, scheduler
from ..queue.store import QueueStore
from .cleanup import Cleanup

SCAN_INCOMING_EVERY = 10.0
STALE_TEMP_AGE = 3600.0


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


class Qmgr:
    def __init__(self, ctx) -> None:
        cfg = self.cfg = ctx.cfg
        self.ctx = ctx
        self.store: QueueStore = ctx.store
        self.resolver = Resolver(cfg)
        self.cleanup = Cleanup(cfg, self.store)
        self.sync = cfg.get_bool("fsync_queue")
        self.min_backoff = cfg.get_duration("minimal_backoff_time")
        self.max_backoff = cfg.get_duration("maximal_backoff_time")
        self.lifetime = cfg.get_duration("maximal_queue_lifetime")
        self.run_delay = cfg.get_duration("queue_run_delay")
        self.rcpt_limit = cfg.get_int("default_destination_recipient_limit")
        self.conc_limit = cfg.get_int("default_destination_concurrency_limit")
        self.active_sem = asyncio.Semaphore(cfg.get_int("qmgr_message_active_limit"))
        self.in_flight: set[str] = set()
        self.pools: dict[str, AgentPool] = {}
        self.wake = asyncio.Event()
        self.flush_now = False
        self.tasks: set[asyncio.Task] = set()
        self.retried: set[str] = set()     # ids taken from deferred/ or recovered at start

    # -- the queue walk -------------------------------------------------------------

    def recover(self) -> None:
        """At start: whatever a crash left in active/ is tried again from incoming/."""
        for qid in self.store.list("active"):
            self.store.move(qid, "active", "incoming")
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
        self.in_flight.add(qid)
        if src != "incoming":
            self.retried.add(qid)
        t = asyncio.get_running_loop().create_task(self.process(qid))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def scan_incoming(self) -> None:
        for qid in self.store.list("incoming"):
            self.take(qid, "incoming")

    def scan_deferred(self, force: bool) -> None:
        now = time.time()
        for qid in self.store.list("deferred"):
            try:
                due = os.stat(self.store.path("deferred", qid)).st_mtime
            except FileNotFoundError:
                continue
            if force or due <= now:
                self.take(qid, "deferred")

    # -- one message ------------------------------------------------------------------

    async def process(self, qid: str) -> None:
        try:
            async with self.active_sem:
                await self._process(qid)
        except Exception:
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
        for r in pending:
            route = self.resolver.resolve(r.address)
            groups[(route.transport, route.nexthop)].append(r)
        jobs = []
        for (transport, nexthop), rcpts in groups.items():
            for batch in scheduler.batches(rcpts, self.rcpt_limit):
                req = base.DeliveryRequest(
                    qid, path, env.message_offset, env.sender, env.arrival, transport, nexthop,
                    [base.RecipientRequest(r.address, r.original, r.offset) for r in batch], active_since)
                jobs.append(self.dispatch(req))
        results: list[tuple[qfile.Recipient, base.RecipientResult]] = []
        by_offset = {r.offset: r for r in pending}
        for req, res in await asyncio.gather(*jobs):
            for rr, result in zip(req.recipients, res):
                results.append((by_offset[rr.offset], result))
        await self.finish(env, path, results)

    async def dispatch(self, req: base.DeliveryRequest) -> tuple[base.DeliveryRequest, list[base.RecipientResult]]:
        sock = self.store.path("private", req.transport)
        for attempt in (1, 2):
            pool = self.pools.get(req.transport)
            if pool is None:
                pool = self.pools[req.transport] = AgentPool(sock, self.conc_limit)
            try:
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
        deferred = [(r, res) for r, res in results if res.status == base.DEFERRED]
        bounced = [(r, res) for r, res in results if res.status == base.BOUNCED]
        if deferred and scheduler.expired(now, env.arrival, self.lifetime):
            maillog.log.info(f"{qid}: from=<{env.sender}>, status=expired, returned to sender")
            bounced += [(r, base.RecipientResult(res.address, base.BOUNCED, res.dsn.replace("4.", "5.", 1),
                                                 f"message expired: {res.reason}")) for r, res in deferred]
            deferred = []
        if bounced:
            await self.notify_sender(env, bounced)
        done = [r.offset for r, res in results if res.status != base.DEFERRED] + \
               [r.offset for r, res in bounced if res.status == base.BOUNCED]
        if deferred:
            await asyncio.to_thread(qfile.mark_done, path, sorted(set(done)), self.sync)
            self.write_defer_log(qid, deferred)
            when = scheduler.next_attempt(now, env.arrival, self.min_backoff, self.max_backoff)
            os.utime(path, (now, when))
            self.store.move(qid, "active", "deferred")
        else:
            # unlink is a slow metadata operation on a busy queue directory: not on the loop
            await asyncio.to_thread(self.store.remove, "active", qid, self.had_defer_log(env))
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

    async def notify_sender(self, env: qfile.Envelope, bounced) -> None:
        """A plain non-delivery notice (RFC 3464 reports come with remote delivery)."""
        if not env.sender:
            maillog.log.info(f"{env.queue_id}: undeliverable mail from the null sender discarded "
                             f"({len(bounced)} recipient(s))")
            return
        host = self.cfg.get("myhostname")
        nqid = new_queue_id()
        failed = "".join(f"<{res.address}>: {res.dsn} {res.reason}\n" for _, res in bounced)
        with open(self.store.path("active", env.queue_id), "rb") as f:
            f.seek(env.message_offset)
            original = f.read(min(env.message_size, self.cfg.get_int("bounce_size_limit")))
        text = (f"From: MAILER-DAEMON@{host} (Mail Delivery System)\n"
                f"To: <{env.sender}>\n"
                f"Subject: Undelivered Mail Returned to Sender\n"
                f"Auto-Submitted: auto-replied\n"
                f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
                f"This is the mail system at host {host}.\n\n"
                f"I'm sorry to have to inform you that your message could not\n"
                f"be delivered to one or more recipients.\n\n"
                f"{failed}\n"
                f"--- The original message follows (at most bounce_size_limit bytes) ---\n\n").encode()
        txn = self.cleanup.open(nqid, "", [(env.sender, {})], {"protocol": "local", "origin": "bounce"})
        txn.write(text + original)
        await txn.commit()
        maillog.log.info(f"{env.queue_id}: sender non-delivery notification: {nqid}")

    # -- the service ------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.recover()
        sock = self.ctx.listen_socket
        if sock is not None:
            loop.add_reader(sock.fileno(), self._on_trigger, sock)
        self.scan_incoming()
        self.scan_deferred(force=False)
        last_deferred = last_incoming = time.monotonic()
        while not self.ctx.stopping.is_set():
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            now = time.monotonic()
            if self.flush_now or now - last_deferred >= self.run_delay:
                self.scan_deferred(force=self.flush_now)
                self.flush_now = False
                last_deferred = now
            if now - last_incoming >= SCAN_INCOMING_EVERY:
                self.scan_incoming()
                last_incoming = now
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=30)

    def _on_trigger(self, sock) -> None:
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for word in data.decode("ascii", "replace").split():
                self._trigger_word(word)

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


async def serve(ctx) -> None:
    await Qmgr(ctx).serve()
