"""Passing one recipient to another delivery agent (Postfix's deliver_pass()).

The local agent uses this for mailbox_transport(_maps) and fallback_transport(_maps):
it hands one recipient, with the message where it lies in the queue file, to the agent
of the named master.cf service on private/<transport>, and that agent's answer becomes
local's result for the recipient. The other agent delivers and logs the delivery line
(relay=...); it does not mark the queue file (the recipient's offset is -1): local's
own answer to qmgr does.

Trust boundary: the value comes from main.cf or the admin's tables; a transport name
must be a plain service name (no "/"), so it cannot point outside private/. Every
failure to talk to the agent is a 4.3.0 deferral (TempFail), never a bounce: no socket
(an unknown transport, or the service is down) is "mail transport unavailable", no or
a malformed answer "unknown mail transport error", as in Postfix.

Blocking IO with a timeout: it runs in the local agent's worker thread (deliver_sync).
Next: delivery/base.py (the wire format), daemons/agent.py (the other end).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..core import maillog
from ..core.errors import TempFail
from . import base

MAX_ANSWER = 1 << 20      # one JSON line for one recipient is far smaller
# How long the other agent may take to answer: Postfix's ipc_timeout default, the limit
# of its deliver_pass() stream (ipc_timeout itself is not used by estafeta). The agent's
# own protocol timeouts (lmtp_data_done_timeout, 600s...) come first.
PASS_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class Target:
    transport: str
    nexthop: str


def parse_target(value: str, default_nexthop: str, setting: str) -> Target:
    """"transport[:nexthop]" as in mailbox_transport; without a nexthop (or with an
    empty one) the nexthop of the request being delivered, as Postfix does."""
    transport, _, nexthop = value.strip().partition(":")
    transport = transport.strip()
    if not transport or "/" in transport or transport in (".", ".."):
        # A configuration error: defer until the admin fixes it (Postfix stops with a
        # fatal error, which defers the same way).
        raise TempFail(f"bad {setting} value {value!r}: missing or invalid transport name", "4.3.5")
    return Target(transport, nexthop.strip() or default_nexthop)


def deliver_pass(sock_path: str, req: base.DeliveryRequest, rcpt: base.RecipientRequest, target: Target,
                 timeout: float) -> base.RecipientResult:
    """Ask the agent on sock_path to deliver rcpt of req via target; its answer.

    Raises TempFail (4.3.0) when the agent cannot be reached or does not answer in time.
    """
    one = base.DeliveryRequest(req.queue_id, req.queue_file, req.message_offset, req.sender, req.arrival,
                               target.transport, target.nexthop,
                               [base.RecipientRequest(rcpt.address, rcpt.original, -1, dict(rcpt.params))],
                               req.active_since, dict(req.attrs))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # A blocking connect waits while the agent's listen queue is full (a busy agent
        # is not an absent one); SO_SNDTIMEO bounds that wait on a unix socket.
        if timeout:
            sec = int(timeout)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, int((timeout - sec) * 1e6)))
        try:
            s.connect(sock_path)
            s.settimeout(timeout or None)
        except OSError as e:
            maillog.log.warning(f"{req.queue_id}: connect to transport private/{target.transport}: "
                                f"{e.strerror or e}")
            raise TempFail("mail transport unavailable", "4.3.0") from e
        try:
            s.sendall(one.to_json())
            line = _read_line(s)
            results = base.results_from_json(line)
            if len(results) != 1 or results[0].status not in (base.SENT, base.DEFERRED, base.BOUNCED):
                raise ValueError(f"{len(results)} results for one recipient")
        except (OSError, ValueError, TypeError, KeyError) as e:
            maillog.log.warning(f"{req.queue_id}: transport private/{target.transport}: "
                                f"{getattr(e, 'strerror', None) or e or type(e).__name__}")
            raise TempFail("unknown mail transport error", "4.3.0") from e
    finally:
        s.close()
    return results[0]


def _read_line(s: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionResetError("the delivery agent closed the connection without an answer")
        buf += chunk
        if len(buf) > MAX_ANSWER:
            raise ValueError("answer too long")
    return bytes(buf)

