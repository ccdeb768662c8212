"""The pipe delivery service (master.cf `NAME unix - n n - - pipe flags=... user=... argv=...`).

Keeps root (unpriv n) only so that delivery/pipe.py can start each command as the
master.cf user=; the service's attributes arrive as ctx.args. Next: delivery/pipe.py.
"""
from __future__ import annotations

from ..delivery.pipe import PipeAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    await serve_agent(ctx, PipeAgent(ctx.cfg, ctx.service, ctx.args, ctx.store.root))
