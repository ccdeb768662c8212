"""qmgr takes due deferred mail in queue_sort_order (Sendmail's QUEUE_SORT_ORDER)."""
import os
import time

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.daemons.qmgr import Qmgr
from estafeta.queue import qfile
from estafeta.queue.store import QueueStore


class Ctx:
    def __init__(self, cfg, store):
        self.cfg, self.store = cfg, store


def make(tmp_path, order):
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}/q\nqueue_sort_order = {order}\n"
                           "mydestination = localhost\nlocal_recipient_maps =\n", "main.cf")
    return store, cfg


def put(store, qid, rcpt, size, due):
    env = qfile.encode_envelope(time.time() - 100, "s@example.org", [(rcpt, {})], {})
    p = store.path("deferred", qid)
    with open(p, "wb") as f:
        f.write(env + b"x" * size)
    os.utime(p, (due, due))


@pytest.mark.parametrize("order, want", [
    ("priority", ["B", "C", "A"]),      # smallest first
    ("host", ["C", "A", "B"]),          # a.example, m.example, z.example
    ("filename", ["A", "B", "C"]),
    ("modification", ["C", "A", "B"]),  # earliest next-attempt time first
])
def test_scan_deferred_takes_due_mail_in_order(tmp_path, order, want):
    store, cfg = make(tmp_path, order)
    now = time.time()
    ids = {"A": "66150000000000000000A", "B": "66150000000000000000B", "C": "66150000000000000000C"}
    put(store, ids["A"], "x@m.example", 3000, now - 20)
    put(store, ids["B"], "x@z.example", 10, now - 10)
    put(store, ids["C"], "x@a.example", 500, now - 30)
    put(store, "66150000000000000000D", "x@a.example", 1, now + 3600)   # not due yet
    q = Qmgr(Ctx(cfg, store))
    taken = []
    q.take = lambda qid, src: taken.append(qid)
    q.scan_deferred(force=False)
    got = [k for qid in taken for k, v in ids.items() if v == qid]
    assert got == want, f"got {got}, want {want}"
    q.scan_deferred(force=True)
    assert "66150000000000000000D" in taken, "a forced run (sendmail -q) takes mail that is not due yet"
