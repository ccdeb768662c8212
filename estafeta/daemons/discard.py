"""The discard service (master.cf `discard unix - - n - - discard`). Next: delivery/discard.py."""
from __future__ import annotations

from ..delivery.discard import DiscardAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    await serve_agent(ctx, DiscardAgent(ctx.cfg, ctx.service))
