"""The error service, also run as `retry` (master.cf `error unix - - n - - error`,
`retry unix - - n - - error`): the service name decides bounce or defer.
Next: delivery/discard.py."""
from __future__ import annotations

from ..delivery.discard import ErrorAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    await serve_agent(ctx, ErrorAgent(ctx.cfg, ctx.service))
