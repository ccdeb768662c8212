"""qmgr's transport limits: <transport>_destination_<kind>_limit when main.cf sets it,
else default_destination_<kind>_limit; with a recipient limit of 1 a destination is the
recipient (Postfix's meaning), so local_destination_recipient_limit = 1 with
local_destination_concurrency_limit = 2 does not hold local mail to 2 deliveries in all."""
import asyncio
import os
import socket

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.daemons.qmgr import Qmgr, Stopping
from estafeta.delivery import base
from estafeta.queue.store import QueueStore


class Ctx:
    def __init__(self, cfg, store):
        self.cfg, self.store = cfg, store
        self.stopping = asyncio.Event()


def qmgr(tmp_path, settings: str = "") -> Qmgr:
    store = QueueStore(str(tmp_path / "q"))
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}/q\n" + settings, "main.cf")
    return Qmgr(Ctx(cfg, store))


def req(transport: str, nexthop: str, *rcpts: str) -> base.DeliveryRequest:
    return base.DeliveryRequest("QID", "/nonexistent", 0, "s@example.org", 0.0, transport, nexthop,
                                [base.RecipientRequest(r) for r in rcpts])


@pytest.mark.parametrize("settings, transport, kind, want", [
    ("", "local", "recipient", 50),                # declared defaults do not count (qmgr.limit)
    ("", "local", "concurrency", 20),
    ("local_destination_recipient_limit = 1\n", "local", "recipient", 1),
    ("local_destination_concurrency_limit = $two\ntwo = 2\n", "local", "concurrency", 2),
    ("", "smtp", "recipient", 50),                 # not declared: default_destination_*
    ("", "virtual", "concurrency", 20),
    ("default_destination_recipient_limit = 7\n", "smtp", "recipient", 7),
    ("local_destination_recipient_limit = 10\n", "local", "recipient", 10),
    ("relay_destination_concurrency_limit = 3\n", "relay", "concurrency", 3),   # any master.cf name
    ("relay_destination_concurrency_limit = lots\n", "relay", "concurrency", 20),
])
def test_limit(tmp_path, settings, transport, kind, want) -> None:
    got = qmgr(tmp_path, settings).limit(transport, kind)
    assert got == want, f"got {got}, want {want}"


POSTFIX_LOCAL = "local_destination_recipient_limit = 1\nlocal_destination_concurrency_limit = 2\n"


def test_destination_is_the_recipient_when_the_recipient_limit_is_1(tmp_path) -> None:
    q = qmgr(tmp_path, POSTFIX_LOCAL)
    a, b = q.destination_key(req("local", "localhost", "Ann@localhost")), q.destination_key(req("local", "localhost", "bob@localhost"))
    assert a == ("local", "rcpt:ann@localhost") and b == ("local", "rcpt:bob@localhost"), (a, b)
    assert q.destination_key(req("local", "localhost", "ann@LOCALHOST")) == a
    # other transports, and local with a larger limit: the next hop
    assert q.destination_key(req("smtp", "example.org", "x@example.org")) == ("smtp", "example.org")
    q = qmgr(tmp_path, "local_destination_recipient_limit = 20\n")
    assert q.destination_key(req("local", "localhost", "ann@localhost")) == ("local", "localhost")


def test_local_deliveries_to_many_users_run_in_parallel(tmp_path) -> None:
    """Two at a time per user, not two in total; each user's entry goes when idle."""
    q = qmgr(tmp_path, POSTFIX_LOCAL)

    async def run() -> tuple[int, int, int]:
        now = peak = 0
        per_user: dict[str, int] = {}
        peak_user = 0

        async def one(user: str) -> None:
            nonlocal now, peak, peak_user
            async with q.destination_slot(q.destination_key(req("local", "localhost", f"{user}@localhost"))):
                now += 1
                per_user[user] = per_user.get(user, 0) + 1
                peak, peak_user = max(peak, now), max(peak_user, per_user[user])
                await asyncio.sleep(0.01)
                now -= 1
                per_user[user] -= 1

        await asyncio.gather(*(one(f"u{i % 10}") for i in range(50)))
        return peak, peak_user, len(q.dest_slots)

    peak, peak_user, left = asyncio.run(run())
    assert peak == 20, f"got {peak} deliveries at once, want 10 users x 2"
    assert peak_user == 2, f"got {peak_user} deliveries to one user at once, want 2"
    assert left == 0, f"{left} idle destination entries kept"


def test_one_message_to_many_local_users(tmp_path) -> None:
    from estafeta.queue import scheduler
    rcpts = [f"u{i}@localhost" for i in range(5)]
    q = qmgr(tmp_path)
    assert [len(b) for b in scheduler.batches(rcpts, q.limit("local", "recipient"))] == [5]
    q = qmgr(tmp_path, POSTFIX_LOCAL)
    assert [len(b) for b in scheduler.batches(rcpts, q.limit("local", "recipient"))] == [1] * 5
    assert [len(b) for b in scheduler.batches(rcpts, q.limit("smtp", "recipient"))] == [5]


def test_no_new_request_once_stopping(tmp_path):
    """At SIGTERM the master stops too: a new connection to an agent's socket would sit
    in its listen queue for ever (the teardowns that took 15 s). qmgr sends nothing and
    leaves the message in active/ for the next start."""
    q = qmgr(tmp_path)
    path = q.store.path("private", "smtp")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)                  # like the master's socket: nobody accepts

    async def go():
        q.ctx.stopping = asyncio.Event()
        q.ctx.stopping.set()
        with pytest.raises(Stopping):
            await asyncio.wait_for(q.dispatch(req("smtp", "example.org", "a@example.org")), 5)

    try:
        asyncio.run(go())
    finally:
        listener.close()
