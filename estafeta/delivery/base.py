"""What qmgr asks of a delivery agent, and what the agent answers.

ARCHITECTURE contract: `async def deliver(request) -> list[RecipientResult]`. Agents
read the message from the queue file (read-only) and never touch the queue: qmgr
decides from the results whether a recipient is done, deferred or bounced.
On the wire between qmgr and an agent each request and each answer is one JSON
line over the agent's unix socket (private/<service>).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"


@dataclass(slots=True)
class RecipientRequest:
    address: str
    original: str = ""
    offset: int = -1          # status byte in the queue file (qmgr's bookkeeping)
    params: dict[str, str] = field(default_factory=dict)   # dsn_notify, dsn_orcpt (proto/dsn.py)


@dataclass(slots=True)
class DeliveryRequest:
    queue_id: str
    queue_file: str
    message_offset: int
    sender: str
    arrival: float
    transport: str
    nexthop: str
    recipients: list[RecipientRequest]
    active_since: float = 0.0      # when qmgr took the message (for delays=a/b/c/d)
    attrs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = _fields(self)
        d["recipients"] = [_fields(r) for r in self.recipients]
        return json.dumps(d, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, line: bytes) -> "DeliveryRequest":
        d = json.loads(line)
        d["recipients"] = [RecipientRequest(**r) for r in d["recipients"]]
        return cls(**d)


@dataclass(slots=True)
class RecipientResult:
    address: str
    status: str               # SENT, DEFERRED or BOUNCED
    dsn: str                  # "2.0.0", "4.3.0", "5.1.1"
    reason: str               # "delivered to maildir", remote reply, ...
    relay: str = ""
    # For SENT: "" delivered here; "relayed" handed to a server without DSN (the
    # success notice says relayed); "relayed-dsn" handed on with NOTIFY to a server
    # offering DSN: notices are its job from then on (RFC 3461 5.2.2).
    action: str = ""


def results_to_json(results: list[RecipientResult]) -> bytes:
    return json.dumps([_fields(r) for r in results], separators=(",", ":")).encode() + b"\n"


def _fields(obj) -> dict:
    """A shallow dict of a slotted dataclass (asdict deep-copies: 10x slower on this path)."""
    return {k: getattr(obj, k) for k in obj.__slots__}


def results_from_json(line: bytes) -> list[RecipientResult]:
    return [RecipientResult(**r) for r in json.loads(line)]


def delivery_log_line(req: DeliveryRequest, r: RecipientResult, started: float, relay: str) -> str:
    """Postfix's delivery line: to=, relay=, delay=, delays=a/b/c/d, dsn=, status=."""
    now = time.time()
    a = max(0.0, (req.active_since or started) - req.arrival)
    b = max(0.0, started - (req.active_since or started))
    d = max(0.0, now - started)
    orig = f", orig_to=<{r_orig}>" if (r_orig := _orig(req, r.address)) else ""
    return (f"{req.queue_id}: to=<{r.address}>{orig}, relay={relay}, delay={fmt_delay(now - req.arrival)}, "
            f"delays={fmt_delay(a)}/{fmt_delay(b)}/0/{fmt_delay(d)}, dsn={r.dsn}, status={r.status} ({r.reason})")


def fmt_delay(x: float) -> str:
    """Postfix's delay style: two significant digits, no exponent, tiny values as 0."""
    if x < 0.01:
        return "0"
    if x < 10:
        return f"{x:.2g}"
    return f"{x:.0f}"


def _orig(req: DeliveryRequest, address: str) -> str:
    for rr in req.recipients:
        if rr.address == address and rr.original and rr.original != address:
            return rr.original
    return ""
