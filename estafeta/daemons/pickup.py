"""pickup: takes local submissions from maildrop/ and hands them to cleanup (SPEC S2).

Runs as the mail owner. Wakes on a datagram on public/pickup (the sendmail
command sends one after each submission) and every WAKEUP seconds, so mail
submitted while the daemons were down, or whose datagram was lost, still goes.
Each file is untrusted input (queue/maildrop.py checks it): a bad one is moved to
corrupt/ and logged; a good one goes through Cleanup like any message (so only
cleanup creates incoming files), with protocol=local and the submitter's uid and
login taken from the file's owner, and is removed from maildrop only once cleanup
has made the queue file durable (a crash in between repeats it: a duplicate,
never a loss). Unqualified addresses get @$myorigin, as Postfix's cleanup does.
Next: queue/maildrop.py, daemons/cleanup.py.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import time

from ..core import maillog
from ..core.queueid import new_queue_id
from ..queue import maildrop
from .cleanup import Cleanup, CleanupRefused

WAKEUP = 60.0


def qualify(address: str, origin: str) -> str:
    if not address or "@" in address:
        return address
    return f"{address}@{origin}"


class Pickup:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.store = ctx.store
        self.dir = self.store.path("maildrop")
        self.cleanup = Cleanup(self.cfg, self.store)
        self.origin = self.cfg.get("myorigin")
        self.size_limit = self.cfg.get_int("message_size_limit")
        self.wake = asyncio.Event()

    async def scan(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.dir) if maildrop.is_maildrop_name(n))
        except OSError as e:
            maillog.log.warning(f"cannot read {self.dir}: {e.strerror}")
            return
        for name in names:
            if self.ctx.stopping.is_set():
                return
            await self.take(name)

    async def take(self, name: str) -> None:
        path = os.path.join(self.dir, name)
        try:
            sub = maildrop.load(path, name, self.size_limit)
        except FileNotFoundError:
            return
        except (maildrop.BadSubmission, OSError) as e:
            self.to_corrupt(name, str(e))
            return
        try:
            user = pwd.getpwuid(sub.uid).pw_name
        except KeyError:
            user = str(sub.uid)
        qid = new_queue_id()
        sender = qualify(sub.sender, self.origin)
        # One copy per recipient, as Postfix's cleanup drops duplicates (sendmail -t
        # with the same address in To: and Bcc:, or on the command line too).
        rcpts = [(r, {}) for r in dict.fromkeys(qualify(r, self.origin) for r in sub.recipients)]
        attrs = {"protocol": "local", "uid": str(sub.uid), "user": user, **sub.attrs}
        txn = self.cleanup.open(qid, sender, rcpts, attrs, arrival=time.time())
        try:
            txn.write(sub.message)
            await txn.commit()
        except CleanupRefused as e:
            # 4xx (a table could not answer): leave it in maildrop for the next scan.
            # 5xx (header/body_checks REJECT): removed; TODO: return it to the sender.
            maillog.log.warning(f"{qid}: uid={sub.uid} from=<{maillog.esc(sender)}>: not queued: {e.reply}")
            if e.reply.code >= 500:
                os.unlink(path)
            return
        except BaseException:
            txn.abort()
            raise
        maillog.log.info(f"{qid}: uid={sub.uid} from=<{maillog.esc(sender)}>")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def to_corrupt(self, name: str, why: str) -> None:
        maillog.log.warning(f"maildrop/{name}: bad submission, moved to corrupt: {maillog.esc(why)}")
        try:
            os.rename(os.path.join(self.dir, name), self.store.path("corrupt", name))
        except OSError as e:
            maillog.log.error(f"maildrop/{name}: cannot move to corrupt: {e.strerror}; removing it")
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass

    def on_trigger(self, sock) -> None:
        for _ in range(1000):
            try:
                sock.recv(256)
            except OSError:
                break
        self.wake.set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self.ctx.listen_socket
        if sock is not None:
            loop.add_reader(sock.fileno(), self.on_trigger, sock)
        while not self.ctx.stopping.is_set():
            self.wake.clear()
            try:
                await self.scan()
            except Exception:
                maillog.log.exception("pickup: error while scanning maildrop; retrying later")
            waiter = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(self.ctx.stopping.wait())
            await asyncio.wait({waiter, stopper}, timeout=WAKEUP, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()


async def serve(ctx) -> None:
    await Pickup(ctx).serve()
