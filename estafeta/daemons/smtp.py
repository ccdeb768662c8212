"""The smtp delivery service (master.cf `smtp unix ... smtp`, also `relay`).

Cached connections are closed with QUIT when the service stops.
Next: delivery/smtp.py (the agent), agent.py (the request loop).
"""
from __future__ import annotations

from ..delivery.smtp import SmtpAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    agent = SmtpAgent(ctx.cfg)
    try:
        await serve_agent(ctx, agent)
    finally:
        await agent.close()
