"""showq: the queue listing and flush requests for users who cannot read the queue.

Runs as the mail owner on public/showq (a stream socket any local user may reach,
as Postfix's showq serves postqueue). One request line per connection, then the
answer and close:

    list                 mailq text (Postfix layout)
    json                 postqueue -j lines
    flush                qmgr: retry all deferred mail now (FLUSH)
    flush I|R|S SUBSTR   make matching deferred mail due, then qmgr DEFERRED

Trust boundary: the peer is any local user. It can learn envelopes (sender,
recipients, sizes, reasons: Postfix's authorized_mailq_users default "anyone")
but never message content, and can only ask for retries sooner (Postfix's
authorized_flush_users default "anyone"). The peer's uid (SO_PEERCRED) is logged.
Next: queue/listing.py (what is shown), cli/queue_admin.py (the clients).
"""
from __future__ import annotations

import asyncio
import socket
import struct

from ..core import maillog
from ..queue import listing
from .cleanup import QmgrTrigger

MAX_REQUEST = 1024


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except (OSError, AttributeError):
        return -1


def answer(store, trigger: QmgrTrigger, request: str) -> str:
    words = request.split(None, 2)
    if words == ["list"]:
        return listing.format_text(listing.collect(store))
    if words == ["json"]:
        return listing.format_json(listing.collect(store))
    if words == ["flush"]:
        trigger.send("FLUSH")
        return "ok\n"
    if len(words) == 3 and words[0] == "flush" and words[1] in ("I", "R", "S"):
        ids = listing.flush_selected(store, words[1], words[2])
        trigger.send("DEFERRED")
        return "".join(f"{i}\n" for i in ids) + "ok\n"
    return "error: bad request\n"


async def serve(ctx) -> None:
    trigger = QmgrTrigger(ctx.store)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ctx.busy += 1
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=30)
            req = line[:MAX_REQUEST].decode("utf-8", "replace").strip()
            uid = peer_uid(writer)
            if req.startswith("flush"):
                maillog.log.info(f"showq: uid={uid} requested {maillog.esc(req)}")
            text = await asyncio.to_thread(answer, ctx.store, trigger, req)
            writer.write(text.encode("utf-8", "surrogateescape"))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:
            maillog.log.exception("showq: error answering a request")
        finally:
            ctx.busy -= 1
            writer.close()

    server = await asyncio.start_unix_server(handle, sock=ctx.listen_socket)
    async with server:
        await ctx.stopping.wait()
