"""The virtual delivery service (master.cf `virtual unix ... virtual`)."""
from __future__ import annotations

from ..delivery.virtual import VirtualAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    await serve_agent(ctx, VirtualAgent(ctx.cfg))
