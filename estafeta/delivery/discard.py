"""discard and error: agents that deliver nothing (Postfix discard(8), error(8)).

The next-hop field of the route is their argument, so transport_maps can say
`spam.example discard:` or `old.example error:5.1.2 domain retired`.
  * discard: every recipient "sent"; the reason is the nexthop text (or
    "discarded"), dsn 2.0.0 or 2.x.y from a leading detail code.
  * error: every recipient bounced, the nexthop text as the reason, dsn from a
    leading RFC 3463 code or 5.0.0; a 4.x.y code defers instead.
  * retry (the error agent under the service name "retry"): every recipient
    deferred, dsn 4.0.0 or the code given (its class made 4).
No message is read; the queue file is left alone as by every agent.
Next: daemons/discard.py, daemons/error.py, core/resolve.py (how the nexthop gets here).
"""
from __future__ import annotations

import re
import time

from ..core import maillog
from . import base

_DSN = re.compile(r"^([245])\.(\d{1,3}\.\d{1,3})(?:\s+|$)")


def split_dsn(text: str, default: str) -> tuple[str, str]:
    """'5.1.2 domain retired' -> ('5.1.2', 'domain retired'); no code: (default, text)."""
    m = _DSN.match(text)
    if not m:
        return default, text
    return f"{m.group(1)}.{m.group(2)}", text[m.end():]


class DiscardAgent:
    relay_name = "none"

    def __init__(self, cfg=None, service: str = "discard") -> None:
        self.service = service

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        dsn, text = split_dsn(req.nexthop, "2.0.0")
        dsn = "2" + dsn[1:]
        out = []
        for r in req.recipients:
            res = base.RecipientResult(r.address, base.SENT, dsn, text or "discarded", self.relay_name)
            maillog.log.info(base.delivery_log_line(req, res, started, self.relay_name))
            out.append(res)
        return out


class ErrorAgent:
    relay_name = "none"

    def __init__(self, cfg=None, service: str = "error") -> None:
        self.retry = service == "retry"

    def verdict(self, nexthop: str) -> tuple[str, str, str]:
        if self.retry:
            dsn, text = split_dsn(nexthop, "4.0.0")
            return base.DEFERRED, "4" + dsn[1:], text or "delivery temporarily suspended"
        dsn, text = split_dsn(nexthop, "5.0.0")
        if dsn[0] == "2":           # a success code makes no sense for a bounce
            dsn = "5" + dsn[1:]
        status = base.DEFERRED if dsn[0] == "4" else base.BOUNCED
        return status, dsn, text or "mail is not deliverable"

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        status, dsn, text = self.verdict(req.nexthop)
        out = []
        for r in req.recipients:
            res = base.RecipientResult(r.address, status, dsn, text, self.relay_name)
            maillog.log.info(base.delivery_log_line(req, res, started, self.relay_name))
            out.append(res)
        return out
