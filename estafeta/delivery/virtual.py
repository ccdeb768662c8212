"""virtual: delivery into Maildirs under virtual_mailbox_base (SPEC S5, Postfix virtual(8)).

The recipient is looked up in virtual_mailbox_maps as user@domain, then @domain
(catch-all). The result is a path under virtual_mailbox_base; a trailing "/" means
Maildir (mbox results are deferred until the local/mbox work lands). Each mailbox
gets Return-Path: and Delivered-To: prepended; a Delivered-To: for the same
recipient already in the message is a mail loop (5.4.6). A message file larger
than virtual_mailbox_limit (0: no limit) bounces with 5.2.2, as Postfix's
"File too large". Runs as the mail owner.
"""
from __future__ import annotations

import asyncio
import os
import time

from ..core import maillog
from ..core.errors import MailError, PermFail, TempFail
from ..tables import TableList
from . import base, maildir


class VirtualAgent:
    relay_name = "virtual"

    def __init__(self, cfg) -> None:
        self.base_dir = cfg.get("virtual_mailbox_base")
        self.maps = TableList(cfg.get("virtual_mailbox_maps"))
        self.sync = cfg.get_bool("fsync_queue")
        self.limit = cfg.get_int("virtual_mailbox_limit")

    def mailbox_for(self, address: str) -> str:
        local, _, domain = address.rpartition("@")
        path = self.maps.lookup(address) if self.maps else None
        if path is None and domain:
            path = self.maps.lookup("@" + domain) if self.maps else None
        if path is None:
            raise PermFail(f"unknown user: \"{address}\"", "5.1.1")
        if not self.base_dir:
            raise TempFail("virtual_mailbox_base is not set", "4.3.5")
        full = os.path.normpath(os.path.join(self.base_dir, path))
        if not (full + "/").startswith(os.path.normpath(self.base_dir) + "/"):
            raise TempFail(f"mailbox path {path!r} escapes virtual_mailbox_base", "4.3.5")
        if not path.endswith("/"):
            raise TempFail("mailbox file delivery is not supported yet; use a Maildir (trailing /)", "4.3.5")
        return full

    def _deliver_one(self, req: base.DeliveryRequest, address: str, message: bytes) -> base.RecipientResult:
        try:
            box = self.mailbox_for(address)
            maildir.check_loop(message[:65536], address)
            prefix = (f"Return-Path: <{req.sender}>\nDelivered-To: {address}\n").encode("utf-8", "surrogateescape")
            # Postfix: the maildir file would exceed the limit (EFBIG): 5.2.2, a bounce.
            maildir.check_size(len(prefix) + len(message), self.limit, f"cannot deliver to maildir {box}:")
            maildir.deliver_maildir(box, prefix, (message,), self.sync)
            return base.RecipientResult(address, base.SENT, "2.0.0", "delivered to maildir")
        except MailError as e:
            return base.RecipientResult(address, base.DEFERRED if e.temporary else base.BOUNCED, e.dsn, e.reason)
        except Exception as e:          # unexpected: this recipient defers, the others keep their result
            maillog.log.exception(f"{req.queue_id}: unexpected error delivering to {address}")
            return base.RecipientResult(address, base.DEFERRED, "4.3.0", f"unexpected error: {type(e).__name__}")

    def _deliver_all(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        try:
            with open(req.queue_file, "rb") as f:
                f.seek(req.message_offset)
                message = f.read()
        except OSError as e:
            return [base.RecipientResult(r.address, base.DEFERRED, "4.3.0", f"cannot read queue file: {e.strerror}")
                    for r in req.recipients]
        return [self._deliver_one(req, r.address, message) for r in req.recipients]

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        results = await asyncio.to_thread(self._deliver_all, req)
        for r in results:
            maillog.log.info(base.delivery_log_line(req, r, started, self.relay_name))
        return results
