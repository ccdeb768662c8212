"""The server side of a delivery agent: JSON-line requests from qmgr on a unix socket.

qmgr keeps connections open and sends one request at a time on each; an agent
process serves many connections at once (asyncio), so one master.cf process can do
several deliveries in parallel (disk waits overlap in worker threads). An
unexpected exception becomes a 4.3.0 deferral for every recipient of that request
and a logged traceback: never a bounce, never lost mail (STYLE 5).
"""
from __future__ import annotations

import asyncio
import os
import time

from ..core import maillog
from ..delivery import base


def mark_sent(req: base.DeliveryRequest, results: list[base.RecipientResult]) -> None:
    """Mark delivered recipients done in the queue file, in place, before answering.

    As Postfix's delivery agents do: if qmgr dies before it reads our answer, the
    restarted qmgr sees these recipients done and does not deliver them again. A
    one-byte pwrite to the page cache, no fsync: it survives any process crash; after
    a power cut the worst case is one more delivery (at-least-once). Only "sent":
    a bounce stays pending until qmgr has queued its notice. Never moves files.
    """
    offsets = [rr.offset for rr, res in zip(req.recipients, results) if res.status == base.SENT and rr.offset > 0]
    if not offsets:
        return
    try:
        fd = os.open(req.queue_file, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return          # qmgr marks them itself from our answer
    try:
        for off in offsets:
            os.pwrite(fd, b"D", off)
    except OSError:
        pass
    finally:
        os.close(fd)


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
                mark_sent(req, results)
                writer.write(base.results_to_json(results))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            ctx.busy -= 1
            ctx.last_active = time.monotonic()
            writer.close()

    server = await asyncio.start_unix_server(handle, sock=ctx.listen_socket, limit=1 << 20)
    async with server:
        await ctx.stopping.wait()
