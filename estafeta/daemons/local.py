"""The local delivery service (master.cf `local unix - n n - - local`).

The one service that keeps root (unpriv = n) when the system runs as root, so
that delivery/local.py can act as each recipient in a child process; it never
writes anything as root for a user. Next: delivery/local.py.
"""
from __future__ import annotations

from ..delivery.local import LocalAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    await serve_agent(ctx, LocalAgent(ctx.cfg, ctx.service, ctx.store))
