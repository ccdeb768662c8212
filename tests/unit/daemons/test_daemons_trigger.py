"""cleanup's QmgrTrigger: no queue id is dropped when qmgr's datagram queue is full."""
from __future__ import annotations

import asyncio
import os
import socket

from estafeta.daemons.cleanup import QmgrTrigger
from estafeta.queue.store import QueueStore


def test_words_wait_while_qmgr_socket_is_full(tmp_path) -> None:
    store = QueueStore(str(tmp_path))
    store.create_dirs()
    qmgr = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    qmgr.bind(store.path("public", "qmgr"))
    qmgr.setblocking(False)
    trigger = QmgrTrigger(store)
    want = [f"ID{i:04d}" for i in range(200)]

    async def main() -> list[str]:
        for w in want:                      # one word per loop turn: one datagram each
            trigger.send(w)
            await asyncio.sleep(0)
        got: list[str] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < len(want) and asyncio.get_running_loop().time() < deadline:
            try:
                got += qmgr.recv(65536).decode().split()     # qmgr drains, slowly
            except BlockingIOError:
                await asyncio.sleep(0.005)
        return got

    got = asyncio.run(main())
    qmgr.close()
    assert sorted(got) == want, f"got {len(got)} of {len(want)} words; missing {sorted(set(want) - set(got))[:5]}"


def test_no_qmgr_is_not_an_error(tmp_path) -> None:
    store = QueueStore(str(tmp_path))
    store.create_dirs()
    trigger = QmgrTrigger(store)

    async def main() -> None:
        trigger.send("ID1")
        await asyncio.sleep(0.05)

    asyncio.run(main())                     # no socket: the word is dropped, qmgr's scan finds the file
    assert trigger.pending == [] and trigger.retry is None
    assert not os.path.exists(store.path("public", "qmgr"))
