"""The lmtp delivery service (master.cf `lmtp unix ... lmtp`): the smtp agent in LMTP mode.

Next: delivery/smtp.py (the agent), agent.py (the request loop).
"""
from __future__ import annotations

from ..delivery.smtp import SmtpAgent
from .agent import serve_agent


async def serve(ctx) -> None:
    agent = SmtpAgent(ctx.cfg, lmtp=True)
    try:
        await serve_agent(ctx, agent)
    finally:
        await agent.close()
