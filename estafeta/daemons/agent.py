"""The server side of a delivery agent: JSON-line requests from qmgr on a unix socket.

qmgr keeps connections open and sends one request at a time on each; an agent
process serves many connections at once (asyncio), so one master.cf process can do
several deliveries in parallel (disk waits overlap in worker threads). An
unexpected exception becomes a 4.3.0 deferral for every recipient of that request
and a logged traceback: never a bounce, never lost mail (STYLE 5).
"""
from __future__ import annotations

import asyncio

from ..core import maillog
from ..delivery import base


async def serve_agent(ctx, agent) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ctx.busy += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = base.DeliveryRequest.from_json(line)
                except Exception:
                    maillog.log.exception("malformed delivery request")
                    break
                try:
                    results = await agent.deliver(req)
                except Exception:
                    maillog.log.exception(f"{req.queue_id}: unexpected error in {ctx.service}")
                    results = [base.RecipientResult(r.address, base.DEFERRED, "4.3.0", "unexpected delivery agent error")
                               for r in req.recipients]
                writer.write(base.results_to_json(results))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            ctx.busy -= 1
            writer.close()

    server = await asyncio.start_unix_server(handle, sock=ctx.listen_socket, limit=1 << 20)
    async with server:
        await ctx.stopping.wait()
