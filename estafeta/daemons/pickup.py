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
The owner must pass authorized_submit_users (policy/submit.py; root too, as the
sendmail command and Postfix's postdrop check it; only the mail system itself is
exempt), since a user can write a maildrop file without the sendmail command: the
file of a user it leaves out is removed and logged ("maildrop/NAME: uid=N: User NAME(N) is not
allowed to submit mail; removed").
A header/body_checks REJECT (5xx) of a submission bounces it, as Postfix's cleanup
does for local mail: the sender gets an RFC 3464 notice (core/dsn.py) and the
maildrop file is removed only once that notice is queued; a 4xx leaves it in
maildrop for the next scan.
Next: queue/maildrop.py, daemons/cleanup.py.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import time

from ..core import dsn, maillog
from ..config.main_cf import MainConfig
from ..core.errors import ConfigError
from ..core.queueid import new_queue_id
from ..delivery import base
from ..policy.submit import SubmitListError, submit_allowed, submit_user_name
from ..proto import dsn as proto_dsn
from ..queue import maildrop
from ..tables import TableTempError
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
        try:
            self.owner_uid = pwd.getpwnam(self.cfg.get("mail_owner")).pw_uid
        except KeyError:
            self.owner_uid = os.geteuid()
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
            sub = maildrop.load(path, name, self.size_limit, self.may_submit)
        except FileNotFoundError:
            return
        except maildrop.NotAllowed as e:
            self.refuse(name, e.uid)
            return
        except (ConfigError, SubmitListError, TableTempError) as e:
            # authorized_submit_users cannot answer (a table, an unreadable /file):
            # the file waits in maildrop for the next scan, as a 4xx from cleanup does.
            reason = e.reason if isinstance(e, TableTempError) else str(e)
            maillog.log.warning(f"maildrop/{name}: authorized_submit_users: {maillog.esc(reason)}; "
                                "left in maildrop")
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
        # Logged first, as Postfix's pickup does: cleanup's own lines (a reject) follow it.
        maillog.log.info(f"{qid}: uid={sub.uid} from=<{maillog.esc(sender)}>")
        txn = self.cleanup.open(qid, sender, rcpts, attrs, arrival=time.time())
        try:
            txn.write(sub.message)
            await txn.commit()
        except CleanupRefused as e:
            if e.reply.code < 500:
                # 4xx (a table could not answer, REJECT 4.x.x): left in maildrop for
                # the next scan, as Postfix does.
                maillog.log.warning(f"{qid}: not queued: {e.reply}; left in maildrop")
                return
            # 5xx (header/body_checks REJECT): as Postfix's cleanup does for local
            # submissions, every recipient bounces and the sender gets a non-delivery
            # notice. The maildrop file goes only once that notice is durable; if it
            # cannot be queued now, the submission is tried again at the next scan.
            try:
                await self.bounce(qid, sub, txn, e.reply)
            except (OSError, CleanupRefused) as err:
                maillog.log.warning(f"{qid}: cannot queue the non-delivery notice for the rejected message: "
                                    f"{maillog.esc(str(err))}; left in maildrop")
                return
        except BaseException:
            txn.abort()
            raise
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def may_submit(self, uid: int) -> bool:
        """authorized_submit_users for the file's owner, evaluated as the sendmail
        command does (the login name, or "unknown"), root included: Postfix exempts
        no one, so a root-owned file the sendmail command would have refused is
        refused here too. Only the mail system (mail_owner, or whoever pickup runs
        as) is always allowed: it owns the queue and could write there anyway. That
        is never root (the daemons drop to mail_owner), so a uid 0 that comes out of
        those two (pickup run by root in a test) is still checked."""
        if uid != 0 and uid in (os.geteuid(), self.owner_uid):
            return True
        name = submit_user_name(uid)
        if submit_allowed(self.cfg.get("authorized_submit_users"), name):
            return True
        # Refused by the list pickup started with. main.cf may have changed since
        # (postconf -e without a reload), and the sendmail command, a new process
        # each time, has already accepted the file under the new list: ask main.cf
        # as it is now before removing what a user was told is on its way.
        now = self.current_submit_list()
        return now is not None and submit_allowed(now, name)

    def current_submit_list(self) -> str | None:
        """authorized_submit_users as main.cf says it now; None when main.cf cannot
        be read or the running value is a master.cf -o override (which stands)."""
        s = self.cfg.setting("authorized_submit_users")
        if s is not None and os.path.basename(s.path) == "master.cf":
            return None
        try:
            return MainConfig.load(self.cfg.path).get("authorized_submit_users")
        except (ConfigError, OSError):
            return None

    def refuse(self, name: str, uid: int) -> None:
        """A file from a user authorized_submit_users leaves out: removed, with the
        words the sendmail command would have said to that user."""
        user = submit_user_name(uid)
        maillog.log.warning(f"maildrop/{name}: uid={uid}: User {maillog.esc(user)}({uid}) is not allowed "
                            "to submit mail; removed")
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            maillog.log.error(f"maildrop/{name}: cannot remove: {e.strerror}")

    async def bounce(self, qid: str, sub: maildrop.Submission, txn, reply) -> None:
        """Return a rejected submission to its sender: an RFC 3464 failure notice
        (core/dsn.py) for every recipient that did not say NOTIFY=NEVER, holding the
        message as submitted, queued through cleanup like qmgr's notices. The
        postmaster as qmgr does it (notify_classes, dsn.postmaster_notices): with class
        bounce a headers-only copy goes to bounce_notice_recipient; mail from the null
        sender goes, whole, to 2bounce_notice_recipient when notify_classes has
        2bounce or bounce (a double bounce), and is discarded otherwise (Postfix's
        default). Then Postfix's log lines: one `status=bounced` per recipient and
        `sender non-delivery notification: NEWID`. Raises OSError or CleanupRefused
        when the notice cannot be queued (nothing is logged as bounced); a failed
        postmaster copy is only a warning."""
        cfg = self.cfg
        now = time.time()
        status, text = reply.enhanced or "5.7.1", reply.text
        sender = txn.sender
        double_bounce = f"{cfg.get('double_bounce_sender')}@{cfg.get('myhostname')}"
        pm, _ = dsn.postmaster_notices(cfg.get_list("notify_classes"), cfg.get("bounce_notice_recipient"),
                                       cfg.get("delay_notice_recipient"), cfg.get("2bounce_notice_recipient"))
        everyone = list(txn.recipients)
        notices: list[tuple[str, str]] = []        # (what, new queue id) for the log
        if sender == double_bounce:
            pass                                   # a postmaster notice itself: no notice back
        elif not sender:
            if pm.double_bounce:
                notices.append(("postmaster non-delivery",
                                await self._notice(qid, sub, sender, everyone, status, text, pm.double_bounce, now, True)))
        else:
            chosen = [(a, p) for a, p in everyone if proto_dsn.wants(proto_dsn.notify_of(p, sub.attrs), "FAILURE")]
            if chosen:
                notices.append(("sender non-delivery",
                                await self._notice(qid, sub, sender, chosen, status, text, sender, now, False)))
        delay = base.fmt_delay(now - sub.arrival)
        for a, p in txn.recipients:
            orig = f", orig_to=<{maillog.esc(p['o'])}>" if p.get("o") and p["o"] != a else ""
            maillog.log.info(f"{qid}: to=<{maillog.esc(a)}>{orig}, relay=none, delay={delay}, "
                             f"delays={delay}/0/0/0, dsn={status}, status=bounced ({maillog.esc(text)})")
        for what, nqid in notices:
            maillog.log.info(f"{qid}: {what} notification: {nqid}")
        if sender == double_bounce:
            maillog.log.info(f"{qid}: undeliverable double bounce discarded ({len(everyone)} recipient(s))")
        elif not sender and not pm.double_bounce:
            maillog.log.info(f"{qid}: undeliverable notice discarded ({len(everyone)} recipient(s)): "
                             "notify_classes has neither 2bounce nor bounce")
        elif sender and pm.bounce:
            try:
                nqid = await self._notice(qid, sub, sender, everyone, status, text, pm.bounce, now, True)
                maillog.log.info(f"{qid}: postmaster non-delivery notification: {nqid}")
            except (OSError, CleanupRefused) as e:
                maillog.log.warning(f"{qid}: postmaster notice failed while notifying <{maillog.esc(sender)}>: {e}")

    async def _notice(self, qid: str, sub: maildrop.Submission, sender: str, rcpts, status: str, text: str,
                      to: str, now: float, postmaster: bool) -> str:
        """Queue one failure notice about rcpts to `to`; its queue id. A postmaster
        copy is headers only, a double bounce whole (core/dsn.py); both come from
        double_bounce_sender (never looped back)."""
        cfg = self.cfg
        hostname = cfg.get("myhostname")
        reports = tuple(dsn.RecipientReport(a, "failed", status, text, p.get(proto_dsn.ORCPT, ""), "", now)
                        for a, p in rcpts)
        notice = dsn.Notice(dsn.FAILURE, hostname, qid, sender, to,
                            sub.arrival, now, reports, sub.message,
                            "HDRS" if postmaster else sub.attrs.get(proto_dsn.RET, ""),
                            sub.attrs.get(proto_dsn.ENVID, ""), cfg.get_int("bounce_size_limit"),
                            postmaster_copy=postmaster)
        nqid = new_queue_id()
        ntxn = self.cleanup.open(nqid, f"{cfg.get('double_bounce_sender')}@{hostname}" if postmaster else "",
                                 [(to, {})], {"protocol": "local", "origin": "2bounce" if postmaster else "bounce"})
        try:
            ntxn.write(dsn.build(notice))
            await ntxn.commit()
        except BaseException:
            ntxn.abort()
            raise
        return nqid

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
